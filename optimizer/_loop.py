"""The ask/tell loop: trials as asyncio tasks on worker slots, budgets, signals, mutation rounds.

A trial's path: :meth:`TrialLoop._loop` starts :meth:`TrialLoop._trial` while there is room,
which asks the study, waits for a worker slot (:class:`optimizer._slots.Slots`), runs the
objective (:class:`optimizer._objective.Objective`) and tells the study how it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from graders._base import Task
from optimizer._budget import NOT_RUN, Budget, Spent, study_spent
from optimizer._catalog import Catalog
from optimizer._failures import CAUSE_ATTR, FailureStreak, error_cause
from optimizer._objective import Objective, Spend, worker_id
from optimizer._prompts import PromptPool, mutation_round
from optimizer._racing import ConfigRuns, best_config, study_runs
from optimizer._slots import Slots
from optimizer._space import SearchSpace
from optimizer._stale import Heartbeats, fail_stale_trials, heartbeat_storage, may_finish
from optimizer._storage import storage_lock
from optimizer._summary import Status, TrialEnd
from optimizer.providers import ProviderError, Router

__all__ = ["TrialLoop"]

SESSION_SAVE_EVERY = 10.0
"""Seconds between saves of the running session's interval (a killed run loses at most this)."""
MAX_CONSECUTIVE_FAILURES = 3
SAMPLE_AHEAD_SHARE = 0.02
"""The next trial is sampled ahead once sampling took over this share of a trial's run."""
STALE_CHECK_EVERY = 5.0
"""Seconds between checks for trials of dead workers (the heartbeat interval, if longer)."""
WAIT_STEP = 1.0
"""Seconds between looks at the study while other processes' trials hold the trials budget."""


class TrialLoop:
    """Runs the trials of a :class:`optimizer._study.Search` (its base class)."""

    space: SearchSpace
    storage: BaseStorage
    tasks: tuple[Task, ...]
    router: Router
    catalog: Catalog
    budget: Budget
    workers: int
    objective: Objective
    observer: Callable[[Status], None] | None
    _interrupt: str | None
    _hard_stop: bool
    _study: optuna.Study | None
    _tasks: set[asyncio.Task[Any]]
    _session: tuple[str, float]
    _session_saved: float
    _ends: list[TrialEnd]
    _streak: FailureStreak
    _slots: Slots
    _sample_ahead: bool
    _stopped_by: str
    _full_until: float
    _heartbeats: Heartbeats
    _stale: list[int]
    _stale_due: float

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
        stop = self._streak.stop_reason(time.monotonic())
        if stop:
            return stop
        return spent.exhausted(self.budget)

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
        running: set[asyncio.Task[TrialEnd | None]] = set()
        mutation: asyncio.Task[None] | None = None
        stopped_by: str | None = None
        waiting = False
        self._notify(study, 0, "started")
        self._stale_due = time.monotonic() + self._stale_every()
        while True:
            if time.monotonic() >= self._stale_due:
                await self._fail_stale(study)
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
            if not running and stopped_by is not None:
                break
            pause = 0.0 if stopped_by else self._streak.pause(time.monotonic())
            if not running:  # the endpoint is failing, or others' trials hold the budget
                if not waiting and not pause:
                    self._notify(study, 0, "waiting: other workers' trials hold the budget")
                waiting = not pause
                await asyncio.sleep(min(pause, WAIT_STEP) if pause else WAIT_STEP)
                continue
            waiting = False
            timeout = None if stopped_by else self._time_left(spent)
            if pause:  # the endpoint is failing: no new trial until the pause ends
                timeout = pause if timeout is None else min(timeout, pause)
            done, _ = await asyncio.wait(
                running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                running.discard(task)
                self._tasks.discard(task)
                if task.cancelled():
                    continue
                end = task.result()
                if end is None:  # other processes' trials hold the rest of the budget
                    self._full_until = time.monotonic() + WAIT_STEP
                    continue
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

    def _room(self, spent: Spent, running: set[asyncio.Task[TrialEnd | None]]) -> bool:
        """Whether to start one more trial: for a free worker or ahead, within the budget.

        Trials running in other processes also count against the trials budget: once
        :meth:`_ask` found it taken, no trial starts for :data:`WAIT_STEP` seconds.
        """
        if len(running) >= self.workers + (1 if self._sample_ahead else 0):
            return False
        if time.monotonic() < self._full_until or self._streak.pause(time.monotonic()):
            return False
        return self.budget.trials is None or spent.trials + len(running) < self.budget.trials

    def _stale_every(self) -> float:
        beats = heartbeat_storage(self.storage)
        interval = 0 if beats is None else beats.heartbeat_interval or 0
        return max(STALE_CHECK_EVERY, float(interval))

    async def _fail_stale(self, study: optuna.Study) -> None:
        """Fails the trials of dead workers (retried once with heartbeats; see optimizer._stale)."""
        found = await asyncio.to_thread(fail_stale_trials, study)
        self._stale_due = time.monotonic() + self._stale_every()
        if found:
            self._stale += found
            listed = ", ".join(map(str, found))
            self._notify(study, self._slots.in_use, f"trials of dead workers failed: {listed}")

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
                    problems=len(self.tasks),
                    temperature=mutation.temperature,
                    max_tokens=mutation.max_tokens,
                    catalog=self.catalog,
                    function_names=[t.function_name for t in self.tasks if t.function_name],
                    allow_code=mutation.allow_code,
                    seed=self.objective.seed,
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

    async def _trial(self, study: optuna.Study, pool: PromptPool) -> TrialEnd | None:
        """Runs one new trial; None if other processes took the rest of the trials budget."""
        started = time.perf_counter()
        trial = self._ask(study)  # on the loop: trials claim slots in the order of their numbers
        if trial is None:
            return None
        try:
            return await self._run(study, pool, trial, started)
        finally:
            self._heartbeats.discard(trial._trial_id)

    def _ask(self, study: optuna.Study) -> optuna.Trial | None:
        """A new trial of this process, or None once the trials budget is taken.

        Under the storage's cross-process lock, the trials running in every process count
        against the budget with the finished ones (as Optuna's ``MaxTrialsCallback`` counts,
        but in one step with the ask), so workers started at once never overshoot it. A
        running trial whose worker cannot be watched (another host, without heartbeats) is
        not counted (see :func:`optimizer._stale.may_finish`).
        """
        if self.budget.trials is None:
            trial = _ask(study)
        else:
            beats = heartbeat_storage(self.storage) is not None
            with storage_lock(self.storage)():
                counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
                trials = study.get_trials(deepcopy=False, states=counted)
                if sum(may_finish(t, heartbeats=beats) for t in trials) >= self.budget.trials:
                    return None
                trial = _ask(study)
        self._heartbeats.add(trial._trial_id)
        return trial

    async def _run(
        self, study: optuna.Study, pool: PromptPool, trial: optuna.Trial, started: float
    ) -> TrialEnd:
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
        except UpdateFinishedTrialError:  # another worker failed it (heartbeat lost)
            return await asyncio.to_thread(_late, study, trial.number)
        except Exception as error:  # a failed trial must not end the search
            detail, cause = f"{type(error).__name__}: {error}", error_cause(error)
            transient = isinstance(error, ProviderError) and error.transient
            await asyncio.to_thread(_fail, study, trial, detail, cause)
            return TrialEnd(trial.number, TrialState.FAIL, (), detail, cause, transient)
        finally:
            self._slots.release(claim)
        try:
            told = await asyncio.to_thread(study.tell, trial, values, skip_if_finished=True)
        except asyncio.CancelledError:  # the tell goes on in its thread
            self._ends.append(TrialEnd(trial.number, TrialState.COMPLETE, tuple(values)))
            raise
        if told.state != TrialState.COMPLETE:  # another worker failed it (heartbeat lost)
            return _late(study, trial.number)
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


def _ask(study: optuna.Study) -> optuna.Trial:
    """A new trial, owned by this process (its ``worker`` attr)."""
    with warnings.catch_warnings():  # our heartbeats are recorded by optimizer._stale
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used")
        trial = study.ask()
    trial.set_user_attr("worker", worker_id())
    return trial


def _late(study: optuna.Study, number: int) -> TrialEnd:
    """A trial another worker finished (failed, its heartbeat lost) before this one could."""
    trial = study.get_trials(deepcopy=False)[number]
    why = trial.user_attrs.get("error", "failed by another worker")
    return TrialEnd(number, trial.state, detail=f"{why}; its result came late")


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
