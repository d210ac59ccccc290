"""optuna-dashboard reads our studies (journal file and PostgreSQL) through its HTTP API."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
import sqlalchemy
from conftest import strict
from moa_cli import ROOT, moa_opt
from openai_server import OpenAIServer
from optuna.trial import TrialState
from optuna_dashboard._serializer import MAX_ATTR_LENGTH
from search_helpers import seed_responder

from optimizer._storage import open_storage

SMOKE = ROOT / "search_spaces" / "smoke.yaml"
DASHBOARD = Path(sys.executable).with_name("optuna-dashboard")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def search(folder: Path, storage: str | None) -> optuna.Study:
    """Runs a small real search (study ``dash``) and returns the study as Optuna reads it."""
    where = [] if storage is None else ["--storage", storage]
    with OpenAIServer(seed_responder) as server:
        done = moa_opt(
            "search", "--space", str(SMOKE), "--study", "dash", "--trials", "3",
            "--base-url", server.base_url, *where, cwd=folder,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    opened = open_storage("dash", storage, runs_dir=folder / "runs")
    return optuna.load_study(study_name="dash", storage=opened)


@pytest.fixture
def dashboard() -> Iterator[Any]:
    """Starts optuna-dashboard on loopback for a storage; yields a function that does so."""
    if not DASHBOARD.exists():
        if strict():
            pytest.fail("optuna-dashboard is not installed: run the tests with `make test`")
        pytest.skip("optuna-dashboard is not installed (the dev extra has it)")
    started: list[subprocess.Popen[str]] = []

    def start(storage: str, cwd: Path) -> str:
        port = free_port()
        process = subprocess.Popen(
            [str(DASHBOARD), storage, "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                httpx.get(f"{url}/api/studies", timeout=5)
                return url
            except httpx.TransportError:
                assert time.monotonic() < deadline, "optuna-dashboard never answered"
                time.sleep(0.2)

    yield start
    for process in started:
        process.terminate()
        process.communicate(timeout=30)


def read_back(url: str, study: optuna.Study) -> None:
    """Checks the dashboard's view of ``study``: its trials, values and our user attrs."""
    summaries = httpx.get(f"{url}/api/studies", timeout=30).json()["study_summaries"]
    found = [s for s in summaries if s["study_name"] == "dash"]
    assert len(found) == 1, summaries
    detail = httpx.get(f"{url}/api/studies/{found[0]['study_id']}?after=0", timeout=30).json()
    assert detail["name"] == "dash" and detail["directions"] == ["maximize"]
    theirs = {t["number"]: t for t in detail["trials"]}
    ours = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(ours) == 3 and sorted(theirs) == sorted(t.number for t in study.trials)
    for trial in ours:
        shown = theirs[trial.number]
        assert shown["state"] == "Complete"
        assert shown["values"] == trial.values
        attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
        # The dashboard cuts JSON-encoded attrs at MAX_ATTR_LENGTH characters.
        config = json.dumps(trial.user_attrs["config"])
        assert attrs["config"] == config[:MAX_ATTR_LENGTH] and attrs["config"].startswith('{"main"')
        assert float(attrs["mean"]) == trial.user_attrs["mean"]
        assert attrs["transcript"] == trial.user_attrs["transcript"]
        assert attrs["transcript"].startswith("runs/dash/trials/")
    study_attrs = {a["key"] for a in found[0]["user_attrs"]}
    assert {"space", "task", "objectives"} <= study_attrs


def test_dashboard_reads_our_journal(tmp_path: Path, dashboard: Any) -> None:
    study = search(tmp_path, None)
    url = dashboard("runs/dash/journal.log", tmp_path)
    read_back(url, study)


@pytest.mark.postgres
def test_dashboard_reads_our_postgresql_study(
    tmp_path: Path, dashboard: Any, postgres_url: str
) -> None:
    schema = f"dash_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    try:
        storage = f"{postgres_url}?options=-csearch_path%3D{schema}"
        study = search(tmp_path, storage)
        read_back(dashboard(storage, tmp_path), study)
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()
