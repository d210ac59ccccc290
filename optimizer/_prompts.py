"""Prompt pools: each role's seed prompts plus LLM-written variants, kept in the study.

Optuna forbids changing a categorical parameter's choices within a study, so the pool grows
by *generations*: generation ``n`` of a role is a fixed tuple of prompt ids, written once to
the study's user attrs (one attr per role and generation) and never changed. A trial draws a
role's prompt from the latest generation through a parameter named for that generation
(``main_prompt_g3``, ``layer_1_prompt_g3``), so every parameter name keeps one distribution
for the whole study, however many mutation rounds run.

A mutation round (every K finished trials) ranks the prompts by the mean score of the trials
that used them, reads the grader feedback and test pass rates the trials stored, and asks an
LLM mutator for ``k`` new prompts per role with four operators: rephrase, specialise (on the
weakest test), reflect (fix what the feedback of the best and the worst recent trials says
failed, the idea behind GEPA) and crossover (of two strong prompts). The new generation holds
the best existing prompts (elites) plus the new variants.

Reflect and specialise ask the mutator for short rules only (one ``- `` line each), which are
added to the parent prompt under :data:`RULES_HEADING`; rephrase and crossover ask for whole
prompts. Small coding models, asked for a whole improved prompt, mostly answer with the task's
code instead; asked for rules, they write usable ones.

A variant is an instruction, not an answer. A mutator answer cut off by max_tokens (finish
reason ``length``) is asked again once with twice the room, then rejected; of an answer that
wraps the prompt in chatter, only the marked prompt is kept, and one that still starts with
chatter ("Certainly! ...") is rejected; one that defines
a task's function (``def <function_name>(``) or is mostly code is rejected unless the space
sets ``mutation.allow_code``; one without exactly one ``{helper_response}`` or too similar to
a prompt the role already has (``difflib`` ratio at least :data:`NEAR_DUPLICATE`) is dropped.
Each rejection and its reason is stored in the study (``mutation_rejected:`` attrs).

Workers share the pool through the storage: generations and rounds are written under a
cross-process lock (see :func:`optimizer._storage.storage_lock`) and only if absent, then
read back, so two workers never clobber each other and a resumed run sees the same pool.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import json
import os
import re
import socket
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from optimizer._catalog import Catalog
from optimizer._config import HELPER_RESPONSE
from optimizer._space import MAIN
from optimizer._storage import storage_lock
from optimizer.providers import ChatRequest, Message, ProviderError, Router

__all__ = [
    "ATTR_CONFIG",
    "ATTR_FEEDBACK",
    "ATTR_MAX_SCORE",
    "ATTR_MEAN",
    "ATTR_TEST_PASS_RATES",
    "CLAIM_TTL",
    "MAX_PROMPT_CHARS",
    "MAX_RULES",
    "MUTATION_SPEND_PREFIX",
    "NEAR_DUPLICATE",
    "OPERATORS",
    "POOL_ATTR_PREFIX",
    "REJECTED_PREFIX",
    "RULES_HEADING",
    "PromptGeneration",
    "PromptPool",
    "PromptVariant",
    "clean_prompt",
    "mutation_round",
    "parse_rules",
    "prompt_problem",
    "with_rules",
]

POOL_ATTR_PREFIX = "prompt_pool"
"""Study user attrs ``prompt_pool:<role>:g<n>`` (generations), ``prompt_pool:round:<r>``."""
MUTATION_SPEND_PREFIX = "mutation_spend"
"""Study user attrs ``mutation_spend:<round>:<host>:<pid>``: tokens and cost of a worker's
mutator calls in one round (budgets count them)."""
REJECTED_PREFIX = "mutation_rejected"
"""Study user attrs ``mutation_rejected:<round>:<host>:<pid>``: the variants a worker's round
rejected, each with its role, operator, reason and the start of its text."""
NEAR_DUPLICATE = 0.9
"""A variant this similar (``difflib.SequenceMatcher`` ratio) to a prompt of its role is dropped."""
ATTR_CONFIG = "config"
"""Trial user attr: the trial's config in our dict form (``config_to_dict``)."""
ATTR_MEAN = "mean"
"""Trial user attr: mean score over repeats (the pool ranks prompts by it)."""
ATTR_MAX_SCORE = "max_score"
"""Trial user attr: points a repeat can earn (shown to the mutator with scores)."""
ATTR_FEEDBACK = "feedback"
"""Trial user attr: the graders' feedback text (read by the reflect operator)."""
ATTR_TEST_PASS_RATES = "test_pass_rates"
"""Trial user attr: ``{test name: pass rate}`` (read by the specialise operator)."""

MAX_PROMPT_CHARS = 4000
OPERATORS = ("seed", "rephrase", "specialise", "reflect", "crossover")
_PLAN = ("reflect", "specialise", "crossover", "rephrase")
CLAIM_TTL = 600.0
"""Seconds a claim on a mutation round holds when its worker cannot be checked."""
_FEEDBACK_CHARS = 2000  # per trial, in the reflect operator's request
_RULE_OPERATORS = ("reflect", "specialise")
RULES_HEADING = "Rules learned from graded answers:"
"""The heading under which reflect and specialise add their rules to the parent prompt."""
MAX_RULES = 5
"""The most rules one reflect or specialise answer adds."""
_PARAM = re.compile(r"^(?P<slot>.+)_prompt_g(?P<generation>\d+)$")
_ROUND = "round"
_CLAIM = "claim"

LockFactory = Callable[[], AbstractContextManager[None]]


@dataclass(frozen=True)
class PromptVariant:
    """One prompt of a pool.

    Attributes:
        id: Unique id, ``<role>.g<generation>.<index>``.
        text: The system prompt; holds the literal ``{helper_response}``.
        parents: Ids of the prompts it was made from (none for seeds).
        operator: How it was made: ``seed``, ``rephrase``, ``specialise``, ``reflect``,
            ``crossover``.
        generation: The generation it was first written in.
        role: The role it serves (``main``, ``layer``).
    """

    id: str
    text: str
    parents: tuple[str, ...]
    operator: str
    generation: int
    role: str

    def to_dict(self) -> dict[str, Any]:
        """Returns the JSON form stored in the study."""
        return {
            "id": self.id,
            "text": self.text,
            "parents": list(self.parents),
            "operator": self.operator,
            "generation": self.generation,
            "role": self.role,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptVariant:
        """Builds a variant from its stored JSON form."""
        return cls(
            id=str(data["id"]),
            text=str(data["text"]),
            parents=tuple(str(p) for p in data.get("parents", ())),
            operator=str(data["operator"]),
            generation=int(data["generation"]),
            role=str(data["role"]),
        )


@dataclass(frozen=True)
class PromptGeneration:
    """A fixed tuple of prompt ids a role draws from; never changes once written.

    Attributes:
        role: The role.
        number: Generation number (0 holds the seeds).
        ids: The prompt ids trials choose from, in order (elites first).
        variants: The prompts first written in this generation.
    """

    role: str
    number: int
    ids: tuple[str, ...]
    variants: tuple[PromptVariant, ...]

    def to_dict(self) -> dict[str, Any]:
        """Returns the JSON form stored in the study."""
        return {
            "role": self.role,
            "generation": self.number,
            "ids": list(self.ids),
            "variants": [v.to_dict() for v in self.variants],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptGeneration:
        """Builds a generation from its stored JSON form."""
        return cls(
            role=str(data["role"]),
            number=int(data["generation"]),
            ids=tuple(str(i) for i in data["ids"]),
            variants=tuple(PromptVariant.from_dict(v) for v in data.get("variants", ())),
        )


def _generation_key(role: str, number: int) -> str:
    return f"{POOL_ATTR_PREFIX}:{role}:g{number}"


def _round_key(number: int) -> str:
    return f"{POOL_ATTR_PREFIX}:{_ROUND}:{number}"


def _claim_key(number: int) -> str:
    return f"{POOL_ATTR_PREFIX}:{_CLAIM}:{number}"


def _claim_active(raw: Any, ttl: float) -> bool:
    """Whether a stored claim still holds: recent, and its worker alive if on this host."""
    if raw is None:
        return False
    record = json.loads(raw) if isinstance(raw, str) else raw
    if time.time() - float(record.get("time", 0.0)) >= ttl:
        return False
    host, _, pid = str(record.get("worker", "")).rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, owned by another user
            return True
    return True


class PromptPool:
    """The prompt pools of every role, kept in ``study``'s user attrs.

    Args:
        study: The study; its storage holds the pool.
        lock: Serialises the pool's check-then-write steps across processes; defaults to
            :func:`optimizer._storage.storage_lock` of the study's storage.
        claim_ttl: Seconds a worker's claim on a mutation round holds (see
            :meth:`claim_round`).
    """

    def __init__(
        self,
        study: optuna.Study,
        *,
        lock: LockFactory | None = None,
        claim_ttl: float = CLAIM_TTL,
    ) -> None:
        self.study = study
        self.claim_ttl = claim_ttl
        self._lock = lock or storage_lock(getattr(study, "_storage", None))
        self._generations: dict[str, dict[int, PromptGeneration]] = {}
        self._variants: dict[str, PromptVariant] = {}
        self._rounds: dict[int, dict[str, Any]] = {}
        self.refresh()

    # -- reading -------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-reads the pool from the study (other workers may have added generations)."""
        generations: dict[str, dict[int, PromptGeneration]] = {}
        variants: dict[str, PromptVariant] = {}
        rounds: dict[int, dict[str, Any]] = {}
        for key, value in self.study.user_attrs.items():
            parts = key.split(":")
            if len(parts) != 3 or parts[0] != POOL_ATTR_PREFIX:
                continue
            data = json.loads(value) if isinstance(value, str) else value
            if parts[1] == _ROUND:
                rounds[int(parts[2])] = dict(data)
                continue
            if parts[1] == _CLAIM:
                continue
            generation = PromptGeneration.from_dict(data)
            generations.setdefault(generation.role, {})[generation.number] = generation
            variants.update((v.id, v) for v in generation.variants)
        self._generations, self._variants, self._rounds = generations, variants, rounds

    @property
    def roles(self) -> tuple[str, ...]:
        """Roles with a pool, sorted."""
        return tuple(sorted(self._generations))

    @property
    def rounds(self) -> int:
        """Mutation rounds committed so far."""
        return len(self._rounds)

    def generations(self, role: str) -> tuple[PromptGeneration, ...]:
        """The role's generations, oldest first."""
        by_number = self._generations.get(role, {})
        return tuple(by_number[n] for n in sorted(by_number))

    def latest(self, role: str) -> PromptGeneration:
        """The role's newest generation.

        Raises:
            KeyError: The role has no pool (not seeded).
        """
        by_number = self._generations.get(role)
        if not by_number:
            raise KeyError(f"no prompt pool for role {role!r}; seed it first")
        return by_number[max(by_number)]

    def variant(self, prompt_id: str) -> PromptVariant:
        """The prompt with id ``prompt_id``."""
        return self._variants[prompt_id]

    def variants(self, role: str | None = None) -> tuple[PromptVariant, ...]:
        """Every prompt (of ``role``), in the order they were written."""
        ordered = sorted(self._variants.values(), key=lambda v: (v.generation, v.id))
        return tuple(v for v in ordered if role is None or v.role == role)

    @staticmethod
    def param_name(role: str, index: int, generation: int) -> str:
        """The trial parameter choosing a prompt of ``generation`` for agent ``index``."""
        slot = role if role == MAIN and index == 0 else f"{role}_{index}"
        return f"{slot}_prompt_g{generation}"

    def used(self, trial: FrozenTrial) -> dict[str, PromptVariant]:
        """The pool prompts ``trial`` used, by parameter name."""
        found = {}
        for name, value in trial.params.items():
            if _PARAM.match(name) and isinstance(value, str) and value in self._variants:
                found[name] = self._variants[value]
        return found

    # -- writing -------------------------------------------------------------------------

    def ensure_seeds(self, seeds: Mapping[str, Sequence[str]]) -> None:
        """Writes generation 0 of every role in ``seeds`` that has none yet.

        A role that already has a pool keeps it (a resumed study keeps its prompts). Texts
        are stripped of duplicates; each must be non-empty.

        Raises:
            ValueError: A role name holds ``:`` or a role has no non-empty prompt.
        """
        for role, texts in seeds.items():
            if ":" in role or not role or role in {_ROUND, _CLAIM}:
                raise ValueError(f"invalid prompt pool role {role!r}")
            unique = list(dict.fromkeys(t for t in texts if t.strip()))
            if not unique:
                raise ValueError(f"role {role!r}: no seed prompts")
            if role in self._generations:
                continue
            variants = tuple(
                PromptVariant(f"{role}.g0.{i}", text, (), "seed", 0, role)
                for i, text in enumerate(unique)
            )
            self.publish(PromptGeneration(role, 0, tuple(v.id for v in variants), variants))

    def publish(self, generation: PromptGeneration) -> PromptGeneration:
        """Writes ``generation`` unless that role and number exist; returns the stored one."""
        key = _generation_key(generation.role, generation.number)
        with self._lock():
            if key not in self.study.user_attrs:
                self.study.set_user_attr(key, json.dumps(generation.to_dict()))
        self.refresh()
        return self._generations[generation.role][generation.number]

    def claim_round(self, number: int, ttl: float = CLAIM_TTL) -> bool:
        """Claims round ``number`` so other workers skip it while this one calls the mutator.

        Returns:
            False if the round is committed, or claimed by a live worker less than ``ttl``
            seconds ago. A claim whose worker ran on this host and is gone is void at once;
            one from another host that died holding it expires after ``ttl``.
        """
        with self._lock():
            attrs = self.study.user_attrs
            if _round_key(number) in attrs:
                return False
            if _claim_active(attrs.get(_claim_key(number)), ttl):
                return False
            record = {"time": time.time(), "worker": f"{socket.gethostname()}:{os.getpid()}"}
            self.study.set_user_attr(_claim_key(number), json.dumps(record))
        return True

    def release_claim(self, number: int) -> None:
        """Gives up a claim on round ``number`` (its worker stopped before committing)."""
        with self._lock():
            if _round_key(number) not in self.study.user_attrs:
                record = {"time": 0.0, "worker": "released"}
                self.study.set_user_attr(_claim_key(number), json.dumps(record))

    def commit_round(
        self, number: int, generations: Sequence[PromptGeneration], info: Mapping[str, Any]
    ) -> bool:
        """Writes round ``number`` and its generations, unless another worker already did.

        Returns:
            Whether this call wrote the round (False: another worker's round stands).
        """
        with self._lock():
            attrs = self.study.user_attrs
            taken = _round_key(number) in attrs or any(
                _generation_key(g.role, g.number) in attrs for g in generations
            )
            if not taken:
                for generation in generations:
                    key = _generation_key(generation.role, generation.number)
                    self.study.set_user_attr(key, json.dumps(generation.to_dict()))
                record = {**info, "generations": {g.role: g.number for g in generations}}
                self.study.set_user_attr(_round_key(number), json.dumps(record))
        self.refresh()
        return not taken

    # -- trials --------------------------------------------------------------------------

    def suggest_variant(self, trial: optuna.Trial, role: str, index: int = 0) -> PromptVariant:
        """Draws agent ``index``'s prompt of ``role`` from the latest generation.

        An enqueued trial that fixes an older generation's parameter for this agent (a
        baseline) gets that generation instead.
        """
        self.refresh()
        generation = self.latest(role)
        fixed = getattr(trial, "_fixed_params", None) or {}
        for number in sorted(self._generations.get(role, {}), reverse=True):
            if self.param_name(role, index, number) in fixed:
                generation = self._generations[role][number]
                break
        name = self.param_name(role, index, generation.number)
        chosen = trial.suggest_categorical(name, list(generation.ids))
        return self._variants[str(chosen)]

    def suggest(self, trial: optuna.Trial, role: str, index: int = 0) -> str:
        """Like :meth:`suggest_variant`, returning the prompt text (``PromptChooser``)."""
        return self.suggest_variant(trial, role, index).text

    def params_for(self, role: str, index: int, text: str) -> dict[str, Any]:
        """Trial params that select ``text`` for agent ``index`` of ``role`` (to enqueue).

        Uses the newest generation holding ``text``; a text the pool lacks selects the
        first prompt of the latest generation.
        """
        self.refresh()
        for generation in reversed(self.generations(role)):
            for prompt_id in generation.ids:
                if self._variants[prompt_id].text == text:
                    return {self.param_name(role, index, generation.number): prompt_id}
        latest = self.latest(role)
        return {self.param_name(role, index, latest.number): latest.ids[0]}

    def mutation_due(self, every: int) -> bool:
        """Whether a mutation round is due (one per ``every`` completed trials) and free.

        A round that another live worker has claimed is not due here: that worker runs it.
        """
        if every <= 0:
            return False
        self.refresh()
        completed = len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if completed // every <= self.rounds:
            return False
        claim = self.study.user_attrs.get(_claim_key(self.rounds + 1))
        return not _claim_active(claim, self.claim_ttl)


_MARKER = re.compile(r"^[ \t]*<{2,3}[ \t]*$", flags=re.MULTILINE)
_END_MARKER = re.compile(r"^[ \t]*>{2,3}[ \t]*$", flags=re.MULTILINE)
_LABEL = re.compile(
    r"^[ \t#*]*(?:new|improved|updated|combined|rewritten)?[ \t]*prompt[ \t]*(?:\*\*)?:"
    r"[ \t*]*\n",
    flags=re.IGNORECASE | re.MULTILINE,
)
_CHATTER = re.compile(
    r"^\W*(certainly|sure|of course|absolutely|here(?:'s| is| are)|below is)\b",
    flags=re.IGNORECASE,
)


def _marked(text: str) -> str:
    """The prompt inside the answer's last ``<<<`` block or after its last ``PROMPT:`` label.

    Small mutators often wrap the prompt in chatter ("Certainly! Here's the updated prompt:")
    and keep the markers of the quoted prompt, sometimes without the closing one.
    """
    opened = list(_MARKER.finditer(text))
    if opened:
        inner = text[opened[-1].end() :]
        closed = _END_MARKER.search(inner)
        return inner[: closed.start()] if closed else inner
    labels = list(_LABEL.finditer(text))
    return text[labels[-1].end() :] if labels else text


def clean_prompt(text: str, max_chars: int = MAX_PROMPT_CHARS) -> str | None:
    """Tidies a mutator's answer into a prompt, or returns None if nothing usable is left.

    Strips reasoning blocks, chatter around a marked prompt, code fences, quotes and markers;
    keeps the literal ``{helper_response}`` (appended if missing) and caps the length at
    ``max_chars``.
    """
    text = re.sub(r"<think>.*?</think>", "", text, flags=re.DOTALL).strip()
    text = _marked(text).strip()
    fence = re.fullmatch(r"```[\w-]*\n(.*?)\n?```", text, flags=re.DOTALL)
    if fence:
        text = fence.group(1).strip()
    text = text.removeprefix("<<<").removesuffix(">>>").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    for label in ("NEW PROMPT:", "New prompt:", "PROMPT:", "Prompt:"):
        text = text.removeprefix(label).strip()
    if not text.replace(HELPER_RESPONSE, "").strip():
        return None
    if len(text) > max_chars:
        text = text[:max_chars]
    if HELPER_RESPONSE not in text:
        room = max_chars - len(HELPER_RESPONSE) - 2
        head = text[:room]
        brace = head.rfind("{")
        if brace != -1 and "}" not in head[brace:]:  # a cut placeholder or other brace
            head = head[:brace]
        text = head.rstrip() + "\n\n" + HELPER_RESPONSE
    return text


_CODE_LINE = re.compile(
    r"^\s*(def |class |import |from \S+ import |return\b|for .+ in .+:|while .+:|if .+:|"
    r"elif .+:|else:|try:|except\b|with .+:|@\w|[A-Za-z_][\w.\[\]'\"]*\s*[-+*/]?=[^=])"
    r"|[{};]\s*$"
)


def prompt_problem(
    text: str, function_names: Sequence[str] = (), *, allow_code: bool = False
) -> str | None:
    """Why a cleaned mutator answer is not a usable prompt, or None if it is.

    Args:
        text: The cleaned prompt.
        function_names: The target functions of the task's problems (a suite has many).
        allow_code: Accept prompts that define it or are mostly code.
    """
    count = text.count(HELPER_RESPONSE)
    if count != 1:
        return f"holds {HELPER_RESPONSE} {count} times (expected once)"
    if _CHATTER.match(text):
        return "a reply to the mutator (it starts with chatter), not an instruction"
    lowered = text.lower()
    if any(part in lowered for part in _instruction_parts()):
        return "repeats the mutator's own instructions, not an instruction for the task"
    if allow_code:
        return None
    for name in function_names:
        if re.search(rf"\bdef\s+{re.escape(name)}\s*\(", text):
            return f"defines the task's function {name!r} (an answer, not an instruction)"
    lines = [line for line in text.replace(HELPER_RESPONSE, "").splitlines() if line.strip()]
    fenced, code = False, 0
    for line in lines:
        if line.strip().startswith("```"):
            fenced = not fenced
            code += 1
        elif fenced or _CODE_LINE.search(line):
            code += 1
    if lines and code / len(lines) > 0.5:
        return f"mostly code ({code} of {len(lines)} lines)"
    return None


_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d{1,2}[.)])\s+(?P<rule>.+?)\s*$")


def parse_rules(answer: str, existing: str = "") -> list[str]:
    """The rules of a mutator's answer: its bulleted or numbered prose lines.

    Code lines, lines naming a ``def``, rules of under 10 characters and rules already in
    ``existing`` (the parent prompt) are left out; at most :data:`MAX_RULES` are kept.
    """
    answer = re.sub(r"<think>.*?</think>", "", answer, flags=re.DOTALL)
    answer = re.sub(r"```.*?(```|$)", "", answer, flags=re.DOTALL)  # code blocks
    rules: list[str] = []
    for line in answer.splitlines():
        match = _BULLET.match(line)
        if match is None:
            continue
        rule = match.group("rule").replace("**", "")
        for _ in range(2):  # small models nest bullets and quote them: "- '- Rule.'"
            rule = re.sub(r"^(?:[-*\u2022]\s+)+", "", rule.strip().strip("'\"`").strip())
        if (
            len(rule) < 10
            or HELPER_RESPONSE in rule
            or re.search(r"\bdef\s+\w+\s*\(", rule)
            or _CODE_LINE.search(rule)
            or rule in existing
            or rule in rules
        ):
            continue
        rules.append(rule)
    return rules[:MAX_RULES]


def with_rules(parent: str, rules: Sequence[str]) -> str:
    """The parent prompt with ``rules`` added to its rules, just before ``{helper_response}``."""
    head, placeholder, tail = parent.partition(HELPER_RESPONSE)
    lines = "\n".join(f"- {rule}" for rule in rules)
    if RULES_HEADING in head:
        head = head.rstrip() + "\n" + lines + "\n\n"
    else:
        head = head.rstrip() + "\n\n" + RULES_HEADING + "\n" + lines + "\n\n"
    return head + placeholder + tail


@functools.cache
def _instruction_parts() -> tuple[str, ...]:
    """The mutator's instructions cut at full stops and colons (lower case, 30+ characters)."""
    parts = re.split(r"[.:]\s+", f"{_SYSTEM} {_RULES_SYSTEM}".lower())
    return tuple(p.strip(" .") for p in parts if len(p.strip(" .")) >= 30 and "{limit}" not in p)


def _near_duplicate(text: str, others: Sequence[PromptVariant]) -> str | None:
    for other in others:
        ratio = difflib.SequenceMatcher(None, text, other.text).ratio()
        if ratio >= NEAR_DUPLICATE:
            return f"near-duplicate of {other.id} (similarity {ratio:.2f})"
    return None


_ROLE_WORDS = {
    MAIN: "the main agent, which writes the final answer after reading the other agents' answers",
    "layer": "a layer agent: one of several assistants that answer in parallel; their answers "
    "are passed on to the next layer and to the main agent",
}

_SYSTEM = (
    "You improve system prompts for an assistant in a Mixture-of-Agents system. "
    "Reply with the new system prompt only: no preamble, no explanation, no quotes, no code "
    "fences. The prompt must contain the literal placeholder {helper_response} exactly once, "
    "where the earlier agents' answers are inserted. Keep it under {limit} characters. "
    "Do not solve the task and do not write its code: write instructions that help another "
    "assistant solve it."
)
_RULES_SYSTEM = (
    "You review graded answers and write rules for the assistant that writes them. Reply "
    "with the rules only, one per line, each line starting with '- '. A rule is one short "
    "sentence of plain English that names the concrete case (an input, a value, a key) and "
    "says what to do. Do not solve the task and do not write code."
)
_RULES_ASK = (
    "Write {count} rules that would have prevented these failures. Each rule: one line "
    "starting with '- ', plain English, no code."
)


@dataclass(frozen=True)
class _TrialInfo:
    number: int
    score: float
    feedback: str
    pass_rates: dict[str, float]
    used: dict[str, PromptVariant]


def _score(trial: FrozenTrial) -> float | None:
    pooled = trial.user_attrs.get("pooled")  # the config's mean over every run, if known
    if isinstance(pooled, dict) and isinstance(pooled.get("mean"), int | float):
        return float(pooled["mean"])
    mean = trial.user_attrs.get(ATTR_MEAN)
    if isinstance(mean, int | float) and not isinstance(mean, bool):
        return float(mean)
    if trial.values:
        return float(trial.values[0])
    return None


def _trial_infos(study: optuna.Study, pool: PromptPool) -> list[_TrialInfo]:
    infos = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        score = _score(trial)
        if score is None:
            continue
        rates = trial.user_attrs.get(ATTR_TEST_PASS_RATES) or {}
        if isinstance(rates, str):
            rates = json.loads(rates)
        feedback = trial.user_attrs.get(ATTR_FEEDBACK) or ""
        infos.append(
            _TrialInfo(
                number=trial.number,
                score=score,
                feedback=str(feedback),
                pass_rates={str(k): float(v) for k, v in dict(rates).items()},
                used=pool.used(trial),
            )
        )
    return infos


def _quote(text: str, limit: int = MAX_PROMPT_CHARS) -> str:
    return "<<<\n" + text[:limit] + "\n>>>"


def _instruction(
    operator: str,
    parents: Sequence[PromptVariant],
    *,
    best: _TrialInfo | None,
    worst: _TrialInfo | None,
    weak: tuple[str, float] | None,
    max_score: str,
) -> str:
    parent = parents[0]
    if operator == "rephrase":
        return (
            "Rewrite this system prompt with different wording and structure, keeping its "
            "intent; make it clearer and more precise.\n\nPROMPT:\n" + _quote(parent.text)
        )
    if operator == "specialise":
        assert weak is not None
        name, rate = weak
        failures = [
            line.strip()
            for info in (worst, best)
            if info is not None
            for line in info.feedback.splitlines()
            if name in line
        ]
        shown = "".join(f"\n{line[:400]}" for line in dict.fromkeys(failures))
        return (
            f"Answers often fail the test {name!r} (passed {rate:.0%} of the time)."
            + (f" What the grader reported:{shown}" if shown else "")
            + "\n\n"
            + _RULES_ASK.replace("{count}", "1 to 3")
        )
    if operator == "reflect":
        parts = ["Here is the graders' feedback on recent answers."]
        if best is not None:
            parts.append(
                f"BEST recent trial (score {best.score:g}{max_score}):\n"
                + (best.feedback.strip()[:_FEEDBACK_CHARS] or "(no failures reported)")
            )
        if worst is not None and (best is None or worst.number != best.number):
            parts.append(
                f"WORST recent trial (score {worst.score:g}{max_score}):\n"
                + (worst.feedback.strip()[:_FEEDBACK_CHARS] or "(no failures reported)")
            )
        parts.append(_RULES_ASK.replace("{count}", "2 to 5"))
        return "\n\n".join(parts)
    if operator == "crossover":
        return (
            "Combine the strengths of these two system prompts into one prompt that keeps "
            "every useful instruction of both.\n\nPROMPT A:\n"
            + _quote(parents[0].text)
            + "\n\nPROMPT B:\n"
            + _quote(parents[1].text)
        )
    raise ValueError(f"unknown mutation operator {operator!r}")


async def mutation_round(
    study: optuna.Study,
    pool: PromptPool,
    router: Router,
    mutator_model: str,
    k: int,
    *,
    elite: int = 2,
    recent: int = 20,
    task: str | None = None,
    problems: int = 1,
    temperature: float = 0.9,
    max_tokens: int = 1024,
    max_chars: int = MAX_PROMPT_CHARS,
    claim_ttl: float | None = None,
    catalog: Catalog | None = None,
    function_names: Sequence[str] = (),
    allow_code: bool = False,
    seed: int = 0,
) -> list[PromptGeneration]:
    """Builds the next generation of every role that completed trials have used.

    Prompts are ranked by the mean of :data:`ATTR_MEAN` over the completed trials that used
    them. Each role's new generation holds its ``elite`` best prompts plus up to ``k`` new
    ones; operators go round reflect, specialise, crossover, rephrase, falling back to
    rephrase when a trial attr they need is missing. Mutator calls that fail or return
    nothing usable are skipped. If another worker commits this round first, its round
    stands and nothing is written; while a worker runs a round, others skip it (a claim
    in the study, see :meth:`PromptPool.claim_round`).

    Args:
        study: The study (trials carry the attrs named by the ``ATTR_*`` constants).
        pool: The study's prompt pool.
        router: Serves the mutator model.
        mutator_model: Model id of the mutator.
        k: New prompts per role.
        elite: Best existing prompts carried into the new generation.
        recent: How many of the latest completed trials the reflect and specialise
            operators read.
        task: The task prompt, shown to the mutator for context.
        problems: How many problems the search evaluates (a suite's dev problems); with
            several, ``task`` is shown as one example of them.
        temperature: The mutator's temperature.
        max_tokens: The mutator's max_tokens.
        max_chars: Longest prompt kept.
        claim_ttl: Seconds another worker's claim on this round keeps this call out
            (default: the pool's).
        catalog: Prices for the cost of the mutator's calls, which go with their tokens
            into a ``mutation_spend:`` study attr (default: :meth:`Catalog.load`).
        function_names: The target functions of the problems searched: a variant defining
            one of them is rejected.
        allow_code: Keep variants that define it or are mostly code.
        seed: Base of the mutator's sampling seeds (the study's call seed, so studies with
            different seeds also write different prompts); call ``i`` of round ``r`` uses
            ``seed + 1000 * r + i``.

    Returns:
        The generations this call committed (empty if there was nothing to do or another
        worker committed the round).
    """
    pool.refresh()
    round_number = pool.rounds + 1
    if not pool.claim_round(round_number, pool.claim_ttl if claim_ttl is None else claim_ttl):
        return []
    prices = catalog if catalog is not None else Catalog.load()
    spent = {"tokens": 0, "cost": 0.0}
    rejected: list[dict[str, str]] = []

    def reject(role: str, operator: str, reason: str, text: str) -> None:
        rejected.append({"role": role, "operator": operator, "reason": reason, "text": text[:300]})

    try:
        infos = _trial_infos(study, pool)
        latest_infos = sorted(infos, key=lambda i: i.number)[-recent:]
        max_scores = [
            t.user_attrs.get(ATTR_MAX_SCORE)
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ]
        known_max = next((m for m in max_scores if isinstance(m, int | float)), None)
        max_score = f"/{known_max:g}" if known_max is not None else ""
        provider, model = router.resolve(mutator_model)
        system = _SYSTEM.replace("{limit}", str(max_chars))

        async def ask(
            role: str,
            operator: str,
            index: int,
            parents: Sequence[PromptVariant],
            best: _TrialInfo | None,
            worst: _TrialInfo | None,
            weak: tuple[str, float] | None,
        ) -> tuple[str, Sequence[PromptVariant]] | None:
            rules_for = operator in _RULE_OPERATORS
            what = "rules are" if rules_for else "prompt is"
            context = f"The {what} for {_ROLE_WORDS.get(role, f'the {role} agent')}."
            if task and problems > 1:
                context += (
                    f"\n\nOne of the {problems} problems the assistants answer (what you write "
                    "must help with all of them, not only this one):\n" + _quote(task, 3000)
                )
            elif task:
                context += "\n\nThe task the assistants answer:\n" + _quote(task, 3000)
            instruction = _instruction(
                operator, parents, best=best, worst=worst, weak=weak, max_score=max_score
            )
            request = ChatRequest(
                model=model,
                messages=(
                    Message("system", _RULES_SYSTEM if rules_for else system),
                    Message("user", context + "\n\n" + instruction),
                ),
                temperature=temperature,
                max_tokens=max_tokens,
                seed=seed + round_number * 1000 + index,
                sample=seed + round_number * 1000 + index,
            )
            completion = None
            for attempt in (request, replace(request, max_tokens=2 * max_tokens)):
                try:
                    completion = await provider.complete(attempt)
                except ProviderError:
                    return None
                spent["tokens"] += completion.prompt_tokens + completion.completion_tokens
                spent["cost"] += prices.cost(  # priced by the id the space names, as trials are
                    mutator_model, completion.prompt_tokens, completion.completion_tokens
                )
                if completion.finish_reason != "length":
                    break
            assert completion is not None
            if completion.finish_reason == "length":
                reason = f"cut off by max_tokens ({max_tokens}, then {2 * max_tokens})"
                reject(role, operator, reason, completion.text)
                return None
            if rules_for:
                rules = parse_rules(completion.text, parents[0].text)
                if not rules:
                    reject(role, operator, "no rules (no '- ' line of prose)", completion.text)
                    return None
                text = with_rules(parents[0].text, rules)
                if len(text) > max_chars:
                    reject(role, operator, f"over {max_chars} characters with its rules", text)
                    return None
            else:
                cleaned = clean_prompt(completion.text, max_chars)
                if cleaned is None:
                    reject(role, operator, "empty", completion.text)
                    return None
                text = cleaned
            problem = prompt_problem(text, function_names, allow_code=allow_code)
            if problem is not None:
                reject(role, operator, problem, text)
                return None
            return text, parents

        generations: list[PromptGeneration] = []
        for role in pool.roles:
            role_infos = [i for i in infos if any(v.role == role for v in i.used.values())]
            if not role_infos:
                continue
            scores: dict[str, list[float]] = {}
            for info in role_infos:
                for prompt in {v.id: v for v in info.used.values() if v.role == role}.values():
                    scores.setdefault(prompt.id, []).append(info.score)
            ranked = sorted(
                scores, key=lambda i: (-statistics.fmean(scores[i]), -len(scores[i]), i)
            )
            strong = [pool.variant(i) for i in ranked[:2]]
            role_numbers = {i.number for i in role_infos}
            recent_role = [i for i in latest_infos if i.number in role_numbers] or role_infos
            best = max(recent_role, key=lambda i: (i.score, i.number))
            worst = min(recent_role, key=lambda i: (i.score, -i.number))
            has_feedback = bool(best.feedback.strip() or worst.feedback.strip())
            rates: dict[str, list[float]] = {}
            for info in recent_role:
                for name, rate in info.pass_rates.items():
                    rates.setdefault(name, []).append(rate)
            weakest = min(
                rates.items(), key=lambda kv: (statistics.fmean(kv[1]), kv[0]), default=None
            )
            weak = (weakest[0], statistics.fmean(weakest[1])) if weakest else None
            if weak is not None and weak[1] >= 1.0:
                weak = None
            jobs = []
            for index in range(k):
                operator = _PLAN[index % len(_PLAN)]
                if (
                    (operator == "reflect" and not has_feedback)
                    or (operator == "specialise" and weak is None)
                    or (operator == "crossover" and len(strong) < 2)
                ):
                    operator = "rephrase"
                parents = strong if operator == "crossover" else [strong[index % len(strong)]]
                jobs.append((operator, index, parents))
            answers = await asyncio.gather(
                *(ask(role, op, i, parents, best, worst, weak) for op, i, parents in jobs)
            )
            number = pool.latest(role).number + 1
            existing = list(pool.variants(role))
            new: list[PromptVariant] = []
            for (operator, _, _), answer in zip(jobs, answers, strict=True):
                if answer is None:
                    continue
                text, sources = answer
                others = [*existing, *new]
                if operator in _RULE_OPERATORS:  # its rules are new to the parent, by parse_rules
                    parent_ids = {p.id for p in sources}
                    others = [v for v in others if v.id not in parent_ids]
                duplicate = _near_duplicate(text, others)
                if duplicate is not None:
                    reject(role, operator, duplicate, text)
                    continue
                new.append(
                    PromptVariant(
                        id=f"{role}.g{number}.{len(new)}",
                        text=text,
                        parents=tuple(p.id for p in sources),
                        operator=operator,
                        generation=number,
                        role=role,
                    )
                )
            if not new:
                continue
            elites = ranked[:elite]
            ids = tuple(dict.fromkeys([*elites, *(v.id for v in new)]))
            generations.append(PromptGeneration(role, number, ids, tuple(new)))
    except BaseException:  # cancelled or failed: let another worker take the round
        pool.release_claim(round_number)
        raise
    finally:
        worker = f"{round_number}:{socket.gethostname()}:{os.getpid()}"
        if spent["tokens"]:
            study.set_user_attr(f"{MUTATION_SPEND_PREFIX}:{worker}", spent)
        if rejected:
            study.set_user_attr(f"{REJECTED_PREFIX}:{worker}", rejected)
    # An empty round is committed too, so the schedule moves on when the mutator fails.
    record = {"completed_trials": len(infos), "mutator": mutator_model}
    committed = pool.commit_round(round_number, generations, record)
    return generations if committed else []
