"""A search whose grader raises, or whose endpoint stays down, goes on or stops as it should."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from openai_server import OpenAIServer
from optuna.trial import TrialState
from search_helpers import KeywordGrader, keyword_task, seed_responder

import optimizer._failures
from graders._base import GradeResult, Task
from optimizer._catalog import Catalog
from optimizer._space import space_from_dict
from optimizer._storage import open_storage
from optimizer._study import Budget, Search, SearchSummary
from optimizer.providers import Router

ROOT = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_dict(
    {"default": {"input_per_million": 1.0, "output_per_million": 2.0, "context_window": 8192}}
)


class FlakyGrader(KeywordGrader):
    """Raises on its ``fail_on``-th answer (counted from 1), grades the others."""

    def __init__(self, fail_on: int) -> None:
        self.fail_on = fail_on
        self.graded = 0
        self._lock = threading.Lock()

    def grade(self, response: str, task: Task) -> GradeResult:
        with self._lock:
            self.graded += 1
            mine = self.graded
        if mine == self.fail_on:
            raise RuntimeError("the grader tripped over this answer")
        return super().grade(response, task)


def run(tmp_path: Path, server: OpenAIServer, grader: KeywordGrader, **options: Any) -> Search:
    data = yaml.safe_load((ROOT / "search_spaces" / "smoke.yaml").read_text())
    data["mutation"]["every"] = 0
    runs = tmp_path / "runs"
    return Search(
        space_from_dict(data, "smoke"),
        study_name="smoke",
        storage=open_storage("smoke", runs_dir=runs),
        study_dir=runs / "smoke",
        tasks=[keyword_task("kw")],
        grader=grader,
        router=Router(base_url=server.base_url, max_retries=0),
        catalog=CATALOG,
        **options,
    )


def finish(search: Search) -> tuple[SearchSummary, list[optuna.trial.FrozenTrial]]:
    summary = asyncio.run(search.run())
    storage = open_storage("smoke", runs_dir=search.study_dir.parent)
    return summary, optuna.load_study(study_name="smoke", storage=storage).trials


def test_a_grader_that_raises_fails_its_trial_and_the_search_goes_on(tmp_path: Path) -> None:
    with OpenAIServer(seed_responder) as server:
        summary, trials = finish(
            run(tmp_path, server, FlakyGrader(fail_on=3), budget=Budget(trials=5), workers=2)
        )
    assert summary.stopped_by == "trials budget (5 trials)"
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1
    attrs = failed[0].user_attrs
    assert attrs["cause"] == "grader: RuntimeError"
    assert attrs["error"].startswith("GradingError: grader keywords failed on kw (repeat ")
    assert attrs["error"].endswith("RuntimeError: the grader tripped over this answer")
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 5
    assert summary.failed_by_cause == (("grader: RuntimeError", 1),)


def test_an_endpoint_that_stays_down_pauses_new_trials_then_stops_the_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(optimizer._failures, "MIN_PAUSE", 0.5)
    monkeypatch.setattr(optimizer._failures, "MAX_PAUSE", 1.0)
    monkeypatch.setattr(optimizer._failures, "MAX_OUTAGE", 4.0)
    with OpenAIServer(seed_responder) as server:
        server.outage(3600.0)
        summary, trials = finish(
            run(tmp_path, server, KeywordGrader(), budget=Budget(trials=5), workers=2)
        )
    assert summary.stopped_by.startswith("repeated failures (the endpoint failed every trial for ")
    assert all(t.state == TrialState.FAIL for t in trials)
    assert summary.failed_by_cause == (("model call: HTTP 503", len(trials)),)
    # Failing at once (no retries), two workers would fail hundreds of trials in 4 s; paused
    # for 0.5 to 1 s after each failure, at most two per pause (plus one sampled ahead).
    assert len(trials) <= 3 * (4.0 / 0.5 + 1)
