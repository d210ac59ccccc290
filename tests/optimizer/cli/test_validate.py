"""``validate --config``: a config file validated on a suite's split, without a study on it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from moa_cli import ROOT, moa_env, moa_opt
from openai_server import OpenAIServer
from suite_helpers import mentioned, suite_responder, write_suite

from graders import load_tasks
from optimizer._storage import open_storage

SMOKE = ROOT / "search_spaces" / "smoke.yaml"
CAREFUL = "Be careful: write one correct function. {helper_response}"


def space_on(tmp_path: Path, task: str) -> Path:
    """The smoke space on ``task`` (a suite: no grader), one repeat, no mutation."""
    space = yaml.safe_load(SMOKE.read_text())
    space["task"] = task
    del space["grader"]
    space["repeats"] = 1
    space["mutation"]["every"] = 0
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def workshop_file(path: Path) -> Path:
    """A config tuned elsewhere, in the workshop's JSON format: model-b, asked carefully."""
    config = {
        "ai_configuration": {
            "main_model": "model-b",
            "main_temperature": 0.2,
            "cycles": 1,
            "system_prompt": CAREFUL,
            "layer_agents": [
                {"name": "a", "model": "model-a", "temperature": 0.5, "prompt": "Draft it."}
            ],
        },
        "exported_at": "2026-01-01 00:00:00",
        "version": "2.0",
    }
    path.write_text(json.dumps(config))
    return path


def stored_split(tmp_path: Path, name: str) -> dict[str, Any]:
    storage = open_storage(name, runs_dir=tmp_path / "runs")
    split: dict[str, Any] = optuna.load_study(study_name=name, storage=storage).user_attrs["split"]
    return split


def search_then_validate(
    tmp_path: Path, responder: Any, task: str, study: str, split_flags: tuple[str, ...], *extra: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Searches one trial on ``task`` with ``split_flags``, then validates ``tuned.json`` on it.

    Returns the ``--json`` record and the request bodies ``validate`` sent.
    """
    config = workshop_file(tmp_path / "tuned.json")
    with OpenAIServer(responder) as server:
        url = ("--base-url", server.base_url)
        searched = moa_opt(
            "search", "--space", str(space_on(tmp_path, task)), "--study", study,
            "--trials", "1", "--confirm-repeats", "0", *split_flags, *url, cwd=tmp_path,
        )  # fmt: skip
        assert searched.returncode == 0, searched.stderr
        before = len(server.chat_requests)
        validated = moa_opt(
            "validate", "--config", str(config), "--task", task, *split_flags, *extra, "--json",
            *url, cwd=tmp_path,
        )  # fmt: skip
        requests = [r.body for r in server.chat_requests][before:]
    assert validated.returncode == 0, validated.stderr
    data: dict[str, Any] = json.loads(validated.stdout)
    # progress: a line per graded run, counted against the whole (4 configs x problems)
    progress = re.findall(r"^\[(\d+)/(\d+)\] ", validated.stderr, flags=re.MULTILINE)
    total = 4 * data["problems"] * data["repeats"]
    assert progress == [(str(i), str(total)) for i in range(1, total + 1)]
    return data, requests


def system(body: dict[str, Any]) -> str:
    return "".join(m["content"] for m in body["messages"] if m["role"] == "system")


def test_a_config_file_is_validated_on_the_test_split_a_study_would_hold(tmp_path: Path) -> None:
    write_suite(tmp_path / "mini.jsonl")
    split_flags = ("--dev-size", "3", "--split-seed", "2")
    data, requests = search_then_validate(
        tmp_path, suite_responder, "mini.jsonl", "mini", split_flags
    )
    config = tmp_path / "tuned.json"
    split = stored_split(tmp_path, "mini")
    # the very split a study on this suite with these flags holds
    assert data["suite_split"] == split
    test = {task_id.split("/")[1] for task_id in split["test"]}
    assert len(test) == 5 and data["split"] == "test" and data["problems"] == 5
    # only test problems reached the model, and every one of them did
    assert all(mentioned(body) <= test for body in requests)
    assert set().union(*(mentioned(body) for body in requests)) == test
    assert data["config"] == str(config) and data["task"] == str(tmp_path / "mini.jsonl")

    rows = {row["config"]: row for row in data["results"]}
    assert list(rows) == ["found", "single-call", "self-consistency", "workshop-default"]
    lucky = sum(len(name) % 2 == 0 for name in test) / 5  # model-b solves even-length names
    assert rows["found"]["pass_at_1"] == 1.0  # asked carefully: every answer right
    assert rows["single-call"]["pass_at_1"] == lucky
    assert rows["single-call"]["diff"] == 1.0 - lucky
    assert rows["self-consistency"]["samples"] >= 2  # found makes 2 calls a problem, single 1
    assert rows["workshop-default"]["pass_at_1"] == lucky
    # the baselines are built from the file's main model: model-b, every agent of them
    workshop = [b for b in requests if "Please implement the requested function" in system(b)]
    helpers = [b for b in requests if "Help with the coding task" in system(b)]
    plain = [b for b in requests if system(b) == "You are a helpful assistant."]
    assert len(workshop) == len(helpers) == 5 and len(plain) >= 5 * 3
    assert {b["model"] for b in workshop + helpers + plain} == {"model-b"}
    assert {b["temperature"] for b in plain} == {0.0, 0.7}

    # no study was made; the result and transcripts are under runs/validate/<date>-<time>/
    (folder,) = (tmp_path / "runs" / "validate").iterdir()
    stored = json.loads((folder / "result.json").read_text())
    assert stored == {
        **data,
        "results": [{k: v for k, v in row.items() if k != "runs"} for row in data["results"]],
    }
    transcripts = sorted(p.name for p in folder.glob("*.jsonl"))
    assert transcripts == [f"test-{name}.jsonl" for name in sorted(rows)]
    assert [p.parent.name for p in (tmp_path / "runs").glob("*/journal.log")] == ["mini"]


def test_a_validation_stopped_part_way_keeps_the_configs_it_finished(tmp_path: Path) -> None:
    # the workshop default runs last; the process is killed while its first call is answered
    write_suite(tmp_path / "mini.jsonl")
    config = workshop_file(tmp_path / "tuned.json")
    reached, release = threading.Event(), threading.Event()

    def responder(body: dict[str, Any]) -> str:
        if "Please implement the requested function" in system(body):
            reached.set()
            release.wait(60)
        return suite_responder(body)

    with OpenAIServer(responder) as server:
        process = subprocess.Popen(
            [sys.executable, "-m", "optimizer", "validate", "--config", str(config),
             "--task", "mini.jsonl", "--dev-size", "3", "--base-url", server.base_url],
            cwd=tmp_path, env=moa_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            assert reached.wait(300), "the workshop default never ran"
            process.kill()
            _, stderr = process.communicate(timeout=60)
        finally:
            release.set()
            if process.poll() is None:
                process.kill()
    (folder,) = (tmp_path / "runs" / "validate").iterdir()
    kept = sorted(p.name for p in folder.glob("*.jsonl"))
    assert kept == ["test-found.jsonl", "test-self-consistency.jsonl", "test-single-call.jsonl"]
    found = [json.loads(line) for line in (folder / "test-found.jsonl").read_text().splitlines()]
    grades = [record for record in found if record["type"] == "grade"]
    assert len(grades) == 5 and {g["score"] for g in grades} == {1.0}  # the 5 test problems
    # each finished config's result was printed when it finished, before the next one ran
    lines = re.findall(r"^(\S+): pass@1 (\S+) \[", stderr, flags=re.MULTILINE)
    assert lines == [("found", "1.000"), ("single-call", lines[1][1]),
                     ("self-consistency", lines[2][1])]  # fmt: skip
    before_single = stderr.index("found: pass@1")
    first_single = re.search(r"^\[\d+/\d+\] single-call ", stderr, flags=re.MULTILINE)
    assert first_single is not None and before_single < first_single.start()


def humaneval_responder(body: dict[str, Any]) -> str:
    """A wrong answer to everything (the test is about which problems are asked)."""
    return "```python\ndef nothing():\n    return None\n```\n"


def test_a_humaneval_split_is_the_one_a_humaneval_study_holds(tmp_path: Path) -> None:
    split_flags = ("--dev-size", "2", "--split-seed", "7")
    data, requests = search_then_validate(
        tmp_path, humaneval_responder, "humaneval", "he", split_flags, "--split", "dev"
    )
    split = stored_split(tmp_path, "he")
    assert data["suite_split"] == split
    assert len(split["dev"]) == 2 and len(split["test"]) == 162
    problems = {task.name: str(task.params["problem"]) for task in load_tasks("humaneval")}

    def asked(body: dict[str, Any]) -> set[str]:
        text = "".join(m["content"] for m in body["messages"])
        return {name for name, prompt in problems.items() if prompt in text}

    assert set().union(*(asked(body) for body in requests)) == set(split["dev"])
    assert all(len(asked(body)) == 1 for body in requests)
    assert data["problems"] == 2 and data["split"] == "dev"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--config", "tuned.json", "--study", "s", "--task", "mini.jsonl"),
            "--config: give --study or --config, not both",
        ),
        (
            ("--config", "tuned.json"),
            "--config: needs --task SUITE (a .jsonl file or humaneval), the suite to validate on",
        ),
        (
            ("--config", "tuned.json", "--task", "challenge"),
            "--task: validate needs a suite (a .jsonl file or humaneval), got 'challenge'",
        ),
        (
            ("--config", "tuned.json", "--task", "mini.jsonl", "--storage", "sqlite:///x.db"),
            "--storage: only with --study (a --config is validated without one)",
        ),
        (
            ("--config", "tuned.json", "--task", "mini.jsonl", "--dev-size", "8"),
            "--dev-size: must be between 1 and 7 (the suite has 8 problems), got 8",
        ),
        (
            ("--study", "s", "--task", "humaneval"),
            "--task: only with --config; a study is validated on its own suite and split",
        ),
        (
            ("--study", "s", "--split-seed", "3"),
            "--split-seed: only with --config; a study is validated on its own suite and split",
        ),
        ((), "validate: give --study NAME, or --config FILE with --task SUITE"),
    ],
)
def test_bad_combinations_are_one_line_errors(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    write_suite(tmp_path / "mini.jsonl")
    workshop_file(tmp_path / "tuned.json")
    done = moa_opt("validate", *args, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == f"moa-opt: error: {message}\n"
    assert not (tmp_path / "runs").exists()


def test_a_suite_whose_reference_fails_is_refused_before_any_model_call(tmp_path: Path) -> None:
    lines = write_suite(tmp_path / "mini.jsonl").read_text().splitlines()
    records = [{**json.loads(line), "canonical_solution": "    return None\n"} for line in lines]
    (tmp_path / "mini.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    workshop_file(tmp_path / "tuned.json")
    with OpenAIServer(suite_responder) as server:
        done = moa_opt(
            "validate", "--config", "tuned.json", "--task", "mini.jsonl",
            "--base-url", server.base_url, cwd=tmp_path,
        )  # fmt: skip
        assert server.chat_requests == []
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("moa-opt: error: ") and done.stderr.count("\n") == 1
    assert "mini/" in done.stderr and "pre-flight check; no model was called" in done.stderr
    assert not (tmp_path / "runs" / "validate").exists()
