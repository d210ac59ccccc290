from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import yaml
from moa_cli import ROOT, moa_opt
from openai_server import OpenAIServer
from optuna.trial import TrialState
from search_helpers import seed_responder

from optimizer._prompts import PromptPool
from optimizer._storage import open_storage

SMOKE = ROOT / "search_spaces" / "smoke.yaml"


def space_file(tmp_path: Path, **changes: object) -> Path:
    data = yaml.safe_load(SMOKE.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def spawn(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """Starts ``python -m optimizer ARGS`` without cloud keys, as ``moa_opt`` does."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.pop("MOA_BASE_URL", None)
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", "optimizer", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def study(tmp_path: Path, name: str = "smoke") -> optuna.Study:
    storage = open_storage(name, runs_dir=tmp_path / "runs")
    return optuna.load_study(study_name=name, storage=storage)


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[str]) -> None:
    """Polls ``condition`` while ``process`` runs (no timing assert: a generous deadline)."""
    deadline = time.monotonic() + 120
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.1)


def completed(tmp_path: Path, name: str = "smoke") -> int:
    journal = tmp_path / "runs" / name / "journal.log"
    if not journal.exists():
        return 0
    try:
        trials = study(tmp_path, name).get_trials(states=(TrialState.COMPLETE,))
    except KeyError:  # the study is not created yet
        return 0
    return len(trials)


def test_search_runs_the_smoke_space_and_prints_the_summary(tmp_path: Path) -> None:
    with OpenAIServer(seed_responder) as server:
        done = moa_opt(
            "search", "--space", str(SMOKE), "--trials", "4", "--workers", "2",
            "--base-url", server.base_url, cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Search 'smoke' stopped by trials budget (4 trials)." in out
    assert "Best config: trial" in out and "Config:" in out
    assert "fresh runs after it was chosen" in out and "95% interval" in out
    assert "Best single run" in out
    assert (
        "Exported: runs/smoke/best.json (workshop JSON), runs/smoke/best.yaml (YAML), "
        "runs/smoke/best.stats.json (statistics)"
    ) in out
    assert json.loads((tmp_path / "runs" / "smoke" / "best.json").read_text())["ai_configuration"]
    stats = json.loads((tmp_path / "runs" / "smoke" / "best.stats.json").read_text())
    assert stats["n"] >= 6  # confirmed by default: topped up to 6 runs
    assert (tmp_path / "runs" / "smoke" / "best.yaml").read_text().startswith("# Best config")
    assert "trials 4/4 done" in done.stderr and "incumbent " in done.stderr
    trials = study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert trials[0].user_attrs["baseline"] == "workshop-default"
    assert all((tmp_path / t.user_attrs["transcript"]).exists() for t in trials)


MULTI_LINE = "You write Python.\nFirst line of rules.\n\nAfter a blank line: {helper_response}"


def test_multi_line_prompts_print_and_export_as_literal_blocks(tmp_path: Path) -> None:
    template = "Earlier answers:\n\n{responses}\n\nFix them."
    space = space_file(
        tmp_path,
        main={"prompts": [MULTI_LINE]},
        layer_agents={"prompts": [MULTI_LINE]},
        aggregation_template=[template],
        mutation={"every": 0},
    )
    with OpenAIServer(seed_responder) as server:
        done = moa_opt(
            "search", "--space", str(space), "--study", "lit", "--trials", "2",
            "--base-url", server.base_url, cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    block = ["system_prompt: |-", "  You write Python.", "  First line of rules.", ""]
    block.append("  After a blank line: {helper_response}")
    summary = done.stdout.split("Config:\n", 1)[1]
    assert "\n".join("    " + line if line else "" for line in block) in summary
    assert "aggregation_template: |-\n    Earlier answers:\n\n    {responses}\n" in summary
    best = (tmp_path / "runs" / "lit" / "best.yaml").read_text()
    assert "\n".join("  " + line if line else "" for line in block) in best
    exported = moa_opt("export", "--study", "lit", "--format", "yaml", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == best
    config = yaml.safe_load(best)
    assert config["main"]["system_prompt"] == MULTI_LINE
    assert config["aggregation_template"] == template


def test_json_summary_and_overrides(tmp_path: Path) -> None:
    with OpenAIServer(seed_responder) as server:
        done = moa_opt(
            "search", "--space", str(SMOKE), "--study", "tiny", "--trials", "2", "--repeats", "1",
            "--agent-max-tokens", "7", "--base-url", server.base_url, "--json",
            "--incumbent-runs", "1", "--confirm-repeats", "0", cwd=tmp_path,
        )  # fmt: skip
        max_tokens = {r.body["max_tokens"] for r in server.chat_requests}
        seeds = {r.body["seed"] for r in server.chat_requests}
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["study"] == "tiny" and summary["stopped_by"] == "trials budget (2 trials)"
    assert summary["best"]["scores"] and len(summary["best"]["scores"]) == 1
    # --repeats 1: every call has seed 0, or a replica's offset of it (identical agents)
    assert max_tokens == {7} and {seed % 1_000_003 for seed in seeds} == {0}
    assert summary["exports"] == [
        "runs/tiny/best.json",
        "runs/tiny/best.yaml",
        "runs/tiny/best.stats.json",
    ]


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--trials", "3"], "trials budget (3 trials)"),
        (["--timeout", "1"], "time budget (1 s)"),
        (["--max-tokens", "100"], "token budget (100 tokens)"),
        (["--max-cost", "0.0001"], "cost budget ($0.0001)"),
    ],
)
def test_each_budget_flag_stops_the_search(tmp_path: Path, flags: list[str], named: str) -> None:
    with OpenAIServer(seed_responder, latency=0.1) as server:
        done = moa_opt(
            "search", "--space", str(SMOKE), *flags, "--base-url", server.base_url, cwd=tmp_path
        )
    assert done.returncode == 0, done.stderr
    assert f"stopped by {named}." in done.stdout


def test_resume_after_sigkill_keeps_completed_trials(tmp_path: Path) -> None:
    with OpenAIServer(seed_responder, latency=0.3) as server:
        args = ("search", "--space", str(SMOKE), "--workers", "2", "--base-url", server.base_url)
        process = spawn(*args, "--trials", "40", cwd=tmp_path)
        wait_for(lambda: completed(tmp_path) >= 3, process)
        process.kill()  # SIGKILL: no chance to clean up
        process.communicate()
        before = {t.number: t for t in study(tmp_path).trials}
        kept = [n for n, t in before.items() if t.state == TrialState.COMPLETE]
        lost = [n for n, t in before.items() if t.state == TrialState.RUNNING]
        assert len(kept) >= 3  # and almost always a trial in flight (lost)
        target = len(kept) + 2
        done = moa_opt(*args, "--trials", str(target), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"stopped by trials budget ({target} trials)" in done.stdout
    if lost:
        marked = ", ".join(map(str, sorted(lost)))
        assert f"Marked failed (their worker had died): trials {marked}" in done.stdout
    after = study(tmp_path).trials
    for number in kept:
        assert after[number].state == TrialState.COMPLETE
        assert after[number].values == before[number].values
        assert after[number].params == before[number].params
    for number in lost:
        assert after[number].state == TrialState.FAIL
        assert "process died" in after[number].user_attrs["error"]
    assert sum(t.state == TrialState.COMPLETE for t in after) == target
    assert not [t for t in after if t.state == TrialState.RUNNING]


def test_sigterm_stops_cleanly_with_a_summary(tmp_path: Path) -> None:
    with OpenAIServer(seed_responder, latency=0.3) as server:
        process = spawn(
            "search", "--space", str(SMOKE), "--trials", "40", "--base-url", server.base_url,
            cwd=tmp_path,
        )  # fmt: skip
        wait_for(lambda: completed(tmp_path) >= 1, process)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "stopped by interrupt (SIGTERM)." in out and "Best config: trial" in out
    trials = study(tmp_path).trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert all(t.user_attrs["error"] == "interrupt (SIGTERM)" for t in failed)


def test_two_worker_processes_share_one_study_and_its_prompt_pool(tmp_path: Path) -> None:
    space = space_file(tmp_path, mutation={"every": 2, "variants": 2})
    with OpenAIServer(seed_responder, latency=0.2) as server:
        args = ("search", "--space", str(space), "--study", "shared", "--trials", "12")
        first = spawn(*args, "--base-url", server.base_url, cwd=tmp_path)
        second = spawn(*args, "--base-url", server.base_url, cwd=tmp_path)
        outs = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    shared = study(tmp_path, "shared")
    trials = shared.trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 12  # the other process's running trials count against the budget
    assert len({t.user_attrs["worker"]["pid"] for t in complete}) == 2
    assert sum("baseline" in t.user_attrs for t in trials) == 1
    # both stopped on one budget: one of them ran the confirm stage, the other left it
    assert len([k for k in shared.user_attrs if k.startswith("fresh:")]) == 1
    pool = PromptPool(shared)
    assert pool.rounds >= 2
    for role in ("main", "layer"):
        generations = pool.generations(role)
        assert [g.number for g in generations] == list(range(len(generations)))
    # every prompt a trial used is in the shared pool
    for trial in complete:
        config = trial.user_attrs["config"]
        texts = {v.text for v in pool.variants()}
        assert config["main"]["system_prompt"] in texts


def test_an_invalid_space_is_a_one_line_error(tmp_path: Path) -> None:
    bad = space_file(tmp_path, cycles={"low": 2, "high": 1})
    done = moa_opt("search", "--space", str(bad), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == f"moa-opt: error: {bad}: cycles: low (2) > high (1)"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--heartbeat-interval", "10", "--grace-period", "10"],
            "--grace-period: must be longer than the heartbeat interval (10 s), got 10",
        ),
        (["--grace-period", "20"], "--grace-period: must be longer than the heartbeat interval"),
        (["--heartbeat-interval", "0"], "argument --heartbeat-interval: must be at least 1, got 0"),
        (
            ["--grace-period", "soon"],
            "argument --grace-period: expected a whole number, got 'soon'",
        ),
        (["--heartbeat-interval", "5"], "--heartbeat-interval: only with a database --storage"),
        (["--grace-period", "60"], "--grace-period: only with a database --storage"),
    ],
)
def test_heartbeat_flags_are_checked_in_one_line(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    done = moa_opt("search", "--space", str(SMOKE), *flags, cwd=tmp_path)  # the default journal
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "runs" / "smoke" / "trials").exists()  # no trial ran


def test_studies_lists_trial_counts_and_best_scores(tmp_path: Path) -> None:
    with OpenAIServer(seed_responder) as server:
        for name in ("one", "two"):
            done = moa_opt(
                "search", "--space", str(SMOKE), "--study", name, "--trials", "2",
                "--base-url", server.base_url, cwd=tmp_path,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
    listed = moa_opt("studies", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["study"] for r in rows] == ["one", "two"]
    for row in rows:
        assert (row["complete"], row["failed"], row["running"]) == (2, 0, 0)
        assert row["best"] is not None and row["objectives"] == ["score"]
        # the best config's pooled statistics: confirmed by default to 6 runs
        assert row["n"] >= 6 and row["lcb"] <= row["best"] <= row["best_run"]
        stats = json.loads((tmp_path / "runs" / row["study"] / "best.stats.json").read_text())
        assert (stats["n"], stats["mean"], stats["lcb"]) == (row["n"], row["best"], row["lcb"])
    table = moa_opt("studies", cwd=tmp_path)
    assert "one" in table.stdout and "two" in table.stdout
    journal = tmp_path / "runs" / "one" / "journal.log"
    single = moa_opt("studies", "--storage", str(journal), "--json", cwd=tmp_path)
    assert [r["study"] for r in json.loads(single.stdout)] == ["one"]


def test_without_bubblewrap_the_search_stops_before_any_model_call(tmp_path: Path) -> None:
    with OpenAIServer(seed_responder) as server:
        done = moa_opt(
            "search", "--space", str(SMOKE), "--trials", "2", "--base-url", server.base_url,
            cwd=tmp_path, env={"PATH": str(tmp_path), "MOA_UNISOLATED": ""},
        )  # fmt: skip
        requests = list(server.chat_requests)
    assert done.returncode == 2
    assert "untrusted code is not run without isolation" in done.stderr
    assert "Traceback" not in done.stderr
    assert requests == []
