"""The search: an Optuna study over MoA configs, run with ask/tell on one asyncio loop.

``Search.run`` opens (or resumes) the study, fails the trials a killed process left running,
enqueues the baselines, then keeps ``workers`` trials calling models as asyncio tasks (a
slow model call in one trial never idles the others) and, when sampling is slow next to
the trials, one more trial sampled ahead, waiting for a worker. Budgets (trials, time,
tokens, cost) count everything the study has already spent, so the same command resumes a
study. When a budget is reached no new trial starts, the running trials finish and one
sampled ahead is marked failed as never run. A first SIGINT (Ctrl-C) starts no new trial and
lets the running ones finish; a second one, or SIGTERM, stops at once, marking the trials in
flight as failed. A mutation round grows the prompt pools every K completed trials; a trial
races its config against the incumbent (see :mod:`optimizer._racing`); at the end the top
configs are topped up with more runs (the confirm stage) and the config with the highest
lower bound over its pooled runs is exported with its statistics.

The pieces: :mod:`optimizer._setup` opens the study, :mod:`optimizer._loop` runs the trials
(:mod:`optimizer._slots`, :mod:`optimizer._objective`), :mod:`optimizer._budget` counts the
spending, :mod:`optimizer._stale` fails trials of dead workers and :mod:`optimizer._summary`
reports, and :mod:`optimizer._confirm` runs the confirm stage.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from graders._base import BaseGrader, Task
from optimizer._best import (
    BestRuns,
    study_best,
    study_call_seed,
)
from optimizer._budget import (
    CONFIRM_ATTR,
    NOT_RUN,
    SESSION_ATTR,
    Budget,
    Spent,
    failed_run,
    study_spent,
)
from optimizer._catalog import Catalog
from optimizer._config import MoAConfig, config_from_dict
from optimizer._confirm import Confirmation, ConfirmStage
from optimizer._export import write_best
from optimizer._failures import FailureStreak, cause_counts, common_failures
from optimizer._instances import InstanceSampling
from optimizer._loop import MAX_CONSECUTIVE_FAILURES, TrialLoop
from optimizer._objective import Objective
from optimizer._prompts import PromptPool
from optimizer._racing import (
    lower_confidence_bound,
    study_runs,
)
from optimizer._setup import (
    RACING_ATTR,
    SAMPLERS,
    SPACE_ATTR,
    SearchError,
    SearchSetup,
    make_sampler,
)
from optimizer._slots import Slots
from optimizer._space import SearchSpace
from optimizer._split import Split
from optimizer._stale import Heartbeats, fail_stale_trials
from optimizer._summary import (
    SearchSummary,
    Status,
    TrialEnd,
    _best_complete,
    rejection_counts,
    summary_dict,
)
from optimizer._taskref import TaskRef
from optimizer.providers import Router

__all__ = [
    "CONFIRM_ATTR",
    "NOT_RUN",
    "RACING_ATTR",
    "SAMPLERS",
    "SESSION_ATTR",
    "SPACE_ATTR",
    "Budget",
    "Confirmation",
    "Search",
    "SearchError",
    "SearchSummary",
    "Spent",
    "Status",
    "TrialEnd",
    "fail_stale_trials",
    "failed_run",
    "lower_confidence_bound",
    "make_sampler",
    "rejection_counts",
    "study_spent",
    "summary_dict",
]


class Search(SearchSetup, TrialLoop, ConfirmStage):
    """Runs a study over ``space``.

    Args:
        space: The search space.
        study_name: Study name.
        storage: The study's storage (see :func:`optimizer._storage.open_storage`).
        study_dir: Where transcripts and exports go (``runs/<study>``).
        tasks: Task instances each trial is scored on.
        grader: Scores answers.
        router: Resolves models to providers.
        catalog: Prices and context windows.
        budget: When to stop.
        workers: Trials in flight at once.
        sampler: Sampler name (see :data:`SAMPLERS`).
        seed: Seeds the sampler (offset by the trials already in the study, so a resumed
            study does not replay its draws) and a new study's model calls (repeat ``r``
            uses ``seed * SEED_STRIDE + r``; 0 if None; a resumed study keeps its own).
        objectives: ``("score",)``, ``("score", "cost")`` or ``("score", "latency")``.
        baselines: Named configs enqueued first (mapped onto the space), unless the study
            already ran them.
        confirm_repeats: Repeats for the confirm stage; 0 skips it.
        confirm_top: How many top trials the confirm stage re-evaluates.
        observer: Called with a :class:`Status` as the search goes.
        task: The task's identity and fingerprint, stored in the study (a resumed study
            whose task changed is refused) and written into the exported configs.
        split: A suite's dev/test split, stored in a new study (``tasks`` are its dev
            problems: trials, mutation and confirm see nothing else).
        sampling: For a suite: the problems each trial evaluates, reported one by one.
        pruner: ``none`` or ``wilcoxon`` (stops trials clearly worse than the best).
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        study_name: str,
        storage: BaseStorage,
        study_dir: Path,
        tasks: Sequence[Task],
        grader: BaseGrader,
        router: Router,
        catalog: Catalog,
        budget: Budget = Budget(),
        workers: int = 1,
        sampler: str = "tpe",
        seed: int | None = None,
        objectives: Sequence[str] = ("score",),
        baselines: Sequence[tuple[str, MoAConfig]] = (),
        confirm_repeats: int = 0,
        confirm_top: int = 3,
        observer: Callable[[Status], None] | None = None,
        task: TaskRef | None = None,
        split: Split | None = None,
        sampling: InstanceSampling | None = None,
        pruner: str = "none",
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.space = space
        self.study_name = study_name
        self.storage = storage
        self.study_dir = study_dir
        self.tasks = tuple(tasks)
        self.router = router
        self.catalog = catalog
        self.budget = budget
        self.workers = workers
        self.sampler_name = sampler
        self.seed = seed
        self.objectives = tuple(objectives)
        self.baselines = tuple(baselines)
        self.confirm_repeats = confirm_repeats
        self.confirm_top = confirm_top
        self.observer = observer
        self.task = task
        self.split = split
        self.pruner = pruner
        self.objective = Objective(
            space=space,
            tasks=self.tasks,
            grader=grader,
            router=router,
            catalog=catalog,
            study_dir=study_dir,
            objectives=self.objectives,
            seed=seed or 0,
            sampling=sampling,
        )
        self._interrupt: str | None = None
        self._hard_stop = False
        self._study: optuna.Study | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: tuple[str, float] = ("", 0.0)
        self._session_saved = 0.0
        self._ends: list[TrialEnd] = []
        self._streak = FailureStreak(max(MAX_CONSECUTIVE_FAILURES, workers + 2))
        self._slots = Slots(workers)
        self._sample_ahead = False
        self._stopped_by = ""
        self._full_until = 0.0
        self._heartbeats = Heartbeats(storage)
        self._stale: list[int] = []
        self._stale_due = 0.0

    # -- running -------------------------------------------------------------------------

    async def run(self) -> SearchSummary:
        """Runs the search until a budget or a signal stops it, then confirms and exports."""
        models = list(self.space.models)
        if self.space.mutation.every > 0:
            models.append(self.space.mutator_model)
        self.router.check(models)
        study = self.open_study()
        self._study = study
        self._stale = fail_stale_trials(study)
        pool = PromptPool(study)
        pool.ensure_seeds(self.space.seed_prompts())
        self.enqueue_baselines(study, pool)
        start = time.time()
        self._session = (f"{SESSION_ATTR}:{socket.gethostname()}:{os.getpid()}:{start:.3f}", start)
        loop = asyncio.get_running_loop()
        handled = self._install_signals(loop)
        try:
            with self._heartbeats:
                stopped_by = await self._loop(study, pool)
            confirmations: list[Confirmation] = []
            if not self._interrupt and self.confirm_repeats > 0:
                confirmations = await self._confirm(study)
            if self._interrupt:
                stopped_by = self._interrupt
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            self._save_session(study)
        return self._summary(study, stopped_by, tuple(self._stale), confirmations)

    # -- summary -------------------------------------------------------------------------

    def _summary(
        self,
        study: optuna.Study,
        stopped_by: str,
        stale: tuple[int, ...],
        confirmations: list[Confirmation],
    ) -> SearchSummary:
        pareto: tuple[int, ...] = ()
        best: FrozenTrial | None = None
        chosen: BestRuns | None = None
        if len(self.objectives) > 1:
            if study.get_trials(states=(TrialState.COMPLETE,)):
                pareto = tuple(sorted(t.number for t in study.best_trials))
            best = _best_complete(study)
        else:
            chosen = study_best(study, self.space.racing.incumbent_runs)
            best = None if chosen is None else study.trials[chosen.trial]
        config = None
        exports: tuple[Path, ...] = ()
        if best is not None:
            config = config_from_dict(best.user_attrs["config"], f"trial {best.number}")
            if chosen is None:
                search = study_runs(study).get(str(best.user_attrs.get("config_key")))
                chosen = None if search is None else BestRuns(search, None, study_call_seed(study))
            exports = write_best(
                config, chosen, self.study_dir / "best.json", best.number, self.task
            )
        return SearchSummary(
            study=self.study_name,
            stopped_by=stopped_by,
            spent=self._spent(study),
            session_trials=tuple(self._ends),
            stale=stale,
            best=best,
            best_config=config,
            pareto=pareto,
            confirmations=tuple(confirmations),
            exports=exports,
            objectives=self.objectives,
            failures=common_failures(study.get_trials(deepcopy=False)),
            failed_by_cause=cause_counts(
                [t for t in study.get_trials(deepcopy=False) if failed_run(t)]
            ),
            best_runs=None if chosen is None else chosen.search,
            rejected=rejection_counts(study),
            fresh_runs=None if chosen is None else chosen.fresh,
        )
