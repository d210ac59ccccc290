"""Stale trials on an RDB storage with heartbeats (a real SQLite database)."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from optimizer._objective import worker_id
from optimizer._stale import RETRY_OF_ATTR, Heartbeats, fail_stale_trials, may_finish
from optimizer._storage import open_storage

GRACE = 1


def test_a_trial_without_heartbeats_is_failed_with_its_cause_and_retried_once(
    tmp_path: Path,
) -> None:
    storage = open_storage("s", f"sqlite:///{tmp_path / 's.db'}", heartbeat=(1, GRACE))
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.enqueue_trial({"x": 0.5}, user_attrs={"baseline": "workshop-default"})
    far = study.ask()  # its worker on another host dies after one heartbeat
    far.suggest_float("x", 0.0, 1.0)
    far.set_user_attr("worker", {"host": "far-host", "pid": 4242})
    far.set_user_attr("tokens", 99)
    beating = study.ask()  # its worker on another host lives: heartbeats every second
    beating.set_user_attr("worker", {"host": "far-host", "pid": 4343})
    near = study.ask()  # this process: one heartbeat, but its pid is alive
    near.set_user_attr("worker", worker_id())
    with Heartbeats(storage) as beats:
        for trial in (far, beating, near):
            beats.add(trial._trial_id)
        beats.discard(far._trial_id)
        beats.discard(near._trial_id)
        time.sleep(GRACE + 2.5)  # the grace period passes (the database clock counts seconds)
        assert fail_stale_trials(study) == [far.number]
    trials = study.trials
    assert trials[far.number].state == TrialState.FAIL
    assert trials[far.number].user_attrs["error"] == "heartbeat lost (worker far-host:4242)"
    assert trials[beating.number].state == TrialState.RUNNING
    assert trials[near.number].state == TrialState.RUNNING  # never stale while its pid lives
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.params == {"x": 0.5}
    assert retry.distributions == {"x": FloatDistribution(0.0, 1.0)}
    # the attrs it was queued with stay; what the dead run wrote is made again
    assert retry.user_attrs == {"baseline": "workshop-default", RETRY_OF_ATTR: far.number}

    again = study.ask()  # the retry is asked next, and its worker dies too
    assert again.number == retry.number and again.params == {"x": 0.5}
    again.set_user_attr("worker", {"host": "far-host", "pid": 4444})
    study._storage.record_heartbeat(again._trial_id)
    time.sleep(GRACE + 2.5)
    assert sorted(fail_stale_trials(study)) == [beating.number, again.number]
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1  # beating's; not again's


def test_without_heartbeats_another_hosts_trial_is_left_alone_and_not_counted(
    tmp_path: Path,
) -> None:
    storage = open_storage("j", runs_dir=tmp_path / "runs")
    study = optuna.create_study(study_name="j", storage=storage)
    far = study.ask()
    far.set_user_attr("worker", {"host": "far-host", "pid": 4242})
    near = study.ask()
    near.set_user_attr("worker", worker_id())
    assert fail_stale_trials(study) == []
    far_frozen, near_frozen = study.trials
    assert not may_finish(far_frozen, heartbeats=False)  # may never end: not counted
    assert may_finish(far_frozen, heartbeats=True)  # failed after the grace period if dead
    assert may_finish(near_frozen, heartbeats=False)
