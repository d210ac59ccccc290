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
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import math
import os
import signal
import socket
import time
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState
from pydantic import TypeAdapter

from graders._base import BaseGrader, Task
from optimizer._catalog import Catalog
from optimizer._config import MoAConfig, config_from_dict, config_to_dict
from optimizer._errors import UserError
from optimizer._evaluate import evaluate, write_transcript
from optimizer._export import write_best
from optimizer._failures import (
    CAUSE_ATTR,
    FailureCause,
    FailureStreak,
    cause_counts,
    common_failures,
    error_cause,
)
from optimizer._instances import InstanceSampling, make_pruner
from optimizer._objective import (
    DIRECTIONS,
    Objective,
    Spend,
    transcript_path,
    worker_id,
)
from optimizer._prompts import (
    MUTATION_SPEND_PREFIX,
    REJECTED_PREFIX,
    PromptPool,
    mutation_round,
)
from optimizer._racing import (
    RUNS_ATTR,
    ConfigRuns,
    best_config,
    lower_confidence_bound,
    rank_key,
    study_runs,
)
from optimizer._space import SearchSpace
from optimizer._split import Split, store_split
from optimizer._storage import storage_lock
from optimizer._taskref import TASK_ATTR, TaskRef, changed_parts
from optimizer.providers import ProviderError, Router

__all__ = [
    "SAMPLERS",
    "Budget",
    "Confirmation",
    "Search",
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

SAMPLERS = ("tpe", "random", "gp", "nsga2")
CONFIRM_ATTR = "confirm"
"""Study user attrs ``confirm:<trial number>``: re-evaluations of studies made before racing
(their spending still counts; the confirm stage now writes ``runs:`` attrs)."""
RACING_ATTR = "racing"
"""Study user attr: the racing settings (``incumbent_runs``, ``max_runs``) of the study."""
SESSION_ATTR = "session"
"""Study user attrs ``session:<host>:<pid>:<start>``: ``[start, end]`` epoch seconds."""
SPACE_ATTR = "space"
"""Study user attr: the search space the study was created with."""
SESSION_SAVE_EVERY = 10.0
"""Seconds between saves of the running session's interval (a killed run loses at most this)."""
MAX_CONSECUTIVE_FAILURES = 3
SAMPLE_AHEAD_SHARE = 0.02
"""The next trial is sampled ahead once sampling took over this share of a trial's run."""
NOT_RUN = "not run:"
"""Starts the error of a trial that was sampled ahead and never ran (a budget stopped it)."""
_STALE_UNOWNED = timedelta(minutes=10)


class SearchError(UserError):
    """A search cannot start as asked (another space for this study, an unusable sampler)."""


@dataclass(frozen=True)
class Budget:
    """When to stop; None means no limit. Each counts what the study already spent.

    Attributes:
        trials: Finished trials (complete or pruned).
        timeout: Seconds of search, over every session of the study.
        max_tokens: Prompt plus completion tokens.
        max_cost: Estimated US dollars.
    """

    trials: int | None = None
    timeout: float | None = None
    max_tokens: int | None = None
    max_cost: float | None = None


@dataclass(frozen=True)
class Spent:
    """What a study has used so far.

    Attributes:
        trials: Finished trials (complete or pruned).
        failed: Failed trials, not counting those sampled ahead that never ran.
        elapsed: Seconds of search over every session (overlapping sessions count once).
        tokens: Prompt plus completion tokens, trials and confirm stage.
        cost: Estimated US dollars, trials and confirm stage.
    """

    trials: int
    failed: int
    elapsed: float
    tokens: int
    cost: float

    def exhausted(self, budget: Budget) -> str | None:
        """Names the budget that is used up, or None."""
        if budget.trials is not None and self.trials >= budget.trials:
            return f"trials budget ({budget.trials} trials)"
        if budget.timeout is not None and self.elapsed >= budget.timeout:
            return f"time budget ({budget.timeout:g} s)"
        if budget.max_tokens is not None and self.tokens >= budget.max_tokens:
            return f"token budget ({budget.max_tokens:,} tokens)"
        if budget.max_cost is not None and self.cost >= budget.max_cost:
            return f"cost budget (${budget.max_cost:g})"
        return None


@dataclass(frozen=True)
class Status:
    """A snapshot for the progress display.

    Attributes:
        spent: What the study has used.
        budget: The budget.
        running: Trials of this process calling models or being graded.
        best: The incumbent's pooled mean score, or None.
        best_trial: The first trial of the incumbent's config.
        message: What just happened, or "".
        incumbent: Every run of the incumbent's config (mean, std, n), or None.
    """

    spent: Spent
    budget: Budget
    running: int
    best: float | None
    best_trial: int | None
    message: str = ""
    incumbent: ConfigRuns | None = None


@dataclass(frozen=True)
class TrialEnd:
    """How one trial of this session ended.

    Attributes:
        number: Trial number.
        state: ``COMPLETE``, ``PRUNED`` or ``FAIL``.
        values: Objective values of a complete trial.
        detail: The pruning reason or the error.
        cause: A failed trial's short cause (see :func:`optimizer._failures.error_cause`).
        transient: Whether the endpoint failed it and may answer later.
    """

    number: int
    state: TrialState
    values: tuple[float, ...] = ()
    detail: str = ""
    cause: str = ""
    transient: bool = False


@dataclass(frozen=True)
class Confirmation:
    """A top config after the confirm stage topped its pooled runs up.

    Attributes:
        number: The first trial that ran the config.
        repeats: Runs of the config (every trial's, racing's and the confirm stage's).
        scores: Score of each run.
        mean: Mean score.
        std: Sample standard deviation.
        lcb: One-sided 95% lower confidence bound of the mean (Student's t).
        max_rate: Share of runs that earned every point.
        max_score: Points a run can earn.
        tokens: Tokens the confirm stage spent on this config (every session).
        cost: Its estimated US dollars.
        config_key: The config's key (see :func:`optimizer._racing.config_key`).
        ucb: One-sided 95% upper confidence bound (with ``lcb``, a 90% interval).
    """

    number: int
    repeats: int
    scores: tuple[float, ...]
    mean: float
    std: float
    lcb: float
    max_rate: float
    max_score: float
    tokens: int
    cost: float
    config_key: str = ""
    ucb: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Returns the JSON form."""
        return {
            "config_key": self.config_key,
            "ucb": self.ucb,
            "number": self.number,
            "repeats": self.repeats,
            "scores": list(self.scores),
            "mean": self.mean,
            "std": self.std,
            "lcb": self.lcb,
            "max_rate": self.max_rate,
            "max_score": self.max_score,
            "tokens": self.tokens,
            "cost": self.cost,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Confirmation:
        """Builds it from the stored JSON form."""
        return cls(
            number=int(data["number"]),
            repeats=int(data["repeats"]),
            scores=tuple(float(s) for s in data["scores"]),
            mean=float(data["mean"]),
            std=float(data["std"]),
            lcb=float(data["lcb"]),
            max_rate=float(data["max_rate"]),
            max_score=float(data["max_score"]),
            tokens=int(data["tokens"]),
            cost=float(data["cost"]),
            config_key=str(data.get("config_key", "")),
            ucb=float(data.get("ucb", 0.0)),
        )


@dataclass(frozen=True)
class SearchSummary:
    """How a search ended.

    Attributes:
        study: Study name.
        stopped_by: What stopped it (a budget, an interrupt, repeated failures).
        spent: What the study has used in total.
        session_trials: Trials this session ran, in the order they ended.
        stale: Trials a killed process had left running, marked failed at start.
        best: The first trial of the best config (the incumbent: the highest lower bound
            over its pooled runs, among those with enough runs), or None.
        best_config: Its config.
        pareto: Trial numbers on the Pareto front (multi-objective studies).
        confirmations: The confirm stage's results, best first.
        exports: Files the best config was written to.
        objectives: The study's objectives.
        failures: When most trials share a low score, its most common causes.
        best_runs: Every run of the best config (mean, std, n, bounds), or None.
        rejected: Mutator answers the study rejected, counted by reason (``cut off by
            max_tokens``, ``near-duplicate``...).
        failed_by_cause: The study's failed trials counted by cause, most frequent first.
    """

    study: str
    stopped_by: str
    spent: Spent
    session_trials: tuple[TrialEnd, ...]
    stale: tuple[int, ...]
    best: FrozenTrial | None
    best_config: MoAConfig | None
    pareto: tuple[int, ...]
    confirmations: tuple[Confirmation, ...]
    exports: tuple[Path, ...]
    objectives: tuple[str, ...]
    failures: tuple[FailureCause, ...] = ()
    best_runs: ConfigRuns | None = None
    rejected: tuple[tuple[str, int], ...] = ()
    failed_by_cause: tuple[tuple[str, int], ...] = ()

    @property
    def interrupted(self) -> bool:
        """Whether a signal stopped the search."""
        return self.stopped_by.startswith("interrupt")


def make_sampler(
    name: str, *, seed: int | None, multi_objective: bool, startup_trials: int = 10
) -> BaseSampler:
    """Builds a sampler: ``tpe`` (multivariate, grouped), ``random``, ``gp`` or ``nsga2``.

    Raises:
        SearchError: Unknown name, ``gp`` without its dependencies, or ``gp`` for several
            objectives.
    """
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                multivariate=True,
                group=True,
                constant_liar=True,
                n_startup_trials=startup_trials,
                seed=seed,
            )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "gp":
        if multi_objective:
            raise SearchError("--sampler gp: supports one objective; use tpe or nsga2")
        if not all(importlib.util.find_spec(m) for m in ("torch", "scipy")):
            raise SearchError("--sampler gp: needs torch and scipy (pip install torch scipy)")
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials)
    raise SearchError(f"--sampler: unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _union_seconds(intervals: Sequence[tuple[float, float]]) -> float:
    total, end = 0.0, -math.inf
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def study_spent(
    study: optuna.Study, now: float | None = None, session: tuple[str, float] | None = None
) -> Spent:
    """Adds up what ``study`` has used: its trials, confirm runs and mutator calls.

    Args:
        study: The study.
        now: Epoch seconds taken as the end of the running session.
        session: The running session's attr key and start, which may not be stored yet.
    """
    trials = study.get_trials(deepcopy=False)
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    failed = sum(failed_run(t) for t in trials)
    tokens = sum(int(_number(t.user_attrs.get("tokens"))) for t in trials)
    cost = sum(_number(t.user_attrs.get("cost")) for t in trials)
    intervals: dict[str, tuple[float, float]] = {}
    for key, value in study.user_attrs.items():
        spend = key.startswith((f"{CONFIRM_ATTR}:", f"{MUTATION_SPEND_PREFIX}:", f"{RUNS_ATTR}:"))
        if spend and isinstance(value, dict):
            tokens += int(_number(value.get("tokens")))
            cost += _number(value.get("cost"))
        elif key.startswith(f"{SESSION_ATTR}:") and isinstance(value, list) and len(value) == 2:
            intervals[key] = (_number(value[0]), _number(value[1]))
    if session is not None:
        key, start = session
        intervals[key] = (start, time.time() if now is None else now)
    return Spent(finished, failed, _union_seconds(list(intervals.values())), tokens, cost)


def failed_run(trial: FrozenTrial) -> bool:
    """Whether ``trial`` failed after it started (not one sampled ahead that never ran)."""
    return trial.state == TrialState.FAIL and not str(trial.user_attrs.get("error")).startswith(
        NOT_RUN
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Marks failed the trials a dead process on this host left running.

    A running trial is stale when its ``worker`` attr names this host and a pid that no
    longer exists, or when it has no ``worker`` attr and started over ten minutes ago.
    Trials of live processes and of other hosts are left alone.

    Returns:
        The numbers of the trials marked failed.
    """
    host = socket.gethostname()
    now = datetime.now()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if isinstance(worker, dict):
            stale = worker.get("host") == host and not _pid_alive(int(worker.get("pid", 0)))
        else:
            started = trial.datetime_start or now
            stale = now - started > _STALE_UNOWNED
        if not stale:
            continue
        try:
            study._storage.set_trial_user_attr(
                trial._trial_id, "error", "interrupted: its process died (found on resume)"
            )
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except RuntimeError:  # another process got there first
            continue
        failed.append(trial.number)
    return failed


def _changed_fields(old: Any, new: Any, path: str = "") -> list[str]:
    """The dotted paths where two stored spaces differ (``main.prompts``, ``cycles.high``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        return [
            changed
            for key in keys
            for changed in _changed_fields(
                old.get(key), new.get(key), f"{path}.{key}" if path else str(key)
            )
        ]
    return [] if old == new else [path or "(the whole space)"]


def _space_key(space: SearchSpace) -> dict[str, Any]:
    data: dict[str, Any] = TypeAdapter(SearchSpace).dump_python(space, mode="json")
    data.pop("repeats", None)
    data.pop("mutation", None)
    data.pop("racing", None)
    return data


def _best_complete(study: optuna.Study) -> FrozenTrial | None:
    """The complete trial with the best mean score (on the Pareto front), earliest first."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    if len(study.directions) > 1:
        complete = study.best_trials
    return max(complete, key=lambda t: (t.values[0], -t.number))


class Search:
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
            study does not replay its draws) and the model calls (repeat ``r`` uses
            ``seed + r``; 0 if None).
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
        self._slots = _Slots(workers)
        self._sample_ahead = False
        self._stopped_by = ""

    # -- setup ---------------------------------------------------------------------------

    def open_study(self) -> optuna.Study:
        """Creates or loads the study; checks it was made with this space, objectives and task.

        Raises:
            SearchError: The study exists with other objectives, another search space or a
                task whose content changed; the message names what differs.
        """
        directions = [DIRECTIONS[name] for name in self.objectives]
        done = 0
        try:
            existing = optuna.load_study(study_name=self.study_name, storage=self.storage)
        except KeyError:
            existing = None
        if existing is not None:
            done = len(existing.get_trials(deepcopy=False))
            names = existing.user_attrs.get("objectives", ["score"])
            if list(names) != list(self.objectives):
                raise SearchError(
                    f"--objectives: study {self.study_name!r} optimises {','.join(names)}; "
                    "use the same objectives or a new --study name"
                )
        sampler = make_sampler(
            self.sampler_name,
            seed=None if self.seed is None else self.seed + done,
            multi_objective=len(self.objectives) > 1,
            startup_trials=self._startup_trials(),
        )
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=sampler,
            directions=directions,
            load_if_exists=True,
            pruner=make_pruner(self.pruner),
        )
        key = _space_key(self.space)
        with storage_lock(self.storage)():
            attrs = study.user_attrs
            if SPACE_ATTR not in attrs:
                study.set_user_attr(SPACE_ATTR, key)
                study.set_user_attr("objectives", list(self.objectives))
            elif attrs[SPACE_ATTR] != key:
                fields = ", ".join(_changed_fields(attrs[SPACE_ATTR], key))
                raise SearchError(
                    f"--space: study {self.study_name!r} was created with another search space "
                    f"(changed: {fields}); use a new --study name"
                )
            if self.task is not None:
                self._check_task(study, attrs.get(TASK_ATTR))
            if self.split is not None:
                store_split(study, self.split)
            racing = {
                "incumbent_runs": self.space.racing.incumbent_runs,
                "max_runs": self.space.racing.max_runs,
            }
            if attrs.get(RACING_ATTR) != racing:
                study.set_user_attr(RACING_ATTR, racing)
        return study

    def _check_task(self, study: optuna.Study, stored: Any) -> None:
        """Stores the task in a new study; refuses a resumed study whose task changed."""
        assert self.task is not None
        before = TaskRef.from_dict(stored)
        if before is None:  # a new study, or one made before tasks were remembered
            study.set_user_attr(TASK_ATTR, self.task.to_dict())
            return
        if before.fingerprint == self.task.fingerprint:
            return
        changed = ", ".join(changed_parts(before.parts, self.task.parts)) or "its content"
        raise SearchError(
            f"{self.task.source}: the task of study {self.study_name!r} changed since the study "
            f"started (changed: {changed}); its trials were scored on the old task: undo the "
            "change or use a new --study name"
        )

    def _startup_trials(self) -> int:
        if self.budget.trials is None:
            return 10
        return max(2, min(10, self.budget.trials // 3))

    def enqueue_baselines(self, study: optuna.Study, pool: PromptPool) -> list[str]:
        """Enqueues each baseline the study has not run (or queued) yet.

        Returns:
            The names enqueued.
        """
        enqueued = []
        with storage_lock(self.storage)():
            trials = study.get_trials(deepcopy=False)
            for name, config in self.baselines:
                taken = any(
                    t.user_attrs.get("baseline") == name and t.state != TrialState.FAIL
                    for t in trials
                )
                if taken:
                    continue
                params, target = self.space.baseline_params(config, pool.params_for)
                study.enqueue_trial(
                    params,
                    user_attrs={"baseline": name, "baseline_config": config_to_dict(target)},
                )
                enqueued.append(name)
        return enqueued

    # -- running -------------------------------------------------------------------------

    async def run(self) -> SearchSummary:
        """Runs the search until a budget or a signal stops it, then confirms and exports."""
        models = list(self.space.models)
        if self.space.mutation.every > 0:
            models.append(self.space.mutator_model)
        self.router.check(models)
        study = self.open_study()
        self._study = study
        stale = fail_stale_trials(study)
        pool = PromptPool(study)
        pool.ensure_seeds(self.space.seed_prompts())
        self.enqueue_baselines(study, pool)
        start = time.time()
        self._session = (f"{SESSION_ATTR}:{socket.gethostname()}:{os.getpid()}:{start:.3f}", start)
        loop = asyncio.get_running_loop()
        handled = self._install_signals(loop)
        try:
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
        return self._summary(study, stopped_by, tuple(stale), confirmations)

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[signal.Signals]:
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, loop, sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                continue
            installed.append(sig)
        return installed

    def _on_signal(self, loop: asyncio.AbstractEventLoop, sig: signal.Signals) -> None:
        first = self._interrupt is None
        self._interrupt = self._interrupt or f"interrupt ({sig.name})"
        if first and sig == signal.SIGINT:  # Ctrl-C: the running trials finish
            if self._study is not None:
                self._notify(
                    self._study,
                    self._slots.in_use,
                    f"Ctrl-C: no new trial starts; running trials finish ({self._slots.in_use} "
                    "now); Ctrl-C again stops at once and fails them",
                )
            return
        self._hard_stop = True
        loop.remove_signal_handler(sig)  # one more signal stops the process at once
        for task in self._tasks:
            task.cancel()

    def _save_session(self, study: optuna.Study, *, every: float = 0.0) -> None:
        """Stores this session's interval, if ``every`` seconds passed since the last time."""
        key, start = self._session
        now = time.time()
        if now - self._session_saved >= every:
            study.set_user_attr(key, [start, now])
            self._session_saved = now

    def _spent(self, study: optuna.Study) -> Spent:
        return study_spent(study, session=self._session)

    def _stop_reason(self, spent: Spent) -> str | None:
        if self._interrupt:
            return self._interrupt
        return self._streak.stop_reason(time.monotonic()) or spent.exhausted(self.budget)

    async def _loop(self, study: optuna.Study, pool: PromptPool) -> str:
        """Keeps ``workers`` trials calling models, and one more sampled ahead when it pays.

        When sampling a trial (asking, suggesting, writing its config) took over
        :data:`SAMPLE_AHEAD_SHARE` of its model calls and grading, as with a fast endpoint
        and many trials of TPE, the next trial is sampled while the running ones call
        models, and waits for a worker slot. It is then sampled without the running
        trials' scores (they count as constant liars, as with parallel workers), so with
        slow trials, where sampling costs nothing, trials are sampled once a slot is free.
        When a budget stops the search, a trial still waiting is marked failed: it never ran.
        """
        running: set[asyncio.Task[TrialEnd]] = set()
        mutation: asyncio.Task[None] | None = None
        stopped_by: str | None = None
        self._notify(study, 0, "started")
        while True:
            spent = self._spent(study)  # once per turn: it reads every trial and study attr
            stopped_by = stopped_by or self._stop_reason(spent)
            if stopped_by is None and (mutation is None or mutation.done()):
                mutation = self._maybe_mutate(study, pool)  # none once a budget is reached
            while stopped_by is None and self._room(spent, running):
                task = asyncio.create_task(self._trial(study, pool))
                running.add(task)
                self._tasks.add(task)
            if stopped_by is not None and not self._stopped_by:
                self._stopped_by = stopped_by
                self._slots.close()  # a trial without a slot now never gets one
            pause = 0.0 if stopped_by else self._streak.pause(time.monotonic())
            if not running and not pause:
                break
            timeout = None if stopped_by else self._time_left(spent)
            if pause:  # the endpoint is failing: no new trial until the pause ends
                timeout = pause if timeout is None else min(timeout, pause)
            done: set[asyncio.Task[TrialEnd]] = set()
            if running:
                done, _ = await asyncio.wait(
                    running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            else:  # in short steps, so that a Ctrl-C is seen at once
                await asyncio.sleep(min(timeout or 0.0, 1.0))
            for task in done:
                running.discard(task)
                self._tasks.discard(task)
                if task.cancelled():
                    continue
                end = task.result()
                self._ends.append(end)
                wait = self._streak.ended(
                    failed=end.state == TrialState.FAIL,
                    transient=end.transient,
                    detail=end.detail,
                    now=time.monotonic(),
                )
                note = f"; the endpoint is failing: new trials wait {wait:.0f} s" if wait else ""
                self._notify(study, self._slots.in_use, _describe(end) + note)
            if done:
                await asyncio.to_thread(self._save_session, study, every=SESSION_SAVE_EVERY)
        if mutation is not None and not mutation.done():
            if self._interrupt:
                mutation.cancel()
            await asyncio.gather(mutation, return_exceptions=True)  # a round in flight ends
        self._notify(study, 0, f"stopped by {stopped_by}")
        return stopped_by or "nothing to do"

    def _room(self, spent: Spent, running: set[asyncio.Task[TrialEnd]]) -> bool:
        """Whether to start one more trial: for a free worker or ahead, within the budget."""
        if len(running) >= self.workers + (1 if self._sample_ahead else 0):
            return False
        if self._streak.pause(time.monotonic()):
            return False
        return self.budget.trials is None or spent.trials + len(running) < self.budget.trials

    def _time_left(self, spent: Spent) -> float | None:
        if self.budget.timeout is None:
            return None
        return max(0.05, self.budget.timeout - spent.elapsed)

    def _maybe_mutate(self, study: optuna.Study, pool: PromptPool) -> asyncio.Task[None] | None:
        mutation = self.space.mutation
        if self._interrupt or not pool.mutation_due(mutation.every):
            return None

        async def mutate() -> None:
            try:
                generations = await mutation_round(
                    study,
                    pool,
                    self.router,
                    self.space.mutator_model,
                    mutation.variants,
                    task=self.tasks[0].prompt,
                    temperature=mutation.temperature,
                    max_tokens=mutation.max_tokens,
                    catalog=self.catalog,
                    function_name=self.tasks[0].function_name,
                    allow_code=mutation.allow_code,
                )
            except Exception as error:  # the search goes on with the pool it has
                self._notify(study, 0, f"mutation round failed: {type(error).__name__}: {error}")
                return
            made = ", ".join(f"{g.role} g{g.number} ({len(g.variants)} new)" for g in generations)
            self._notify(study, 0, f"mutation round {pool.rounds}: {made or 'no new prompts'}")

        task = asyncio.create_task(mutate())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _trial(self, study: optuna.Study, pool: PromptPool) -> TrialEnd:
        started = time.perf_counter()
        trial = _ask(study)  # on the loop: trials claim slots in the order of their numbers
        claim = self._slots.claim()
        spend = Spend()
        try:
            values = await self.objective(trial, pool, spend, slot=self._slot(claim, started))
        except optuna.TrialPruned as pruned:
            await asyncio.to_thread(study.tell, trial, state=TrialState.PRUNED)
            return TrialEnd(trial.number, TrialState.PRUNED, detail=str(pruned))
        except asyncio.CancelledError:
            detail = f"{NOT_RUN} the search was stopped by {self._stopped_by}"
            if self._hard_stop and self._interrupt:
                detail = self._interrupt
            _fail(study, trial, detail)
            self._ends.append(TrialEnd(trial.number, TrialState.FAIL, detail=detail))
            raise
        except Exception as error:  # a failed trial must not end the search
            detail, cause = f"{type(error).__name__}: {error}", error_cause(error)
            transient = isinstance(error, ProviderError) and error.transient
            await asyncio.to_thread(_fail, study, trial, detail, cause)
            return TrialEnd(trial.number, TrialState.FAIL, (), detail, cause, transient)
        finally:
            self._slots.release(claim)
        try:
            await asyncio.to_thread(study.tell, trial, values)
        except asyncio.CancelledError:  # the tell goes on in its thread
            self._ends.append(TrialEnd(trial.number, TrialState.COMPLETE, tuple(values)))
            raise
        return TrialEnd(trial.number, TrialState.COMPLETE, tuple(values))

    @contextlib.asynccontextmanager
    async def _slot(self, claim: asyncio.Future[None], started: float) -> AsyncIterator[None]:
        """Waits for ``claim``'s worker slot and frees it at the end of the block.

        The block's time against the sampling time before it (from ``started``) decides
        whether the next trials are sampled ahead.

        Raises:
            asyncio.CancelledError: The search stopped before the claim got a slot.
        """
        sampling = time.perf_counter() - started
        await claim
        granted = time.perf_counter()
        try:
            yield
        finally:
            self._slots.release(claim)
            running = time.perf_counter() - granted
            self._sample_ahead = sampling > SAMPLE_AHEAD_SHARE * running

    def _notify(self, study: optuna.Study, running: int, message: str) -> None:
        if self.observer is None:
            return
        leader = self._leader(study)
        self.observer(
            Status(
                spent=self._spent(study),
                budget=self.budget,
                running=running,
                best=None if leader is None else leader.mean,
                best_trial=None if leader is None else min(leader.trials, default=None),
                message=message,
                incumbent=leader,
            )
        )

    def _leader(self, study: optuna.Study) -> ConfigRuns | None:
        """The best config over its pooled runs (see :func:`optimizer._racing.rank_key`)."""
        return best_config(study_runs(study), self.space.racing.incumbent_runs)

    # -- confirm and summary -------------------------------------------------------------

    def _candidates(self, study: optuna.Study) -> list[ConfigRuns]:
        """The configs the confirm stage tops up: the ``confirm_top`` best pooled means.

        In a multi-objective study, only configs of trials on the Pareto front.
        """
        pools = list(study_runs(study).values())
        if len(self.objectives) > 1:
            front = {t.number for t in study.best_trials}
            pools = [p for p in pools if front.intersection(p.trials)]
        # optimistic: the best means get the runs that tell them apart (racing already gave
        # a config that came close to the incumbent its runs, so a lone lucky run is rare here)
        ranked = sorted(pools, key=lambda p: (-p.mean, -p.n, min(p.trials)))
        return ranked[: self.confirm_top]

    async def _confirm(self, study: optuna.Study) -> list[Confirmation]:
        gate = asyncio.Semaphore(self.workers)
        seed = self.seed or 0

        async def one(runs: ConfigRuns) -> None:
            missing = self.confirm_repeats - runs.n
            if missing <= 0:
                return
            number = min(runs.trials)
            config = config_from_dict(runs.config, f"trial {number}")
            async with gate:
                self._notify(study, 0, f"confirming the config of trial {number}")
                first = self.objective.reserve(runs, missing)
                try:
                    evaluation = await evaluate(
                        config,
                        self.tasks,
                        self.router,
                        self.objective.grader,
                        repeats=missing,
                        seed=seed,
                        first=first,
                        catalog=self.catalog,
                    )
                except Exception as error:  # report the others
                    self._notify(study, 0, f"confirming trial {number} failed: {error}")
                    return
            path = transcript_path(self.study_dir, number)
            write_transcript(path.with_name(f"{number}-confirm-{first}.jsonl"), evaluation)
            record = {
                "config": runs.config,
                "repeats": list(evaluation.repeat_indices),
                "scores": list(evaluation.scores),
                "max_score": evaluation.max_score,
                "tokens": evaluation.prompt_tokens + evaluation.completion_tokens,
                "cost": evaluation.cost,
            }
            await asyncio.to_thread(study.set_user_attr, f"{RUNS_ATTR}:{runs.key}:{first}", record)

        candidates = self._candidates(study)
        tasks = [asyncio.create_task(one(c)) for c in candidates]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)
        pools = study_runs(study)
        spend = _confirm_spend(study)
        found = [
            _confirmation(pools[c.key], spend.get(c.key, (0, 0.0)))
            for c in candidates
            if c.key in pools
        ]
        runs = self.space.racing.incumbent_runs
        return sorted(found, key=lambda c: rank_key(pools[c.config_key], runs), reverse=True)

    def _summary(
        self,
        study: optuna.Study,
        stopped_by: str,
        stale: tuple[int, ...],
        confirmations: list[Confirmation],
    ) -> SearchSummary:
        pareto: tuple[int, ...] = ()
        best: FrozenTrial | None = None
        leader: ConfigRuns | None = None
        if len(self.objectives) > 1:
            if study.get_trials(states=(TrialState.COMPLETE,)):
                pareto = tuple(sorted(t.number for t in study.best_trials))
            best = _best_complete(study)
        else:
            leader = self._leader(study)
            best = None if leader is None else study.trials[min(leader.trials)]
        config = None
        exports: tuple[Path, ...] = ()
        if best is not None:
            config = config_from_dict(best.user_attrs["config"], f"trial {best.number}")
            if leader is None:
                leader = study_runs(study).get(str(best.user_attrs.get("config_key")))
            exports = write_best(
                config, leader, self.study_dir / "best.json", best.number, self.task
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
            best_runs=leader,
            rejected=rejection_counts(study),
            failed_by_cause=cause_counts(
                [t for t in study.get_trials(deepcopy=False) if failed_run(t)]
            ),
        )


def rejection_counts(study: optuna.Study) -> tuple[tuple[str, int], ...]:
    """How many mutator answers the study rejected, by reason, most frequent first."""
    counts: dict[str, int] = {}
    for name, value in study.user_attrs.items():
        if name.startswith(f"{REJECTED_PREFIX}:") and isinstance(value, list):
            for item in value:
                reason = str(item.get("reason", "")) if isinstance(item, dict) else ""
                kind = reason.split(" (")[0].split(" of ")[0]
                counts[kind] = counts.get(kind, 0) + 1
    return tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _confirm_spend(study: optuna.Study) -> dict[str, tuple[int, float]]:
    """Tokens and cost of the confirm stage's runs, by config key."""
    spend: dict[str, tuple[int, float]] = {}
    for name, value in study.user_attrs.items():
        parts = name.split(":")
        if len(parts) == 3 and parts[0] == RUNS_ATTR and isinstance(value, dict):
            tokens, cost = spend.get(parts[1], (0, 0.0))
            spend[parts[1]] = (
                tokens + int(_number(value.get("tokens"))),
                cost + _number(value.get("cost")),
            )
    return spend


def _confirmation(runs: ConfigRuns, spend: tuple[int, float]) -> Confirmation:
    return Confirmation(
        number=min(runs.trials),
        repeats=runs.n,
        scores=runs.scores,
        mean=runs.mean,
        std=runs.std,
        lcb=runs.lcb,
        max_rate=runs.max_rate,
        max_score=runs.max_score,
        tokens=spend[0],
        cost=spend[1],
        config_key=runs.key,
        ucb=runs.ucb,
    )


class _Slots:
    """Worker slots, granted in the order they were claimed."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._queue: deque[asyncio.Future[None]] = deque()
        self._held: set[asyncio.Future[None]] = set()
        self._closed = False

    @property
    def in_use(self) -> int:
        """Slots held."""
        return len(self._held)

    def claim(self) -> asyncio.Future[None]:
        """Queues a claim, done once it holds a slot (cancelled once the slots are closed)."""
        claim = asyncio.get_running_loop().create_future()
        if self._closed:
            claim.cancel()
            return claim
        self._queue.append(claim)
        self._grant()
        return claim

    def release(self, claim: asyncio.Future[None]) -> None:
        """Frees the slot ``claim`` holds, or withdraws it; again, it does nothing."""
        if claim in self._held:
            self._held.discard(claim)
            self._free += 1
        elif not claim.done():
            claim.cancel()
        self._grant()

    def close(self) -> None:
        """Grants no more slots: cancels the claims waiting and every later one."""
        self._closed = True
        for claim in self._queue:
            claim.cancel()
        self._queue.clear()

    def _grant(self) -> None:
        while self._free > 0 and self._queue:
            claim = self._queue.popleft()
            if not claim.done():
                self._free -= 1
                self._held.add(claim)
                claim.set_result(None)


def _ask(study: optuna.Study) -> optuna.Trial:
    """A new trial, owned by this process (its ``worker`` attr)."""
    trial = study.ask()
    trial.set_user_attr("worker", worker_id())
    return trial


def _fail(study: optuna.Study, trial: optuna.Trial, error: str, cause: str = "") -> None:
    """Marks ``trial`` failed with its ``error`` (and ``cause``) attr, unless it finished."""
    try:
        trial.set_user_attr("error", error)
        if cause:
            trial.set_user_attr(CAUSE_ATTR, cause)
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    except RuntimeError:  # finished meanwhile (a tell still running in its thread)
        pass


def _describe(end: TrialEnd) -> str:
    if end.state == TrialState.COMPLETE:
        values = ", ".join(f"{v:.4g}" for v in end.values)
        return f"trial {end.number} finished: {values}"
    if end.state == TrialState.PRUNED:
        return f"trial {end.number} pruned: {end.detail}"
    return f"trial {end.number} failed: {end.detail}"


def summary_dict(summary: SearchSummary) -> dict[str, Any]:
    """Returns the summary as JSON-ready data."""
    best = summary.best
    return {
        "study": summary.study,
        "stopped_by": summary.stopped_by,
        "spent": {
            "trials": summary.spent.trials,
            "failed": summary.spent.failed,
            "elapsed": summary.spent.elapsed,
            "tokens": summary.spent.tokens,
            "cost": summary.spent.cost,
        },
        "session_trials": [
            {
                "number": e.number,
                "state": e.state.name,
                "values": list(e.values),
                "detail": e.detail,
            }
            for e in summary.session_trials
        ],
        "stale": list(summary.stale),
        "best": None
        if best is None
        else {
            "number": best.number,
            "values": best.values,
            **{
                k: best.user_attrs.get(k)
                for k in ("mean", "std", "scores", "max_score", "max_rate", "test_pass_rates")
            },
        },
        "best_runs": None if summary.best_runs is None else summary.best_runs.stats(),
        "best_config": None if summary.best_config is None else config_to_dict(summary.best_config),
        "pareto": list(summary.pareto),
        "rejected_variants": dict(summary.rejected),
        "failed_by_cause": dict(summary.failed_by_cause),
        "confirmations": [c.to_dict() for c in summary.confirmations],
        "exports": [str(p) for p in summary.exports],
        "objectives": list(summary.objectives),
        "failures": [
            {"message": f.message, "trials": f.trials, "out_of": f.out_of} for f in summary.failures
        ],
    }
