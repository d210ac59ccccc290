"""Helpers for the search tests: a real subprocess grader and deterministic responders."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, ClassVar

from graders._base import BaseGrader, GradeResult, Task, TestResult

# Run in a separate interpreter, like a real grader: reads the answer on stdin, prints which
# keywords it holds.
_CHECK = """
import json, sys
answer = sys.stdin.read()
keywords = json.loads(sys.argv[1])
print(json.dumps({k: k in answer for k in keywords}))
"""


class KeywordGrader(BaseGrader):
    """Scores an answer by keywords (``task.params["keywords"]``: keyword -> points).

    The check runs in a subprocess, so tests exercise the thread hand-off of real graders.
    """

    name: ClassVar[str] = "keywords"

    def grade(self, response: str, task: Task) -> GradeResult:
        keywords: dict[str, float] = dict(task.params["keywords"])
        done = subprocess.run(
            [sys.executable, "-c", _CHECK, json.dumps(list(keywords))],
            input=response,
            capture_output=True,
            text=True,
            errors="backslashreplace",
            check=True,
            timeout=60,
        )
        found: dict[str, bool] = json.loads(done.stdout)
        tests = tuple(
            TestResult(
                name=f"has_{k}",
                points=points if found[k] else 0.0,
                max_points=points,
                passed=found[k],
                message="" if found[k] else f"the answer never mentions {k!r}",
            )
            for k, points in keywords.items()
        )
        feedback = "\n".join(f"{t.name}: {t.message}" for t in tests if not t.passed)
        return GradeResult(
            score=sum(t.points for t in tests),
            max_score=sum(t.max_points for t in tests),
            tests=tests,
            code=response,
            feedback=feedback,
            isolation="none",
        )


def keyword_task(name: str = "kw", **keywords: float) -> Task:
    """A task graded by :class:`KeywordGrader`; default keywords are worth 120 points."""
    points = keywords or {"alpha": 60.0, "beta": 40.0, "gamma": 20.0}
    return Task(
        name=name, prompt=f"Write about {name}.", grader="keywords", params={"keywords": points}
    )


def system_prompt(body: dict[str, Any]) -> str:
    """The system message of a chat request body."""
    return next((m["content"] for m in body["messages"] if m["role"] == "system"), "")


def asks_mutator(body: dict[str, Any]) -> bool:
    """Whether a request is the prompt mutator's (a whole prompt, or rules for one)."""
    return system_prompt(body).startswith(("You improve system prompts", "You review graded"))


def asks_rules(body: dict[str, Any]) -> bool:
    """Whether a mutator request asks for rules (reflect, specialise)."""
    return system_prompt(body).startswith("You review graded")


def seed_responder(body: dict[str, Any]) -> str:
    """Answers ``alpha`` always, ``beta`` on even seeds, ``gamma`` when the prompt says so."""
    words = ["alpha"]
    if (body.get("seed") or 0) % 2 == 0:
        words.append("beta")
    if "gamma" in system_prompt(body).lower():
        words.append("gamma")
    return f"[{body['model']}] " + " ".join(words)


_WORDS = (
    "check", "edge", "cases", "inputs", "carefully", "explain", "briefly", "verify", "types",
    "return", "values", "empty", "lists", "large", "numbers", "dates", "format", "output",
    "handle", "errors", "gracefully", "test", "each", "branch", "keep", "code", "short",
    "readable", "names", "clear", "avoid", "globals", "document", "assumptions", "sort", "keys",
)  # fmt: skip


def distinct_words(digest: str, count: int = 12) -> str:
    """Words picked by ``digest`` (hex), so two digests give dissimilar prompts."""
    value = int(digest, 16)
    words = []
    for _ in range(count):
        value, index = divmod(value * 7919 + 13, len(_WORDS))
        words.append(_WORDS[index])
    return " ".join(words)


def mutator_responder(body: dict[str, Any]) -> str:
    """A deterministic mutator: names the operator it was asked for and a digest of the ask.

    Asked for rules (reflect, specialise), it answers two ``- `` lines after a preamble;
    asked for a prompt, every third answer drops ``{helper_response}`` (the pool must append
    it back).
    """
    import hashlib

    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    digest = hashlib.sha256(f"{user}|{body.get('seed')}".encode()).hexdigest()[:8]
    operator = "rephrase"
    if "PROMPT A:" in user:
        operator = "crossover"
    elif "feedback" in user:
        operator = "reflect"
    elif "often fail the test" in user:
        operator = "specialise"
    if operator in ("reflect", "specialise"):
        return (
            f"Rules from {operator}:\n- Rule {digest}: {distinct_words(digest)}.\n"
            f"- Check {distinct_words(digest[::-1])} before answering."
        )
    text = f"Prompt {digest} written by {operator}: {distinct_words(digest)}. Be precise."
    if int(digest, 16) % 3:
        text += " Other answers: {helper_response}"
    return text


def pool_score(texts: list[str]) -> float:
    """A dummy objective over prompt texts: rewards some wording, deterministically."""
    score = 40.0
    for text in texts:
        score += 10.0 * text.count("precise") + (len(text) % 7)
    return min(score, 120.0)


async def pool_search(
    study: Any, pool: Any, router: Any, *, trials: int, every: int, k: int = 3
) -> None:
    """Runs ``trials`` dummy trials with ask/tell, with a mutation round when one is due."""
    from optimizer._prompts import mutation_round

    for _ in range(trials):
        trial = study.ask()
        used = [pool.suggest_variant(trial, "main")]
        count = trial.suggest_int("layer_agents", 1, 2)
        used += [pool.suggest_variant(trial, "layer", i) for i in range(count)]
        texts = [v.text for v in used]
        score = pool_score(texts)
        trial.set_user_attr("mean", score)
        trial.set_user_attr("max_score", 120.0)
        trial.set_user_attr("feedback", f"trial {trial.number}: check empty input")
        trial.set_user_attr("test_pass_rates", {"empty_input": 0.25, "basic": 1.0})
        trial.set_user_attr("prompt_texts", {v.id: v.text for v in used})
        study.tell(trial, score)
        if pool.mutation_due(every):
            await mutation_round(study, pool, router, "mutator-model", k)


SEEDS = {
    "main": [
        "You are the main agent. {helper_response}",
        "Answer the task well. {helper_response}",
    ],
    "layer": ["Help with the task. {helper_response}"],
}


def pool_worker(journal: str, study_name: str, base_url: str, trials: int, every: int) -> None:
    """Entry point for worker processes sharing one journal storage."""
    import asyncio

    import optuna

    from optimizer._prompts import PromptPool
    from optimizer._storage import open_storage
    from optimizer.providers import Router

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(study_name, journal)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(multivariate=True, group=True, n_startup_trials=4),
    )
    pool = PromptPool(study)
    pool.ensure_seeds(SEEDS)

    async def main() -> None:
        router = Router(base_url=base_url)
        try:
            await pool_search(study, pool, router, trials=trials, every=every)
        finally:
            await router.aclose()

    asyncio.run(main())
