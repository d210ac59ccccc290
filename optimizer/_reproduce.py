"""Reproduces configs: each one run N times on a task, every score and statistic shown."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from graders._base import BaseGrader, Task
from optimizer._catalog import Catalog, check_context
from optimizer._config import MoAConfig, config_to_dict
from optimizer._evaluate import Evaluation, RunResult, evaluate
from optimizer.providers import Router

__all__ = ["Reproduction", "context_warnings", "reproduce", "reproduction_json", "results_table"]


@dataclass(frozen=True)
class Reproduction:
    """One config's evaluation.

    Attributes:
        name: How the config is shown (its file name).
        evaluation: Its runs and statistics.
    """

    name: str
    evaluation: Evaluation


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
    return table


def reproduction_json(reproductions: Sequence[Reproduction]) -> dict[str, Any]:
    """The JSON printed by ``--json``: each config, its statistics, and every run's score,
    final answer and grader feedback."""
    return {
        "configs": [
            {
                "name": r.name,
                "config": config_to_dict(r.evaluation.config),
                **r.evaluation.summary(),
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
