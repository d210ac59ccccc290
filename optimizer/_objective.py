"""The objective: one Optuna trial -> one MoA config -> racing runs -> grades -> values.

A trial runs its config ``repeats`` times with repeat indices no earlier run of the same
config used, then races it against the incumbent (:func:`optimizer._racing.more_runs`), and
returns the config's pooled mean score over every run of the study (see
:mod:`optimizer._racing` for why the sampler is told the pooled mean).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import time
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
from optimizer._racing import ConfigRuns, config_key, incumbent, more_runs, study_runs
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
    "repeat_indices",
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
        self._next: dict[str, int] = {}

    def reserve(self, runs: ConfigRuns, count: int) -> int:
        """The first of ``count`` repeat indices of ``runs``' config no run of it has used.

        Indices are also kept apart from those this process handed out for runs still in
        flight (two trials of one config at once).
        """
        first = max(runs.next_repeat(), self._next.get(runs.key, 0))
        self._next[runs.key] = first + count
        return first

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

        graded: list[RunResult] = []

        def counted(result: RunResult) -> None:  # every run: spending and progress
            spend.add(result)
            graded.append(result)
            if on_result is not None:
                on_result(result)

        def seen(result: RunResult) -> None:  # the trial's own runs also go to the pruner
            counted(result)
            if reporter is not None:
                reporter(result)  # raises TrialPruned when the pruner stops the trial

        async with slot or contextlib.nullcontext():
            started = time.perf_counter()
            try:
                evaluation, pooled = await self._race(trial.study, config, tasks, seen, counted)
            except optuna.TrialPruned as pruned:
                order = {task.name: index for index, task in enumerate(tasks)}
                runs = sorted(graded, key=lambda r: (r.repeat, order[r.task.name]))
                partial = Evaluation(
                    config, tuple(runs), self.space.repeats, self.seed,
                    time.perf_counter() - started,
                )  # fmt: skip
                await asyncio.to_thread(self._record_pruned, trial, partial, str(pruned))
                raise
            except BaseException:
                with batched_writes(trial.storage):
                    trial.set_user_attr("tokens", spend.tokens)
                    trial.set_user_attr("cost", spend.cost)
                raise
        await asyncio.to_thread(self._record, trial, evaluation, pooled)
        return self.values(evaluation, pooled.mean)

    async def _race(
        self,
        study: optuna.Study,
        config: MoAConfig,
        tasks: Sequence[Task],
        seen: Callable[[RunResult], None],
        counted: Callable[[RunResult], None],
    ) -> tuple[Evaluation, ConfigRuns]:
        """Runs ``config`` ``repeats`` times, then more while it races the incumbent.

        Args:
            study: The study (its pooled runs).
            config: The trial's config.
            tasks: The problems the trial evaluates.
            seen: Called with each of the trial's first runs (they may be reported to a
                pruner).
            counted: Called with each racing run after those.

        Returns:
            This trial's runs, and every run of the config so far (the pool).
        """
        data = config_to_dict(config)
        key = config_key(data)
        racing = self.space.racing
        done: Evaluation | None = None
        count = self.space.repeats
        while True:
            pools = await asyncio.to_thread(study_runs, study)
            top = 0.0 if done is None else done.max_score
            mine = pools.get(key) or ConfigRuns(key, data, (), (), (), top)
            if done is not None:
                mine = pools[key] = mine.with_runs(done.repeat_indices, done.scores)
                count = more_runs(
                    mine,
                    incumbent(pools, racing.incumbent_runs),
                    incumbent_runs=racing.incumbent_runs,
                    max_runs=racing.max_runs,
                )
            if count <= 0:
                break
            step = await evaluate(
                config,
                tasks,
                self.router,
                self.grader,
                repeats=count,
                seed=self.seed,
                first=self.reserve(mine, count),
                on_result=seen if done is None else counted,
                catalog=self.catalog,
            )
            done = step if done is None else _merged(done, step)
        assert done is not None
        return done, mine

    def values(self, evaluation: Evaluation, score: float | None = None) -> list[float]:
        """The trial's objective values, in the order of :attr:`objectives`.

        Args:
            evaluation: The trial's runs.
            score: The score told (the config's pooled mean); default: the runs' mean.
        """
        latency = statistics.fmean(r.moa.wall_time for r in evaluation.runs)
        mean = evaluation.mean if score is None else score
        table = {"score": mean, "cost": evaluation.cost, "latency": latency}
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

    def _record_pruned(self, trial: optuna.Trial, evaluation: Evaluation, reason: str) -> None:
        """A pruned trial: the transcript of the runs it made, and what they spent."""
        path = write_transcript(
            transcript_path(self.study_dir, trial.number),
            evaluation,
            {"trial": trial.number, "pruned": reason},
        )
        with batched_writes(trial.storage):
            trial.set_user_attr("tokens", evaluation.prompt_tokens + evaluation.completion_tokens)
            trial.set_user_attr("cost", evaluation.cost)
            trial.set_user_attr("transcript", str(path))

    def _record(self, trial: optuna.Trial, evaluation: Evaluation, pooled: ConfigRuns) -> None:
        """Writes the transcript and the result user attrs (with the config's pool).

        A transcript that cannot be written (a full disk, a read-only directory) costs the
        trial only its transcript: the ``transcript_error`` attr says why.
        """
        summary = evaluation.summary()
        attrs = {key: summary[key] for key in SUMMARY_ATTRS}
        attrs["tokens"] = evaluation.prompt_tokens + evaluation.completion_tokens
        attrs["feedback"] = evaluation.feedback
        try:
            path = write_transcript(
                transcript_path(self.study_dir, trial.number), evaluation, {"trial": trial.number}
            )
        except OSError as error:
            attrs["transcript_error"] = f"{type(error).__name__}: {error}"
        else:
            attrs["transcript"] = str(path)
        attrs["config_key"] = pooled.key
        attrs["pooled"] = {
            "n": pooled.n,
            "mean": pooled.mean,
            "std": pooled.std,
            "lcb": pooled.lcb,
            "trials": [*pooled.trials, trial.number],
        }
        with batched_writes(trial.storage):
            for key, value in attrs.items():
                trial.set_user_attr(key, value)


def _merged(first: Evaluation, second: Evaluation) -> Evaluation:
    """One evaluation holding the runs of both (a trial's runs and its racing runs)."""
    return Evaluation(
        config=first.config,
        runs=first.runs + second.runs,
        repeats=first.repeats + second.repeats,
        seed=first.seed,
        wall_time=first.wall_time + second.wall_time,
    )
