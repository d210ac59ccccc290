"""Reproduces configs: each one run N times on a task, every score and statistic shown."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from graders._base import BaseGrader, Task
from optimizer._catalog import Catalog, check_context
from optimizer._config import MoAConfig, config_to_dict
from optimizer._evaluate import Evaluation, RunResult, evaluate
from optimizer._racing import ConfigRuns
from optimizer.providers import Router

__all__ = [
    "Expectation",
    "Reproduction",
    "context_warnings",
    "expectation",
    "reproduce",
    "reproduction_json",
    "results_table",
]


@dataclass(frozen=True)
class Expectation:
    """What the search that exported a config predicts a reproduction of it scores.

    Attributes:
        source: The statistics file beside the config (``<stem>.stats.json``).
        confirmed: Whether the prediction comes from fresh runs (else from the search runs
            that chose the config, so it is optimistic).
        runs: How many runs it comes from.
        repeats: The reproduction's runs it is for.
        low: Low end of the 95% prediction interval of the reproduction's mean.
        high: High end.
        shared_seeds: How many of the reproduction's seeds the search already used for this
            config: those runs replay its answers, so they are no independent check.
        fresh_seed: A base seed whose ``repeats`` seeds the search never used for it.
    """

    source: Path
    confirmed: bool
    runs: int
    repeats: int
    low: float
    high: float
    shared_seeds: int = 0
    fresh_seed: int = 0

    def verdict(self, mean: float) -> str:
        """``inside``, ``below`` or ``above`` the interval."""
        return "below" if mean < self.low else "above" if mean > self.high else "inside"

    def to_dict(self, mean: float) -> dict[str, Any]:
        """Returns the prediction and how ``mean`` compares, as JSON-ready data."""
        return {
            "stats_file": str(self.source),
            "confirmed": self.confirmed,
            "runs": self.runs,
            "repeats": self.repeats,
            "low": self.low,
            "high": self.high,
            "verdict": self.verdict(mean),
            "shared_seeds": self.shared_seeds,
        }


def expectation(stats_file: Path, repeats: int, seed: int = 0) -> Expectation | None:
    """The prediction an exported config's statistics file makes for ``repeats`` new runs.

    None when there is no such file or it holds no runs. ``seed`` is the reproduction's base
    seed, checked against the seeds the search used (known when the file has ``call_seed``).

    Raises:
        ValueError: The file is there but is not an export's statistics; the message says why.
    """
    if not stats_file.is_file():
        return None
    try:
        data = json.loads(stats_file.read_text(encoding="utf-8"))
        scores = [float(score) for score in data["scores"]]
        prior = float(data.get("prior_std", 0.0))
        top = float(data.get("max_score", 0.0))
        confirmed = bool(data.get("confirmed", False))
        used = _used_seeds(data)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        reason = f"no field {error}" if isinstance(error, KeyError) else str(error)
        raise ValueError(f"{stats_file}: not an export's statistics ({reason})") from None
    if not scores:
        return None
    runs = ConfigRuns("", {}, (), tuple(range(len(scores))), tuple(scores), top, prior)
    shared = len(used.intersection(range(seed, seed + repeats)))
    fresh = seed
    while used.intersection(range(fresh, fresh + repeats)):
        fresh = (fresh // 1000 + 1) * 1000
    low, high = runs.predicted(repeats)
    return Expectation(stats_file, confirmed, runs.n, repeats, low, high, shared, fresh)


def _used_seeds(data: Any) -> set[int]:
    """The model seeds of every run in an export's statistics (empty without ``call_seed``)."""
    base = data.get("call_seed")
    if not isinstance(base, int) or isinstance(base, bool):
        return set()
    repeats = list(data.get("repeats", [])) + list(data.get("search", {}).get("repeats", []))
    return {base + int(r) for r in repeats}


@dataclass(frozen=True)
class Reproduction:
    """One config's evaluation.

    Attributes:
        name: How the config is shown (its file name).
        evaluation: Its runs and statistics.
        expected: What its search predicted for this many runs, if it left a prediction.
    """

    name: str
    evaluation: Evaluation
    expected: Expectation | None = None


def context_warnings(
    configs: Sequence[tuple[str, MoAConfig]], tasks: Sequence[Task], catalog: Catalog
) -> list[str]:
    """One line per config whose prompts may not fit a model's context window."""
    warnings = []
    for name, config in configs:
        for task in tasks:
            reason = check_context(config, task.prompt, catalog)
            if reason is not None:
                warnings.append(f"{name}: {reason}")
                break
    return warnings


async def reproduce(
    configs: Sequence[tuple[str, MoAConfig]],
    tasks: Sequence[Task],
    router: Router,
    grader: BaseGrader,
    *,
    repeats: int,
    seed: int = 0,
    catalog: Catalog | None = None,
    on_result: Callable[[str, RunResult], None] | None = None,
) -> list[Reproduction]:
    """Evaluates each named config, one config after another (its runs concurrently).

    Args:
        configs: ``(name, config)`` pairs.
        tasks: Task instances.
        router: Resolves models to providers.
        grader: Scores answers.
        repeats: Runs per config and instance.
        seed: Base seed; repeat ``r`` uses ``seed + r`` (the same for every config).
        catalog: Model table for costs; defaults to :meth:`Catalog.load`.
        on_result: Called with the config's name and each graded run.
    """
    prices = catalog or Catalog.load()
    results = []
    for name, config in configs:

        def seen(result: RunResult, name: str = name) -> None:
            if on_result is not None:
                on_result(name, result)

        evaluation = await evaluate(
            config,
            tasks,
            router,
            grader,
            repeats=repeats,
            seed=seed,
            on_result=seen,
            catalog=prices,
        )
        results.append(Reproduction(name, evaluation))
    return results


def _points(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def results_table(reproductions: Sequence[Reproduction]) -> Table:
    """The statistics side by side: one column per config, one row per statistic or test."""
    table = Table(title="reproduce", show_lines=False)
    table.add_column("", style="bold")
    for reproduction in reproductions:
        table.add_column(reproduction.name, justify="right", overflow="fold")
    evaluations = [r.evaluation for r in reproductions]

    def row(label: str, cell: Callable[[Evaluation], str]) -> None:
        table.add_row(label, *(cell(e) for e in evaluations))

    row("scores", lambda e: " ".join(_points(s) for s in e.scores))
    row("mean", lambda e: f"{_points(e.mean)} / {_points(e.max_score)}")
    row("std", lambda e: f"{e.std:.2f}")
    row("min", lambda e: _points(e.min))
    row("max", lambda e: _points(e.max))
    row(
        "max-score rate",
        lambda e: f"{sum(r.perfect for r in e.runs)}/{len(e.runs)} ({e.max_rate:.0%})",
    )
    tests = list(dict.fromkeys(name for e in evaluations for name in e.test_pass_rates))
    for test in tests:
        rates = [e.test_pass_rates.get(test) for e in evaluations]
        table.add_row(f"  {test}", *("-" if r is None else f"{r:.0%}" for r in rates))
    row("tokens (prompt+compl.)", lambda e: f"{e.prompt_tokens:,}+{e.completion_tokens:,}")
    row("calls (cached)", lambda e: f"{e.calls} ({e.cache_hits})")
    row("est. cost", lambda e: f"${e.cost:.4f}")
    row("wall time", lambda e: f"{e.wall_time:.1f}s")
    if any(r.expected is not None for r in reproductions):
        table.add_row("search predicted (95%)", *(_predicted(r) for r in reproductions))
    return table


def _predicted(reproduction: Reproduction) -> str:
    expected = reproduction.expected
    if expected is None:
        return "-"
    kind = "fresh" if expected.confirmed else "search (optimistic)"
    shared = expected.shared_seeds
    replayed = f"; {shared} replay the search's" if shared else ""
    return (
        f"{_points(expected.low)}..{_points(expected.high)}: mean "
        f"{expected.verdict(reproduction.evaluation.mean)} ({expected.runs} {kind} runs"
        f"{replayed})"
    )


def reproduction_json(reproductions: Sequence[Reproduction]) -> dict[str, Any]:
    """The JSON printed by ``--json``: each config, its statistics, and every run's score,
    final answer and grader feedback."""
    return {
        "configs": [
            {
                "name": r.name,
                "config": config_to_dict(r.evaluation.config),
                **r.evaluation.summary(),
                "expected": None if r.expected is None else r.expected.to_dict(r.evaluation.mean),
                "runs": [
                    {
                        "task": run.task.name,
                        "repeat": run.repeat,
                        "seed": run.seed,
                        "score": run.grade.score,
                        "max_score": run.grade.max_score,
                        "cached_calls": run.moa.cache_hits,
                        "answer": run.moa.answer,
                        "feedback": run.grade.feedback,
                    }
                    for run in r.evaluation.runs
                ],
            }
            for r in reproductions
        ]
    }
