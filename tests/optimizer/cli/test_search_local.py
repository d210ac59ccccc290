"""The main job, end to end on the real embedded model (tiny token budgets)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from moa_cli import moa_opt

from optimizer import load_config, load_study

pytestmark = pytest.mark.local_model


def test_search_on_the_embedded_model_exports_a_reproducible_best(tmp_path: Path) -> None:
    done = moa_opt(
        "search",
        "--trials", "2",
        "--repeats", "1",
        "--agent-max-tokens", "12",
        "--json",
        cwd=tmp_path,
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    study = load_study("challenge", None, runs_dir=tmp_path / "runs")
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 2
    # Trial 0 is the workshop's starting config mapped onto the embedded models.
    baseline = trials[0].user_attrs["config"]
    assert baseline["cycles"] == 1
    assert baseline["layer_agents"][0]["system_prompt"].startswith("Help with the coding task.")
    for trial in trials:
        attrs = trial.user_attrs
        assert attrs["completion_tokens"] > 0
        assert 0 <= attrs["mean"] <= 120
        # a run makes 1 + cycles x layer agents calls; racing may have run the config again
        assert len(attrs["scores"]) == attrs["repeats"] == len(attrs["repeat_indices"])
        assert attrs["calls"] == attrs["repeats"] * (
            1 + attrs["config"]["cycles"] * len(attrs["config"]["layer_agents"])
        )
        for agent in [attrs["config"]["main"], *attrs["config"]["layer_agents"]]:
            assert agent["model"].startswith("local/qwen2.5-coder-")
            assert agent["max_tokens"] == 12
        transcript = tmp_path / "runs" / "challenge" / "trials" / f"{trial.number}.jsonl"
        assert transcript.exists()
    best = load_config(tmp_path / "runs" / "challenge" / "best.yaml")
    assert all(a.max_tokens == 12 for a in [best.main, *best.layer_agents])
    # the best is the config with the highest lower bound over its pooled runs (topped up
    # to 6 by the confirm stage), then run 6 fresh times; both sets of statistics beside it
    stats = json.loads((tmp_path / "runs" / "challenge" / "best.stats.json").read_text())
    search = stats["search"]
    assert summary["best_runs"]["n"] == search["n"] >= 6
    assert stats["confirmed"] and stats["n"] == summary["fresh_runs"]["n"] == 6
    assert min(stats["repeats"]) >= 1_000_000  # seeds no search run used
    assert stats["ci_low"] <= stats["mean"] <= stats["ci_high"]
    workshop = json.loads((tmp_path / "runs" / "challenge" / "best.json").read_text())
    assert set(workshop) == {"ai_configuration", "exported_at", "version"}
    # Reproduce the best config's search runs from the cache: repeat indices 0..n-1 with the
    # search's seed give the same scores, no new tokens.
    assert search["repeats"] == list(range(search["n"]))
    again = moa_opt(
        "reproduce", str(tmp_path / "runs" / "challenge" / "best.yaml"),
        "--repeats", str(search["n"]), "--task", "challenge", "--json",
        cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    reproduced = json.loads(again.stdout)["configs"][0]
    assert reproduced["scores"] == search["scores"]
    assert reproduced["cache_hits"] == reproduced["calls"] > 0
    assert reproduced["completion_tokens"] == 0
