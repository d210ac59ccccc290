"""Stale trials: trials left RUNNING by a worker process that died."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

import optuna
from optuna.trial import TrialState

__all__ = ["fail_stale_trials"]

_STALE_UNOWNED = timedelta(minutes=10)


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
