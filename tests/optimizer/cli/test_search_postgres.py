"""Several ``moa-opt search`` workers on one PostgreSQL study, started at the same instant."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from moa_cli import ROOT
from openai_server import OpenAIServer
from optuna.trial import TrialState
from search_helpers import seed_responder

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
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.pop("MOA_BASE_URL", None)
    env["PYTHONPATH"] = str(ROOT)
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
    # the budget counts the study's finished trials; when it is reached each process still
    # finishes its running trial and the one it sampled ahead (other processes' running
    # trials are not counted against the budget today)
    assert 12 <= len(complete) <= 12 + 2 * WORKERS
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert sum("baseline" in t.user_attrs for t in study.trials) == 1
