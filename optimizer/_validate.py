"""Validation: a study's best config against cheap baselines, on problems the search never saw.

``validate`` runs on one part of the study's split (``test`` by default):

- ``found``: the study's best config (the confirm stage's best if it ran, else the best mean);
- ``single-call``: the found config's main model alone, a plain system prompt, temperature 0;
- ``self-consistency``: that model sampled N times at temperature 0.7, N chosen so its tokens
  per problem match the found config's, and one answer chosen by agreement (the most common
  extracted function, compared as a syntax tree, so formatting and comments do not count; ties
  go to the earliest sample); only the chosen answer is graded;
- ``workshop-default``: the study's trial 0, the workshop's config mapped onto the space; for
  a config file validated without a study, the workshop's config on the file's main model
  (:func:`workshop_on`).

pass@1 is the mean over problems of each problem's pass rate over repeats, with a 95% Wilson
score interval over problems. The paired difference found - baseline is the mean over problems
of the per-problem difference, with a 95% percentile bootstrap interval over problems (10,000
resamples, seed 0).
"""

from __future__ import annotations

import ast
import asyncio
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from graders._base import BaseGrader, Task
from graders._extract import extract_code
from optimizer._catalog import Catalog
from optimizer._config import AgentSpec, MoAConfig
from optimizer._evaluate import Evaluation, RunResult
from optimizer._moa import CallRecord, MoAResult, run_moa
from optimizer._reproduce import reproduce
from optimizer.providers import Router

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "PLAIN_PROMPT",
    "SC_TEMPERATURE",
    "ValidationRow",
    "call_tokens",
    "paired_interval",
    "per_problem",
    "self_consistency",
    "single_call_config",
    "validate_configs",
    "validation_row",
    "vote",
    "wilson_interval",
    "workshop_on",
]

PLAIN_PROMPT = "You are a helpful assistant."
"""The system prompt of the single-call and self-consistency baselines."""
SC_TEMPERATURE = 0.7
"""Sampling temperature of the self-consistency baseline."""
BOOTSTRAP_RESAMPLES = 10_000
MAX_SAMPLES = 32
"""The most samples self-consistency draws per problem."""


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for ``z`` = 1.96); (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_interval(
    differences: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """A 95% percentile bootstrap interval of the mean of paired per-problem differences."""
    if not differences:
        return 0.0, 0.0
    values = np.asarray(differences, dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    means = values[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def per_problem(evaluation: Evaluation) -> dict[str, float]:
    """Each problem's pass rate (share of the points, mean over repeats), in problem order."""
    scores: dict[str, list[float]] = {}
    for run in evaluation.runs:
        scores.setdefault(run.task.name, []).append(run.fraction)
    return {name: statistics.fmean(values) for name, values in scores.items()}


def call_tokens(call: CallRecord) -> int:
    """A call's tokens: as billed, or for a cache hit (billed 0) estimated as characters / 4."""
    if not call.cached:
        return call.prompt_tokens + call.completion_tokens
    text = sum(len(m.content) for m in call.messages) + len(call.response)
    return math.ceil(text / 4)


def run_tokens(evaluation: Evaluation) -> float:
    """Mean tokens per run (see :func:`call_tokens`)."""
    if not evaluation.runs:
        return 0.0
    return statistics.fmean(sum(call_tokens(c) for c in r.moa.calls) for r in evaluation.runs)


def single_call_config(found: MoAConfig) -> MoAConfig:
    """The found config's main model alone, with a plain system prompt, at temperature 0."""
    main = AgentSpec(
        name="main",
        model=found.main.model,
        temperature=0.0,
        system_prompt=PLAIN_PROMPT,
        max_tokens=found.main.max_tokens,
    )
    return MoAConfig(main=main, cycles=0)


def workshop_on(workshop: MoAConfig, found: MoAConfig) -> MoAConfig:
    """The workshop's config with every agent on the found config's main model and max_tokens."""

    def moved(agent: AgentSpec) -> AgentSpec:
        return replace(agent, model=found.main.model, max_tokens=found.main.max_tokens)

    return replace(
        workshop,
        main=moved(workshop.main),
        layer_agents=tuple(moved(agent) for agent in workshop.layer_agents),
    )


def _vote_key(answer: str, function_name: str | None) -> str | None:
    if function_name:
        code = extract_code(answer, function_name)
        if code is None:
            return None
        try:
            return ast.dump(ast.parse(code))
        except (SyntaxError, ValueError, RecursionError):
            return None
    text = " ".join(answer.lower().split())
    return text or None


def vote(answers: Sequence[str], function_name: str | None) -> int:
    """The index of the answer most samples agree on (earliest among ties).

    Code answers agree when their extracted function has the same syntax tree; other answers
    when they are equal up to case and white space. Answers with no code lose to any with code.
    """
    keys = [_vote_key(answer, function_name) for answer in answers]
    counts = Counter(key for key in keys if key is not None)
    if not counts:
        return 0
    top = max(counts.values())
    return next(i for i, key in enumerate(keys) if key is not None and counts[key] == top)


async def self_consistency(
    model_config: MoAConfig,
    tasks: Sequence[Task],
    router: Router,
    grader: BaseGrader,
    *,
    samples: int,
    repeats: int,
    seed: int = 0,
    catalog: Catalog | None = None,
    on_result: Callable[[RunResult], None] | None = None,
) -> Evaluation:
    """Samples ``model_config`` ``samples`` times per problem and repeat; grades the voted answer.

    Repeat ``r`` draws samples ``r * samples + j`` with seed ``seed + r``; each run records
    every sample's call, so its tokens and cost are those of all samples.
    """
    prices = catalog or Catalog.load()
    sampled = replace(model_config, main=replace(model_config.main, temperature=SC_TEMPERATURE))
    start = time.perf_counter()

    async def one(task: Task, repeat: int) -> RunResult:
        began = time.perf_counter()
        results = await asyncio.gather(
            *(
                run_moa(
                    sampled, task.prompt, router, sample=repeat * samples + j, seed=seed + repeat
                )
                for j in range(samples)
            )
        )
        chosen = vote([r.answer for r in results], task.function_name)
        calls = tuple(call for result in results for call in result.calls)
        moa = MoAResult(results[chosen].answer, calls, time.perf_counter() - began)
        grade = await asyncio.to_thread(grader.grade, moa.answer, task)
        cost = sum(prices.cost(c.model, c.prompt_tokens, c.completion_tokens) for c in calls)
        result = RunResult(task, repeat, seed + repeat, moa, grade, cost)
        if on_result is not None:
            on_result(result)
        return result

    runs = await asyncio.gather(*(one(task, r) for r in range(repeats) for task in tasks))
    return Evaluation(sampled, tuple(runs), repeats, seed, time.perf_counter() - start)


def samples_for(found_tokens: float, single_tokens: float) -> int:
    """Samples of the single call whose tokens match the found config's (1 to 32)."""
    if single_tokens <= 0:
        return 1
    return max(1, min(MAX_SAMPLES, round(found_tokens / single_tokens)))


@dataclass(frozen=True)
class ValidationRow:
    """One config's result on the split.

    Attributes:
        config: ``found``, ``single-call``, ``self-consistency`` or ``workshop-default``.
        pass_at_1: Mean over problems of the pass rate over repeats.
        ci_low: 95% Wilson interval, low end.
        ci_high: 95% Wilson interval, high end.
        tokens: Tokens per problem and repeat (cache hits estimated; see ``call_tokens``).
        cost: Estimated US dollars per problem and repeat (cache hits cost nothing).
        diff: found - this config, mean over problems (0 for ``found`` itself).
        diff_low: 95% bootstrap interval of ``diff``, low end.
        diff_high: Its high end.
        samples: Samples per problem (self-consistency), else 1.
        evaluation: The runs.
    """

    config: str
    pass_at_1: float
    ci_low: float
    ci_high: float
    tokens: float
    cost: float
    diff: float
    diff_low: float
    diff_high: float
    samples: int
    evaluation: Evaluation

    def to_dict(self, *, runs: bool = False) -> dict[str, Any]:
        """The JSON form; ``runs`` adds every run's answer and grader feedback."""
        data: dict[str, Any] = {
            "config": self.config,
            "pass_at_1": self.pass_at_1,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "tokens": self.tokens,
            "cost": self.cost,
            "diff": self.diff,
            "diff_low": self.diff_low,
            "diff_high": self.diff_high,
            "samples": self.samples,
        }
        if runs:
            data["runs"] = [
                {
                    "task": r.task.name,
                    "repeat": r.repeat,
                    "score": r.grade.score,
                    "max_score": r.grade.max_score,
                    "answer": r.moa.answer,
                    "feedback": r.grade.feedback,
                }
                for r in self.evaluation.runs
            ]
        return data


def validation_row(
    name: str, evaluation: Evaluation, found: dict[str, float], samples: int = 1
) -> ValidationRow:
    """Scores ``evaluation`` and its paired difference to the found config's per-problem rates."""
    rates = per_problem(evaluation)
    n = len(rates)
    low, high = wilson_interval(sum(rates.values()), n)
    differences = [found[name_] - rate for name_, rate in rates.items()]
    diff_low, diff_high = paired_interval(differences)
    runs = len(evaluation.runs) or 1
    return ValidationRow(
        config=name,
        pass_at_1=statistics.fmean(rates.values()) if rates else 0.0,
        ci_low=low,
        ci_high=high,
        tokens=run_tokens(evaluation),
        cost=evaluation.cost / runs,
        diff=statistics.fmean(differences) if differences else 0.0,
        diff_low=diff_low,
        diff_high=diff_high,
        samples=samples,
        evaluation=evaluation,
    )


async def validate_configs(
    found: MoAConfig,
    workshop: MoAConfig | None,
    tasks: Sequence[Task],
    router: Router,
    grader: BaseGrader,
    *,
    repeats: int,
    seed: int = 0,
    catalog: Catalog | None = None,
    on_result: Callable[[str, RunResult], None] | None = None,
    on_row: Callable[[ValidationRow], None] | None = None,
) -> list[ValidationRow]:
    """Evaluates the found config and the baselines on ``tasks``, one config after another.

    ``on_result`` gets each graded run; ``on_row`` each config's row as soon as its runs are
    done, so a validation stopped part way still leaves what it finished.
    """
    prices = catalog or Catalog.load()
    rows: list[ValidationRow] = []

    def finished(row: ValidationRow) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(row)

    async def run(name: str, config: MoAConfig) -> Evaluation:
        (done,) = await reproduce(
            [(name, config)],
            tasks,
            router,
            grader,
            repeats=repeats,
            seed=seed,
            catalog=prices,
            on_result=on_result,
        )
        return done.evaluation

    best = await run("found", found)
    rates = per_problem(best)
    finished(validation_row("found", best, rates))
    single = await run("single-call", single_call_config(found))
    finished(validation_row("single-call", single, rates))
    samples = samples_for(run_tokens(best), run_tokens(single))
    consistency = await self_consistency(
        single_call_config(found),
        tasks,
        router,
        grader,
        samples=samples,
        repeats=repeats,
        seed=seed,
        catalog=prices,
        on_result=None if on_result is None else (lambda r: on_result("self-consistency", r)),
    )
    finished(validation_row("self-consistency", consistency, rates, samples))
    if workshop is not None:
        finished(validation_row("workshop-default", await run("workshop-default", workshop), rates))
    return rows
