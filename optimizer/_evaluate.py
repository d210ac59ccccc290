"""Evaluates one config: every task instance, several repeats, every answer graded."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graders._base import BaseGrader, GradeResult, Task
from optimizer._catalog import Catalog
from optimizer._config import MoAConfig, config_to_dict
from optimizer._moa import MoAResult, run_moa
from optimizer.providers import Router

__all__ = [
    "FEEDBACK_LIMIT",
    "Evaluation",
    "GradingError",
    "RunResult",
    "evaluate",
    "redact_secrets",
    "write_transcript",
]

FEEDBACK_LIMIT = 4000
"""Characters of grader feedback kept in :attr:`Evaluation.feedback`."""
GRADING_THREADS = 32
"""Gradings at once in a process. They have threads of their own: a grading mostly waits for
its sandbox processes (30-300 ms), and in asyncio's default pool of ``cores + 4`` threads the
storage writes and racing reads of every trial queued behind them (BENCHMARKS.md)."""


@functools.cache
def _grading_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(GRADING_THREADS, thread_name_prefix="grading")


class GradingError(Exception):
    """The grader raised instead of grading an answer (a bug in it, or a broken sandbox).

    Args:
        message: What failed, for the user.
        cause: The type of the exception the grader raised.
    """

    def __init__(self, message: str, *, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


@dataclass(frozen=True)
class RunResult:
    """One run of a config on one task instance, and its grade.

    Attributes:
        task: The task instance.
        repeat: Repeat index; also the sample index passed to the providers.
        seed: Sampling seed used (the evaluation's seed plus ``repeat``).
        moa: The MoA run (answer and every call).
        grade: The grader's verdict on the answer.
        cost: Estimated US dollars of the run's calls (cache hits cost nothing).
    """

    task: Task
    repeat: int
    seed: int
    moa: MoAResult
    grade: GradeResult
    cost: float

    @property
    def score(self) -> float:
        """Points earned."""
        return self.grade.score

    @property
    def fraction(self) -> float:
        """Points earned as a fraction of the points available (0 if none were)."""
        return self.grade.score / self.grade.max_score if self.grade.max_score else 0.0

    @property
    def perfect(self) -> bool:
        """Whether the answer earned every point available."""
        return self.grade.max_score > 0 and self.grade.score >= self.grade.max_score


@dataclass(frozen=True)
class Evaluation:
    """A config evaluated ``repeats`` times on every task instance.

    Scores are per repeat: the mean over instances of each instance's points, normalised to
    :attr:`max_score` (the mean of the instances' maxima). When every instance has the same
    maximum, as the challenge does (120), a score is plain points.

    Attributes:
        config: The config evaluated.
        runs: Every run, ordered by repeat, then task instance.
        repeats: Repeats per instance.
        seed: Base seed; repeat ``r`` used ``seed + r``.
        wall_time: Seconds the whole evaluation took.
    """

    config: MoAConfig
    runs: tuple[RunResult, ...]
    repeats: int
    seed: int
    wall_time: float

    @property
    def tasks(self) -> tuple[str, ...]:
        """Names of the task instances, in order."""
        return tuple(dict.fromkeys(r.task.name for r in self.runs))

    @property
    def max_score(self) -> float:
        """Points a repeat can earn (mean of the instances' maxima)."""
        per_task = {r.task.name: r.grade.max_score for r in self.runs}
        return statistics.fmean(per_task.values()) if per_task else 0.0

    @property
    def repeat_indices(self) -> tuple[int, ...]:
        """The repeat indices that ran, ascending."""
        return tuple(sorted({r.repeat for r in self.runs}))

    @property
    def scores(self) -> tuple[float, ...]:
        """One score per repeat (in the order of :attr:`repeat_indices`), on the
        :attr:`max_score` scale."""
        scale = self.max_score
        return tuple(
            statistics.fmean(r.fraction for r in self.runs if r.repeat == repeat) * scale
            for repeat in self.repeat_indices
        )

    @property
    def mean(self) -> float:
        """Mean score over repeats."""
        return statistics.fmean(self.scores) if self.runs else 0.0

    @property
    def std(self) -> float:
        """Sample standard deviation of the scores (0 with fewer than two repeats)."""
        scores = self.scores
        return statistics.stdev(scores) if len(scores) > 1 else 0.0

    @property
    def min(self) -> float:
        """Lowest score."""
        return min(self.scores, default=0.0)

    @property
    def max(self) -> float:
        """Highest score."""
        return max(self.scores, default=0.0)

    @property
    def max_rate(self) -> float:
        """Share of answers (instances x repeats) that earned every point."""
        return sum(r.perfect for r in self.runs) / len(self.runs) if self.runs else 0.0

    @property
    def test_pass_rates(self) -> dict[str, float]:
        """For each test name, the share of graded answers that passed it."""
        passed: dict[str, int] = {}
        seen: dict[str, int] = {}
        for run in self.runs:
            for test in run.grade.tests:
                seen[test.name] = seen.get(test.name, 0) + 1
                passed[test.name] = passed.get(test.name, 0) + test.passed
        return {name: passed[name] / count for name, count in seen.items()}

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens billed over all runs (cache hits count 0)."""
        return sum(r.moa.prompt_tokens for r in self.runs)

    @property
    def completion_tokens(self) -> int:
        """Completion tokens billed over all runs (cache hits count 0)."""
        return sum(r.moa.completion_tokens for r in self.runs)

    @property
    def calls(self) -> int:
        """Model calls over all runs, cache hits included."""
        return sum(len(r.moa.calls) for r in self.runs)

    @property
    def cache_hits(self) -> int:
        """Calls answered from the response cache."""
        return sum(r.moa.cache_hits for r in self.runs)

    @property
    def cost(self) -> float:
        """Estimated US dollars over all runs."""
        return sum(r.cost for r in self.runs)

    @property
    def feedback(self) -> str:
        """The graders' distinct feedback texts, worst answers first, capped in length."""
        texts: dict[str, None] = {}
        for run in sorted(self.runs, key=lambda r: r.fraction):
            if run.grade.feedback.strip():
                texts.setdefault(run.grade.feedback.strip(), None)
        joined = "\n---\n".join(texts)
        return joined if len(joined) <= FEEDBACK_LIMIT else joined[: FEEDBACK_LIMIT - 3] + "..."

    def summary(self) -> dict[str, Any]:
        """Returns the statistics as JSON-ready data (no transcripts)."""
        return {
            "tasks": list(self.tasks),
            "repeats": self.repeats,
            "seed": self.seed,
            "repeat_indices": list(self.repeat_indices),
            "scores": list(self.scores),
            "max_score": self.max_score,
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "max_rate": self.max_rate,
            "test_pass_rates": self.test_pass_rates,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "wall_time": self.wall_time,
            "cost": self.cost,
        }

    def to_dict(self) -> dict[str, Any]:
        """Returns the config, the statistics and every run, as JSON-ready data."""
        return {
            "config": config_to_dict(self.config),
            **self.summary(),
            "runs": [
                {
                    "task": r.task.name,
                    "repeat": r.repeat,
                    "seed": r.seed,
                    "cost": r.cost,
                    "grade": r.grade.to_dict(),
                    "moa": r.moa.to_dict(),
                }
                for r in self.runs
            ],
        }


async def evaluate(
    config: MoAConfig,
    tasks: Sequence[Task],
    router: Router,
    grader: BaseGrader,
    *,
    repeats: int,
    seed: int = 0,
    first: int = 0,
    on_result: Callable[[RunResult], None] | None = None,
    catalog: Catalog | None = None,
) -> Evaluation:
    """Runs ``config`` ``repeats`` times on every task instance and grades every answer.

    All runs go concurrently (the providers' limits pace the calls); repeat ``r`` uses sample
    index ``r`` and seed ``seed + r``, so results are reproducible and the response cache
    keeps repeats apart. Grading runs in a thread of its own pool (:data:`GRADING_THREADS`)
    so that other runs and the search's storage threads keep going.

    Args:
        config: The config to evaluate.
        tasks: Task instances; each is run ``repeats`` times.
        router: Resolves the config's models to providers.
        grader: Scores each answer.
        repeats: Runs per instance (at least 1).
        seed: Base sampling seed.
        first: Index of the first repeat: repeats ``first .. first + repeats - 1`` run, so
            more runs of a config add new draws instead of repeating the cached ones.
        on_result: Called with each run as soon as it is graded (in completion order).
        catalog: Model table for cost estimates; defaults to :meth:`Catalog.load`.

    Raises:
        ValueError: ``repeats`` < 1 or no tasks.
        ProviderError: A model call failed for good (the other runs are cancelled).
        GradingError: The grader raised on an answer (the other runs are cancelled).
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    if not tasks:
        raise ValueError("no task instances to evaluate")
    prices = catalog or Catalog.load()
    start = time.perf_counter()

    async def one(task: Task, repeat: int) -> RunResult:
        moa = await run_moa(config, task.prompt, router, sample=repeat, seed=seed + repeat)
        try:
            loop = asyncio.get_running_loop()
            grade = await loop.run_in_executor(_grading_pool(), grader.grade, moa.answer, task)
        except Exception as error:
            raise GradingError(
                f"grader {grader.name} failed on {task.name} (repeat {repeat}): "
                f"{type(error).__name__}: {error}",
                cause=type(error).__name__,
            ) from error
        cost = sum(prices.cost(c.model, c.prompt_tokens, c.completion_tokens) for c in moa.calls)
        result = RunResult(task, repeat, seed + repeat, moa, grade, cost)
        if on_result is not None:
            on_result(result)
        return result

    try:
        async with asyncio.TaskGroup() as group:
            pending = [
                group.create_task(one(task, repeat))
                for repeat in range(first, first + repeats)
                for task in tasks
            ]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return Evaluation(
        config=config,
        runs=tuple(p.result() for p in pending),
        repeats=repeats,
        seed=seed,
        wall_time=time.perf_counter() - start,
    )


def _secrets(env: Mapping[str, str]) -> list[str]:
    """Values of key-like variables, also reversed, hex- and base64-encoded; longest first."""
    markers = ("KEY", "TOKEN", "SECRET", "PASSWORD")
    values = {v for k, v in env.items() if any(m in k.upper() for m in markers) and len(v) >= 8}
    forms = set()
    for value in values:
        data = value.encode()
        forms |= {value, value[::-1], data.hex(), base64.b64encode(data).decode().rstrip("=")}
    return sorted(forms, key=len, reverse=True)


def redact_secrets(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replaces the values of key-like environment variables (``*KEY*``, ``*TOKEN*``...)."""
    for secret in _secrets(os.environ if env is None else env):
        text = text.replace(secret, "[redacted]")
    return text


def write_transcript(
    path: str | Path, evaluation: Evaluation, extra: Mapping[str, Any] | None = None
) -> Path:
    """Writes ``evaluation`` as JSONL: a summary line, then one line per call and per grade.

    Line types: ``evaluation`` (config, statistics and ``extra``), ``call`` (task, repeat,
    seed and the call record: messages, response, tokens...), ``grade`` (task, repeat, the
    answer, the extracted code, score, tests, feedback). Values of key-like environment
    variables are redacted; no API key is ever part of these records.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines: list[dict[str, Any]] = [
        {
            "type": "evaluation",
            "config": config_to_dict(evaluation.config),
            **evaluation.summary(),
            **(extra or {}),
        }
    ]
    for run in evaluation.runs:
        where = {"task": run.task.name, "repeat": run.repeat, "seed": run.seed}
        lines += [{"type": "call", **where, **call.to_dict()} for call in run.moa.calls]
        lines.append(
            {
                "type": "grade",
                **where,
                "answer": run.moa.answer,
                "code": run.grade.code,
                "cost": run.cost,
                "wall_time": run.moa.wall_time,
                **run.grade.to_dict(),
            }
        )
    secrets = _secrets(os.environ)
    temporary = path.with_name(path.name + ".tmp")
    # Lone surrogates (from a model, or from code that printed them) are kept as JSON escapes.
    with temporary.open("w", encoding="utf-8", errors="backslashreplace") as out:
        for line in lines:
            text = json.dumps(line, ensure_ascii=False)
            for secret in secrets:
                text = text.replace(secret, "[redacted]")
            out.write(text + "\n")
    temporary.replace(path)
    return path
