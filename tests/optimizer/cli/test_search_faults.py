"""`moa-opt search` against an endpoint that fails in bursts, and a runs dir that fails a write."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import optuna
from moa_cli import ROOT, moa_opt
from openai_server import Bursts, OpenAIServer
from optuna.trial import TrialState
from search_helpers import seed_responder

from optimizer._storage import open_storage

SMOKE = ROOT / "search_spaces" / "smoke.yaml"
OUTAGE = 4.0
"""Seconds of all-503 answers: longer than a call's retries (0.5 + 1 s with --max-retries 2)."""
CUT = "connection error (RemoteProtocolError)"


def by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def load(tmp_path: Path, name: str = "smoke") -> optuna.Study:
    storage = open_storage(name, runs_dir=tmp_path / "runs")
    return optuna.load_study(study_name=name, storage=storage)


def test_the_search_rides_out_an_outage_throttling_and_cut_connections(tmp_path: Path) -> None:
    bursts = Bursts(
        outage_after=40, outage_seconds=OUTAGE, throttle_every=5, retry_after=0.2, cut_every=7
    )
    with OpenAIServer(seed_responder, bursts=bursts) as server:
        done = moa_opt(
            "search", "--space", str(SMOKE), "--trials", "10", "--workers", "3",
            "--max-retries", "2", "--confirm-repeats", "0", "--no-cache",
            "--base-url", server.base_url, cwd=tmp_path,
        )  # fmt: skip
        requests = server.chat_requests
        ((_, outage_end),) = server.outages
    assert done.returncode == 0, done.stderr
    assert "Search 'smoke' stopped by trials budget (10 trials)." in done.stdout
    faults = [r.fault for r in requests]
    assert {"outage", "throttle", "cut"} <= set(faults)
    # the study went on after the outage: trials started and completed once it ended
    assert any(r.started >= outage_end and r.fault == "" for r in requests)
    assert "the endpoint is failing: new trials wait" in done.stderr

    trials = load(tmp_path).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(complete) == 10  # no completed trial lost: each has its scores and transcript
    for trial in complete:
        assert len(trial.user_attrs["scores"]) >= 2
        assert (tmp_path / trial.user_attrs["transcript"]).is_file()
    # a call's last retry may also meet a cut connection or a 429 as the outage ends
    causes = Counter(t.user_attrs["cause"] for t in failed)
    assert causes["model call: HTTP 503"] >= 1, causes
    assert set(causes) <= {f"model call: {c}" for c in ("HTTP 503", "HTTP 429", CUT)}, causes
    for trial in failed:
        assert trial.user_attrs["error"].startswith("ProviderError: ")
        assert trial.user_attrs["error"].endswith("(after 2 retries)")
    shown = ", ".join(f"{n} {cause}" for cause, n in sorted(causes.items(), key=by_count))
    assert f"Failed trials by cause: {shown}" in done.stdout
    assert f"{len(failed)} failed" in done.stdout


def test_a_transcript_that_cannot_be_written_costs_its_trial_nothing_else(
    tmp_path: Path,
) -> None:
    trials_dir = tmp_path / "runs" / "smoke" / "trials"
    (trials_dir / "2.jsonl.tmp").mkdir(parents=True)  # trial 2's transcript cannot be written
    with OpenAIServer(seed_responder) as server:
        done = moa_opt(
            "search", "--space", str(SMOKE), "--trials", "4", "--confirm-repeats", "0",
            "--base-url", server.base_url, cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "stopped by trials budget (4 trials)" in done.stdout
    trials = load(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    broken = trials[2].user_attrs
    assert broken["transcript_error"].startswith("IsADirectoryError:")
    assert "transcript" not in broken and broken["scores"] and "mean" in broken
    assert all((tmp_path / trials[n].user_attrs["transcript"]).is_file() for n in (0, 1, 3))
