"""The objective: one Optuna trial -> one MoA config -> repeats -> grades -> values."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from graders._base import BaseGrader, Task
from optimizer._catalog import Catalog, check_context
from optimizer._config import MoAConfig, config_from_dict, config_to_dict
from optimizer._evaluate import Evaluation, RunResult, evaluate, write_transcript
from optimizer._instances import InstanceReporter, InstanceSampling
from optimizer._space import PromptChooser, SearchSpace
from optimizer._storage import batched_writes
from optimizer.providers import Router

__all__ = [
    "DIRECTIONS",
    "OBJECTIVES",
    "SUMMARY_ATTRS",
    "Objective",
    "Spend",
    "behaviour",
    "parse_objectives",
    "transcript_path",
    "worker_id",
]

SUMMARY_ATTRS = (
    "scores", "mean", "std", "max_score", "max_rate", "test_pass_rates", "prompt_tokens",
    "completion_tokens", "calls", "cache_hits", "wall_time", "cost", "repeats", "seed",
)  # fmt: skip
"""Trial user attrs taken from the evaluation's statistics (the transcript has them all)."""
OBJECTIVES = ("score", "cost", "latency")
"""Values a study can optimise: mean score (maximised), cost and latency (minimised)."""
DIRECTIONS = {
    "score": optuna.study.StudyDirection.MAXIMIZE,
    "cost": optuna.study.StudyDirection.MINIMIZE,
    "latency": optuna.study.StudyDirection.MINIMIZE,
}


def parse_objectives(text: str) -> tuple[str, ...]:
    """Parses ``score``, ``score,cost`` or ``score,latency``.

    Raises:
        ValueError: Unknown name, a repeat, or a list not starting with ``score``.
    """
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise ValueError(f"unknown objective {unknown[0]!r}; choose from {', '.join(OBJECTIVES)}")
    if not names or names[0] != "score" or len(set(names)) != len(names) or len(names) > 2:
        raise ValueError("expected score, score,cost or score,latency")
    return names


def worker_id() -> dict[str, Any]:
    """Identifies this process in a trial's user attrs (host and pid)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def transcript_path(study_dir: Path, number: int) -> Path:
    """Where a trial's transcript goes: ``<study_dir>/trials/<number>.jsonl``."""
    return study_dir / "trials" / f"{number}.jsonl"


def behaviour(config: MoAConfig) -> dict[str, Any]:
    """A config without its agent names, which do not change what the models see."""
    data = config_to_dict(config)
    data["main"].pop("name")
    for agent in data["layer_agents"]:
        agent.pop("name")
    return data


@dataclass
class Spend:
    """Tokens and dollars a trial has spent so far (updated as its runs are graded).

    Attributes:
        tokens: Prompt plus completion tokens.
        cost: Estimated US dollars.
        runs: Graded runs.
    """

    tokens: int = 0
    cost: float = 0.0
    runs: int = 0

    def add(self, result: RunResult) -> None:
        """Counts one graded run."""
        self.tokens += result.moa.prompt_tokens + result.moa.completion_tokens
        self.cost += result.cost
        self.runs += 1


class Objective:
    """Evaluates trials of a study.

    Args:
        space: The search space.
        tasks: Task instances every trial is scored on.
        grader: Scores answers.
        router: Resolves models to providers.
        catalog: Prices and context windows.
        study_dir: Where transcripts go (``trials/<number>.jsonl``).
        objectives: Values returned, in order (see :data:`OBJECTIVES`).
        seed: Base sampling seed; repeat ``r`` uses ``seed + r``.
        sampling: For a suite: each trial evaluates these of ``tasks``, reporting each
            problem's score to the trial (for a pruner); None: every task, no reports.
    """

    def __init__(
        self,
        *,
        space: SearchSpace,
        tasks: Sequence[Task],
        grader: BaseGrader,
        router: Router,
        catalog: Catalog,
        study_dir: Path,
        objectives: Sequence[str] = ("score",),
        seed: int = 0,
        sampling: InstanceSampling | None = None,
    ) -> None:
        self.space = space
        self.tasks = tuple(tasks)
        self.grader = grader
        self.router = router
        self.catalog = catalog
        self.study_dir = study_dir
        self.objectives = tuple(objectives)
        self.seed = seed
        self.sampling = sampling

    async def __call__(
        self,
        trial: optuna.Trial,
        pool: PromptChooser,
        spend: Spend | None = None,
        on_result: Callable[[RunResult], None] | None = None,
        slot: AbstractAsyncContextManager[Any] | None = None,
    ) -> list[float]:
        """Runs one trial and returns its values; records everything as user attrs.

        Args:
            trial: A trial from ``study.ask()``.
            pool: The study's prompt pool.
            spend: Updated as runs are graded, so a failed trial's spending is known.
            on_result: Also called with each graded run (progress display).
            slot: Held from the first model call to the last grade (a search's worker
                slots), so a trial can be sampled before a slot is free.

        Raises:
            optuna.TrialPruned: The config cannot fit a model's context window; no model
                was called and the reason is in the ``pruned_reason`` user attr.
            ProviderError: A model call failed for good; spending so far is recorded.
        """
        spend = spend if spend is not None else Spend()
        # Storage writes (an fsync each for journal files) run in a thread, so the event loop
        # keeps serving the other trials in flight meanwhile.
        config, reason = await asyncio.to_thread(self._prepare, trial, pool)
        if reason is not None:
            raise optuna.TrialPruned(reason)

        tasks = self.tasks
        reporter = None
        if self.sampling is not None:
            tasks = self.sampling.choose(self.tasks, trial.number)
            reporter = InstanceReporter(trial, self.tasks, self.space.repeats, len(tasks))

        def seen(result: RunResult) -> None:
            spend.add(result)
            if on_result is not None:
                on_result(result)
            if reporter is not None:
                reporter(result)  # raises TrialPruned when the pruner stops the trial

        async with slot or contextlib.nullcontext():
            try:
                evaluation = await evaluate(
                    config,
                    tasks,
                    self.router,
                    self.grader,
                    repeats=self.space.repeats,
                    seed=self.seed,
                    on_result=seen,
                    catalog=self.catalog,
                )
            except BaseException:
                with batched_writes(trial.storage):
                    trial.set_user_attr("tokens", spend.tokens)
                    trial.set_user_attr("cost", spend.cost)
                raise
        await asyncio.to_thread(self._record, trial, evaluation)
        return self.values(evaluation)

    def values(self, evaluation: Evaluation) -> list[float]:
        """The trial's objective values, in the order of :attr:`objectives`."""
        latency = statistics.fmean(r.moa.wall_time for r in evaluation.runs)
        table = {"score": evaluation.mean, "cost": evaluation.cost, "latency": latency}
        return [table[name] for name in self.objectives]

    def _prepare(self, trial: optuna.Trial, pool: PromptChooser) -> tuple[MoAConfig, str | None]:
        """Suggests the config and records it; returns it and the context guard's verdict."""
        # Optuna caches a study's trials per thread and clears the cache only in ask and tell,
        # so this pool thread may hold the list of an earlier trial: the sampler must not see it.
        trial.study._thread_local.cached_all_trials = None
        with batched_writes(trial.storage):
            config = self.space.suggest(trial, pool)
            trial.set_user_attr("config", config_to_dict(config))
            wanted = trial.user_attrs.get("baseline_config")
            if wanted is not None:
                exact = behaviour(config_from_dict(wanted, "baseline")) == behaviour(config)
                trial.set_user_attr("baseline_exact", exact)
            reasons = (check_context(config, task.prompt, self.catalog) for task in self.tasks)
            reason = next((r for r in reasons if r is not None), None)
            if reason is not None:
                trial.set_user_attr("pruned_reason", f"context: {reason}")
        return config, reason

    def _record(self, trial: optuna.Trial, evaluation: Evaluation) -> None:
        """Writes the transcript and the result user attrs."""
        path = write_transcript(
            transcript_path(self.study_dir, trial.number), evaluation, {"trial": trial.number}
        )
        summary = evaluation.summary()
        attrs = {key: summary[key] for key in SUMMARY_ATTRS}
        attrs["tokens"] = evaluation.prompt_tokens + evaluation.completion_tokens
        attrs["feedback"] = evaluation.feedback
        attrs["transcript"] = str(path)
        with batched_writes(trial.storage):
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
