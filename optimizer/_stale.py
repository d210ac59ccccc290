"""Stale trials: trials left RUNNING by a worker process that died, on any host.

Every storage: a running trial whose ``worker`` attr names this host and a pid that no
longer exists is stale, and so is one with no ``worker`` attr that started over ten minutes
ago. With an RDB storage opened with heartbeats (``moa-opt search --storage URL``), each
process records a heartbeat of its running trials every ``heartbeat_interval`` seconds
(:class:`Heartbeats`), and a trial whose last heartbeat is older than the grace period is
stale whichever host ran it. Stale trials are marked failed with the cause in their
``error`` attr; with heartbeats on, each is retried once: a copy of it with the same
parameters is queued (Optuna's :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import threading
import warnings
from datetime import datetime, timedelta
from types import TracebackType

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

__all__ = ["RETRY_OF_ATTR", "Heartbeats", "fail_stale_trials", "heartbeat_storage", "may_finish"]

_STALE_UNOWNED = timedelta(minutes=10)
RETRY_OF_ATTR = "retry_of"
"""Trial user attr of a retried trial: the number of the stale trial it re-runs."""
_KEPT_ON_RETRY = ("baseline", "baseline_config")
"""User attrs a retried trial keeps (those set when it was queued); the rest it makes again."""


def heartbeat_storage(storage: BaseStorage | None) -> RDBStorage | None:
    """The RDB storage under ``storage`` if it records heartbeats, else None."""
    inner = getattr(storage, "_backend", storage)  # optuna wraps RDBStorage in _CachedStorage
    if isinstance(inner, RDBStorage) and inner.heartbeat_interval is not None:
        return inner
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _worker(trial: FrozenTrial) -> str:
    worker = trial.user_attrs.get("worker")
    if isinstance(worker, dict):
        return f"{worker.get('host')}:{worker.get('pid')}"
    return "unknown"


def _stale_cause(trial: FrozenTrial, host: str, now: datetime, lost: set[int]) -> str | None:
    """Why ``trial`` is stale, or None if its worker may still be running it."""
    worker = trial.user_attrs.get("worker")
    if isinstance(worker, dict) and worker.get("host") == host:  # its pid says it all
        if _pid_alive(int(worker.get("pid", 0))):
            return None
        return f"interrupted: its process died (worker {_worker(trial)})"
    if not isinstance(worker, dict) and now - (trial.datetime_start or now) > _STALE_UNOWNED:
        return "interrupted: its process died (no worker recorded)"
    if trial._trial_id in lost:
        return f"heartbeat lost (worker {_worker(trial)})"
    return None


def may_finish(trial: FrozenTrial, *, heartbeats: bool) -> bool:
    """Whether ``trial`` is finished, or running in a process that is alive or watched.

    A running trial is watched with heartbeats (a dead worker's trial is failed after the
    grace period), else when its worker is on this host (failed once its pid is gone) or
    not recorded yet. Without heartbeats, another host's running trial may never end.
    """
    if trial.state != TrialState.RUNNING or heartbeats:
        return True
    worker = trial.user_attrs.get("worker")
    return not isinstance(worker, dict) or worker.get("host") == socket.gethostname()


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Marks failed the running trials whose worker died; with heartbeats, retries each once.

    Trials of live processes are left alone; without heartbeats so are those of other hosts.
    When several processes find the same stale trial, one marks it failed and retries it.

    Returns:
        The numbers of the trials this call marked failed.
    """
    storage = study._storage
    beats = heartbeat_storage(storage)
    lost = set(beats._get_stale_trial_ids(study._study_id)) if beats is not None else set()
    host = socket.gethostname()
    now = datetime.now()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        cause = _stale_cause(trial, host, now, lost)
        if cause is None:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "error", cause)
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except RuntimeError:  # another process got there first
            continue
        failed.append(trial.number)
        if beats is not None:
            _retry(study, trial)
    return failed


def _retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queues a copy of ``trial`` with its parameters, once (a retry's own retry is not)."""
    kept = {k: v for k, v in trial.user_attrs.items() if k in _KEPT_ON_RETRY}
    original = trial.system_attrs.get("failed_trial", trial.number)
    attempt = copy.deepcopy(trial)
    attempt.user_attrs = {**kept, RETRY_OF_ATTR: original}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=1)(study, attempt)


class Heartbeats:
    """Records a heartbeat of this process's running trials (a thread), if the storage has them.

    Use as a context manager around the trials; :meth:`add` each trial when it is asked and
    :meth:`discard` it once it finished.

    Args:
        storage: The study's storage; without heartbeats this records nothing.
    """

    def __init__(self, storage: BaseStorage) -> None:
        self._storage = heartbeat_storage(storage)
        self._trials: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, trial_id: int) -> None:
        """Records a heartbeat of ``trial_id`` now, and every interval until it is discarded."""
        if self._storage is None:
            return
        self._storage.record_heartbeat(trial_id)
        with self._lock:
            self._trials.add(trial_id)

    def discard(self, trial_id: int) -> None:
        """Stops recording heartbeats of ``trial_id``."""
        with self._lock:
            self._trials.discard(trial_id)

    def __enter__(self) -> Heartbeats:
        if self._storage is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="heartbeats", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _beat(self) -> None:
        assert self._storage is not None and self._storage.heartbeat_interval is not None
        while not self._stop.wait(self._storage.heartbeat_interval):
            with self._lock:
                trials = list(self._trials)
            for trial_id in trials:
                with contextlib.suppress(Exception):  # a lost connection: the next beat retries
                    self._storage.record_heartbeat(trial_id)
