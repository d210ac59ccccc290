"""A user's JSONL suite searched on its dev problems and validated on the held-out ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import yaml
from moa_cli import ROOT, moa_opt
from openai_server import OpenAIServer
from optuna.trial import TrialState
from search_helpers import asks_mutator
from suite_helpers import PROBLEMS, mentioned, suite_responder, write_suite

from optimizer._best import BEST_ATTR, FRESH_ATTR
from optimizer._prompts import REJECTED_PREFIX, PromptPool
from optimizer._storage import open_storage

SMOKE = ROOT / "search_spaces" / "smoke.yaml"


def suite_space(tmp_path: Path, every: int = 2) -> Path:
    write_suite(tmp_path / "mini.jsonl")
    space = yaml.safe_load(SMOKE.read_text())
    space["task"] = "mini.jsonl"
    del space["grader"]  # a suite brings its own
    space["repeats"] = 1
    space["main"]["prompts"].append("Be careful: write one correct function. {helper_response}")
    space["mutation"]["every"] = every
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def load(tmp_path: Path, name: str) -> optuna.Study:
    storage = open_storage(name, runs_dir=tmp_path / "runs")
    return optuna.load_study(study_name=name, storage=storage)


def test_search_sees_dev_only_and_validate_reports_the_held_out_problems(tmp_path: Path) -> None:
    space = suite_space(tmp_path)
    with OpenAIServer(suite_responder) as server:
        searched = moa_opt(
            "search", "--space", str(space), "--study", "mini", "--trials", "6",
            "--dev-size", "3", "--split-seed", "2", "--confirm-repeats", "4",
            "--confirm-top", "2", "--base-url", server.base_url, cwd=tmp_path,
        )  # fmt: skip
        assert searched.returncode == 0, searched.stderr
        search_requests = [r.body for r in server.chat_requests]
        validated = moa_opt(
            "validate", "--study", "mini", "--json", "--base-url", server.base_url, cwd=tmp_path
        )
        validate_requests = [r.body for r in server.chat_requests][len(search_requests) :]
    assert validated.returncode == 0, validated.stderr
    study = load(tmp_path, "mini")
    split = study.user_attrs["split"]
    dev = {task_id.split("/")[1] for task_id in split["dev"]}
    test = {task_id.split("/")[1] for task_id in split["test"]}
    assert split["seed"] == 2 and len(dev) == 3 and len(test) == 5
    assert dev | test == set(PROBLEMS) and not dev & test
    # the search (trials, mutation rounds, the confirm stage) never sent a test problem
    mutator = [b for b in search_requests if asks_mutator(b)]
    assert mutator, "a mutation round ran"
    # the confirm stage chose a config and ran it fresh (its top-up runs are there only when
    # racing left a top config short of --confirm-repeats, which depends on the call seeds)
    assert BEST_ATTR in study.user_attrs, "the confirm stage chose a config"
    fresh = [key for key in study.user_attrs if key.startswith(f"{FRESH_ATTR}:")]
    assert fresh, "the chosen config ran fresh"
    seen = set().union(*(mentioned(body) for body in search_requests))
    assert seen == dev, seen
    assert set().union(*(mentioned(body) for body in validate_requests)) == test

    data = json.loads(validated.stdout)
    assert data["split"] == "test" and data["problems"] == 5
    names = [row["config"] for row in data["results"]]
    assert names == ["found", "single-call", "self-consistency", "workshop-default"]
    for row in data["results"]:
        assert 0.0 <= row["ci_low"] <= row["pass_at_1"] <= row["ci_high"] <= 1.0
        assert row["tokens"] > 0 and len(row["runs"]) == 5
        assert {"answer", "feedback", "score"} <= set(row["runs"][0])
    found, single = data["results"][0], data["results"][1]
    # the responder solves a problem when the main agent is asked carefully, or when it is
    # model-b and the problem's name has an even length; so each config's pass@1 is known
    main = study.trials[data["trial"]].user_attrs["config"]["main"]
    lucky = [main["model"] == "model-b" and len(name) % 2 == 0 for name in sorted(test)]
    careful = "careful" in main["system_prompt"].lower()
    assert found["pass_at_1"] == (1.0 if careful else sum(lucky) / 5)
    assert single["pass_at_1"] == sum(lucky) / 5  # a plain prompt is never careful
    assert single["diff"] == found["pass_at_1"] - single["pass_at_1"]
    assert single["diff_low"] <= single["diff"] <= single["diff_high"]
    stored = study.user_attrs["validate:test"]
    assert [row["config"] for row in stored["results"]] == names
    assert "runs" not in stored["results"][0]
    assert (tmp_path / "runs" / "mini" / "validate" / "test-found.jsonl").is_file()
    # studies and export show it
    listed = moa_opt("studies", "--json", cwd=tmp_path)
    (row,) = json.loads(listed.stdout)
    assert row["validations"]["test"]["results"][0]["pass_at_1"] == found["pass_at_1"]
    table = moa_opt("studies", cwd=tmp_path).stdout
    assert "mini: validated trial" in table and "on test (5 problems)" in table
    exported = moa_opt("export", "--study", "mini", "--format", "yaml", cwd=tmp_path)
    assert f"pass@1 [95% interval]: found {found['pass_at_1']:.3f} [" in exported.stderr


def test_resuming_with_other_split_flags_is_a_one_line_error(tmp_path: Path) -> None:
    space = suite_space(tmp_path, every=0)
    with OpenAIServer(suite_responder) as server:
        args = ("search", "--space", str(space), "--study", "s", "--base-url", server.base_url)
        first = moa_opt(*args, "--trials", "1", "--dev-size", "2", cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        again = moa_opt(*args, "--trials", "2", "--dev-size", "3", cwd=tmp_path)
        kept = moa_opt(*args, "--trials", "2", cwd=tmp_path)  # no flags: the stored split
        best = str(tmp_path / "runs" / "s" / "best.yaml")
        url = ("--base-url", server.base_url)
        one = moa_opt("run", best, "--instance", "mini/negate", "--json", *url, cwd=tmp_path)
        unpicked = moa_opt("run", best, *url, cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["grade"]["max_score"] == 1.0
    assert "warning" not in one.stderr  # the suite is unchanged: no fingerprint warning
    assert unpicked.returncode == 2 and unpicked.stderr.endswith("holds 8 problems\n")
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert again.stderr.startswith(
        "moa-opt: error: --dev-size: study 's' was split with --dev-size 2, not 3"
    )
    assert kept.returncode == 0, kept.stderr
    assert len(load(tmp_path, "s").user_attrs["split"]["dev"]) == 2


def test_instances_are_sampled_and_reported_per_problem(tmp_path: Path) -> None:
    space = suite_space(tmp_path, every=0)
    with OpenAIServer(suite_responder) as server:
        done = moa_opt(
            "search", "--space", str(space), "--study", "k", "--trials", "4", "--dev-size", "4",
            "--instances", "2", "--pruner", "wilcoxon", "--base-url", server.base_url,
            cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    study = load(tmp_path, "k")
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    steps = [sorted(t.intermediate_values) for t in finished]
    assert all(len(s) == 2 and set(s) <= {0, 1, 2, 3} for s in steps)
    assert len({tuple(s) for s in steps}) > 1  # a different sample per trial
    for trial in finished:
        if trial.state == TrialState.COMPLETE:
            assert trial.values[0] == sum(trial.intermediate_values.values()) / 2


def test_suite_flags_need_a_suite(tmp_path: Path) -> None:
    done = moa_opt("search", "--space", str(SMOKE), "--dev-size", "3", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "moa-opt: error: --dev-size: only for a suite (a .jsonl task or humaneval)\n"
    )


def test_validate_needs_a_suite_study(tmp_path: Path) -> None:
    with OpenAIServer(suite_responder) as server:
        moa_opt(
            "search", "--space", str(SMOKE), "--study", "plain", "--trials", "1",
            "--base-url", server.base_url, cwd=tmp_path,
        )  # fmt: skip
    done = moa_opt("validate", "--study", "plain", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "study 'plain' has no dev/test split" in done.stderr


def workshop_only(body: dict[str, object]) -> str:
    """Solves a problem only for the workshop's main agent (trial 0: its prompt at temperature
    0.7); answers wrong for the others."""
    answer = suite_responder(body)
    system = json.dumps(body["messages"])
    workshop = "Please implement the requested function" in system and body["temperature"] == 0.7
    if workshop and "```python" in answer:
        name = answer.split("def ", 1)[1].split("(", 1)[0]
        params, _, line, _ = PROBLEMS[name]
        return f"```python\ndef {name}({params}):\n    {line}\n```\n"
    return answer.replace("Be careful", "").replace("return ", "return None and ")


def test_wilcoxon_prunes_worse_trials_and_their_spending_counts(tmp_path: Path) -> None:
    space = suite_space(tmp_path, every=0)
    with OpenAIServer(workshop_only) as server:
        done = moa_opt(
            "search", "--space", str(space), "--study", "w", "--trials", "5", "--dev-size", "6",
            "--pruner", "wilcoxon", "--seed", "0", "--base-url", server.base_url, "--json",
            cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    study = load(tmp_path, "w")
    assert study.trials[0].state == TrialState.COMPLETE and study.trials[0].values[0] == 1.0
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.state, t.intermediate_values) for t in study.trials]
    dev = set(study.user_attrs["split"]["dev"])
    for trial in pruned:
        assert trial.user_attrs["mean"] == 0.0
        # pruned after 4 or 5 problems; a run ending while the others are cancelled counts
        assert 4 <= trial.user_attrs["instances_done"] <= 6
        assert len(trial.intermediate_values) == trial.user_attrs["instances_done"]
        assert trial.user_attrs["tokens"] > 0
        # its transcript holds the runs it made (one per problem reported), graded
        path = Path(trial.user_attrs["transcript"])  # as a complete trial's: runs/w/trials/0.jsonl
        assert path == Path(study.trials[0].user_attrs["transcript"]).with_stem(str(trial.number))
        lines = [json.loads(line) for line in (tmp_path / path).read_text().splitlines()]
        head, grades = lines[0], [line for line in lines if line["type"] == "grade"]
        assert head["type"] == "evaluation" and head["trial"] == trial.number
        assert head["pruned"].startswith("pruner: clearly worse than the best trial")
        assert head["config"] == trial.user_attrs["config"]
        assert len(grades) == trial.user_attrs["instances_done"]
        assert {g["task"] for g in grades} <= dev and {g["score"] for g in grades} == {0.0}
        assert all(g["answer"] and g["feedback"] for g in grades)
        calls = [line for line in lines if line["type"] == "call"]
        assert {c["task"] for c in calls} == {g["task"] for g in grades}
        billed = sum(c["prompt_tokens"] + c["completion_tokens"] for c in calls)
        assert billed == trial.user_attrs["tokens"]
    summary = json.loads(done.stdout)
    assert summary["spent"]["trials"] == 5  # pruned trials count towards --trials
    # every trial's tokens (pruned ones included) and the confirm stage's runs, fresh or not
    confirm = sum(
        int(value.get("tokens", 0))
        for key, value in study.user_attrs.items()
        if key.startswith(("runs:", "fresh:")) and isinstance(value, dict)
    )
    trials = sum(t.user_attrs["tokens"] for t in study.trials)
    assert summary["spent"]["tokens"] == trials + confirm


def test_a_mutated_prompt_defining_any_dev_problems_function_is_rejected(tmp_path: Path) -> None:
    space = suite_space(tmp_path)
    data = yaml.safe_load(space.read_text())
    data["mutation"]["variants"] = 4  # reflect, specialise, crossover, rephrase
    space.write_text(yaml.safe_dump(data))
    args = ("--space", str(space), "--study", "mini", "--dev-size", "3", "--split-seed", "2")
    with OpenAIServer(suite_responder) as server:  # a first trial fixes the split
        url = ("--base-url", server.base_url, "--confirm-repeats", "0")
        first = moa_opt("search", *args, "--trials", "1", *url, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
    dev = [task_id.split("/")[1] for task_id in load(tmp_path, "mini").user_attrs["split"]["dev"]]
    # the mutator is shown dev[0]; it answers with the solution of dev[1], dressed as a prompt
    params, _, line, _ = PROBLEMS[dev[1]]
    solution = f"Use this:\n\ndef {dev[1]}({params}):\n    {line}\n\nThen explain it."

    def memorising(body: dict[str, Any]) -> str:
        return solution if asks_mutator(body) else suite_responder(body)

    with OpenAIServer(memorising) as server:
        url = ("--base-url", server.base_url, "--confirm-repeats", "0")
        searched = moa_opt("search", *args, "--trials", "3", *url, cwd=tmp_path)
        assert searched.returncode == 0, searched.stderr
    study = load(tmp_path, "mini")
    rejected = [r for k, v in study.user_attrs.items() if k.startswith(REJECTED_PREFIX) for r in v]
    reasons = {r["operator"]: r["reason"] for r in rejected}
    assert reasons["rephrase"] == (
        f"defines the task's function {dev[1]!r} (an answer, not an instruction)"
    )
    assert reasons["reflect"] == "no rules (no '- ' line of prose)"
    assert PromptPool(study).latest("main").number == 0  # nothing was added
