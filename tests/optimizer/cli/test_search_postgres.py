"""``moa-opt search`` workers on one PostgreSQL study: started at the same instant, or dying."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from moa_cli import ROOT, moa_env
from openai_server import OpenAIServer
from optuna.trial import TrialState
from search_helpers import seed_responder

from optimizer._prompts import MUTATION_SPEND_PREFIX, PromptPool
from optimizer._racing import config_key, study_runs
from optimizer._storage import open_storage

pytestmark = pytest.mark.postgres

SMOKE = ROOT / "search_spaces" / "smoke.yaml"
WORKERS = 6

# A worker: imports everything first, waits for the agreed instant, then runs moa-opt's main
# as the console script does; so every worker opens the storage at the same moment.
_AT_INSTANT = """
import sys, time
import optimizer.cli, optimizer.cli.search, optuna, sqlalchemy, psycopg
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
sys.exit(optimizer.cli.main(sys.argv[2:]))
"""


@pytest.fixture
def fresh_database(postgres_url: str) -> Iterator[str]:
    """A URL whose tables go to a new, empty schema (a fresh database for Optuna)."""
    schema = f"fresh_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


def test_workers_started_at_once_on_a_fresh_database_finish_one_study(
    tmp_path: Path, fresh_database: str
) -> None:
    env = moa_env()
    with OpenAIServer(seed_responder, latency=0.05) as server:
        instant = time.time() + 8  # after every worker's imports
        args = ["search", "--space", str(SMOKE), "--study", "many", "--trials", "12"]
        args += ["--storage", fresh_database, "--base-url", server.base_url]
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", _AT_INSTANT, str(instant), *args],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(WORKERS)
        ]
        outs = [worker.communicate(timeout=600) for worker in workers]
    failed = [err for worker, (_, err) in zip(workers, outs, strict=True) if worker.returncode]
    assert not failed, failed
    assert all("Search 'many' stopped by trials budget" in out for out, _ in outs), outs
    study = optuna.load_study(study_name="many", storage=open_storage("many", fresh_database))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    # every process's running trials count against the budget: exactly 12, not one per worker more
    assert len(complete) == 12
    assert len({t.user_attrs["worker"]["pid"] for t in complete}) > 1
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert sum("baseline" in t.user_attrs for t in study.trials) == 1
    # the smoke space mutates every 4 completed trials: each round ran once, by one worker
    pool = PromptPool(study)
    assert 1 <= pool.rounds <= 12 // 4
    for role in ("main", "layer"):
        generations = pool.generations(role)
        assert [g.number for g in generations] == list(range(len(generations)))
    spenders = [k.split(":")[1] for k in study.user_attrs if k.startswith(MUTATION_SPEND_PREFIX)]
    assert sorted(spenders) == sorted(set(spenders))


# A worker on "another host": its own UTS namespace with another hostname (we run as root).
_FAR_HOST = "far-host"
_ELSEWHERE = ["unshare", "--uts", "sh", "-c", f'hostname {_FAR_HOST} && exec "$@"', "sh"]


def test_a_worker_killed_on_another_host_loses_its_trial_to_a_retry_and_nothing_else(
    tmp_path: Path, fresh_database: str
) -> None:
    env = moa_env()
    args = ["-m", "optimizer", "search", "--space", str(SMOKE), "--study", "dying"]
    args += ["--storage", fresh_database, "--heartbeat-interval", "1", "--grace-period", "6"]
    storage = open_storage("dying", fresh_database)

    def trials() -> list[optuna.trial.FrozenTrial]:
        try:
            return optuna.load_study(study_name="dying", storage=storage).trials
        except KeyError:  # not created yet
            return []

    with OpenAIServer(seed_responder, latency=0.5) as server:  # a trial takes seconds
        far = subprocess.Popen(
            [*_ELSEWHERE, sys.executable, *args, "--trials", "40", "--base-url", server.base_url],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def mid_trial() -> bool:  # one trial done, the next one calling models
            done = [t for t in trials() if t.state == TrialState.COMPLETE]
            return bool(done) and any(
                t.state == TrialState.RUNNING and "config" in t.user_attrs for t in trials()
            )

        deadline = time.monotonic() + 300
        while not mid_trial():
            assert far.poll() is None, far.communicate()
            assert time.monotonic() < deadline, "the far worker never got mid-trial"
            time.sleep(0.1)
        far.kill()  # SIGKILL, mid-trial
        far.communicate()
        before = {t.number: t for t in trials()}
        killed = [t for t in before.values() if t.state == TrialState.RUNNING]
        assert killed  # the one calling models, perhaps one sampled ahead too
        kept = [t for t in before.values() if t.state == TrialState.COMPLETE]
        target = len(kept) + len(killed) + 1
        near = subprocess.run(
            [sys.executable, *args, "--trials", str(target), "--base-url", server.base_url],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert near.returncode == 0, near.stderr
    assert f"stopped by trials budget ({target} trials)" in near.stdout
    listed = ", ".join(str(t.number) for t in killed)
    assert f"Marked failed (their worker had died): trials {listed}" in near.stdout
    after = {t.number: t for t in trials()}
    assert not [t for t in after.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    pooled = study_runs(optuna.load_study(study_name="dying", storage=storage))
    for trial in killed:  # failed with the cause, and run again once with the same config
        assert trial.user_attrs["worker"] == {"host": _FAR_HOST, "pid": far.pid}
        dead = after[trial.number]
        assert dead.state == TrialState.FAIL
        assert dead.user_attrs["error"] == f"heartbeat lost (worker {_FAR_HOST}:{far.pid})"
        (retry,) = [t for t in after.values() if t.user_attrs.get("retry_of") == trial.number]
        assert retry.state == TrialState.COMPLETE and retry.number > trial.number
        assert retry.system_attrs["failed_trial"] == trial.number
        # what it had sampled (all of it once its config was written; nothing if it was
        # sampled ahead and killed before its suggestions) is kept
        assert trial.params.items() <= retry.params.items()
        assert retry.user_attrs["worker"]["host"] != _FAR_HOST
        assert "error" not in retry.user_attrs
        if "config" in trial.user_attrs:  # written before its first model call
            assert retry.user_attrs["config"] == trial.user_attrs["config"]
            assert retry.number in pooled[config_key(trial.user_attrs["config"])].trials
    for trial in kept:  # nothing completed is lost
        assert after[trial.number].state == TrialState.COMPLETE
        assert after[trial.number].values == trial.values
    assert sum(t.state == TrialState.COMPLETE for t in after.values()) == target
