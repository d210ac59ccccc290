"""A user's own task end to end: the README section followed literally, the pre-flight check,
the task a study and an exported config remember, and the failure summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import yaml
from moa_cli import moa_opt
from openai_server import OpenAIServer
from own_task import (
    GOOD_ANSWER,
    commands,
    good_responder,
    missing_responder,
    write_task,
    yaml_blocks,
)

from optimizer._storage import open_storage


def env(server: OpenAIServer) -> dict[str, str]:
    """Every model call goes to the loopback server, as ``--base-url`` would send it."""
    return {"MOA_BASE_URL": server.base_url, "COLUMNS": "80"}


def search(folder: Path, server: OpenAIServer, *flags: str) -> Any:
    return moa_opt(
        "search", "--space", "space.yaml", "--study", "slugify", *flags,
        cwd=folder, env=env(server),
    )  # fmt: skip


def test_the_readme_section_followed_literally(tmp_path: Path) -> None:
    folder = write_task(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [
        "answer.md", "slugify.yaml", "space.yaml", "test_slugify.py"
    ]  # fmt: skip
    ran = []
    with OpenAIServer(good_responder) as server:
        for args in commands():
            done = moa_opt(*args, cwd=folder, env=env(server))
            assert done.returncode == 0, (args, done.stderr)
            ran.append((args[0], done))
    outputs = dict(ran)
    assert [name for name, _ in ran] == ["grade", "search", "trials", "reproduce", "run"]
    assert "Total: 5/5" in outputs["grade"].stdout
    assert "Best config: trial" in outputs["search"].stdout
    confirmed = "Confirmed on 6 fresh runs after it was chosen: mean 5/5, std 0"
    assert confirmed in outputs["search"].stdout
    board = outputs["trials"].stdout
    assert "5/5" in board and max(len(line) for line in board.splitlines()) <= 80
    note = f"grading on task slugify ({folder / 'slugify.yaml'}), as runs/slugify/best.yaml"
    assert note in " ".join(outputs["reproduce"].stderr.split())
    assert "5 / 5" in outputs["reproduce"].stdout
    assert "Score: 5/5 on slugify (graded by pytest; 5 of 5 tests passed)" in outputs["run"].stdout


def test_the_readme_exact_and_judge_examples_grade(tmp_path: Path) -> None:
    blocks = {yaml.safe_load(b)["grader"]: b for b in yaml_blocks() if "grader:" in b}
    assert set(blocks) == {"pytest", "exact", "judge"}
    (tmp_path / "capitals.yaml").write_text(blocks["exact"])
    (tmp_path / "caching.yaml").write_text(blocks["judge"])
    reference = yaml.safe_load(blocks["exact"])["reference"]
    exact = moa_opt(
        "grade", "-", "--task", "capitals.yaml", "--json", cwd=tmp_path, stdin=reference
    )
    assert exact.returncode == 0, exact.stderr
    assert json.loads(exact.stdout)["score"] == 2
    wrong = moa_opt(
        "grade",
        "-",
        "--task",
        "capitals.yaml",
        "--json",
        cwd=tmp_path,
        stdin="Answer 1: Sydney\nAnswer 2: 6",
    )
    assert json.loads(wrong.stdout)["score"] == 1

    def judge(body: dict[str, Any]) -> str:
        return '{"score": 7, "reasons": "fine"}'

    with OpenAIServer(judge) as server:
        judged = moa_opt(
            "grade", "-", "--task", "caching.yaml", "--json", cwd=tmp_path, env=env(server),
            stdin="A cache keeps copies close by.",
        )  # fmt: skip
        models = {r.body["model"] for r in server.chat_requests}
    assert judged.returncode == 0, judged.stderr
    assert json.loads(judged.stdout)["score"] == 7 and models == {"llama3.1-8b"}


def test_a_task_the_preflight_refuses_calls_no_model(tmp_path: Path) -> None:
    folder = write_task(tmp_path)
    tests = folder / "test_slugify.py"
    tests.write_text(tests.read_text().replace("from solution import", "from soluton import"))
    with OpenAIServer(good_responder) as server:
        done = search(folder, server, "--trials", "3")
        requests = list(server.requests)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"moa-opt: error: {folder / 'slugify.yaml'}: params.test_file: ")
    assert "No module named 'soluton'" in lines[0] and "no model was called" in lines[0]
    assert requests == []  # not a chat call, not even GET /models
    assert not (folder / "runs" / "slugify").exists()


def test_a_test_file_edited_between_two_runs_is_refused(tmp_path: Path) -> None:
    folder = write_task(tmp_path)
    with OpenAIServer(good_responder) as server:
        first = search(folder, server, "--trials", "2")
        assert first.returncode == 0, first.stderr
        tests = folder / "test_slugify.py"
        tests.write_text(
            tests.read_text() + "\n\ndef test_more():\n    assert slugify('A') == 'a'\n"
        )
        calls = len(server.chat_requests)
        second = search(folder, server, "--trials", "4")
        assert len(server.chat_requests) == calls
    assert second.returncode == 2
    message = second.stderr.strip().splitlines()[-1]
    assert message.startswith(f"moa-opt: error: {folder / 'slugify.yaml'}: the task of study ")
    assert "changed since the study started (changed: test_file test_slugify.py)" in message
    study = optuna.load_study(
        study_name="slugify", storage=open_storage("slugify", runs_dir=folder / "runs")
    )
    assert len(study.trials) == 2


def test_a_changed_space_names_the_field(tmp_path: Path) -> None:
    folder = write_task(tmp_path)
    with OpenAIServer(good_responder) as server:
        assert search(folder, server, "--trials", "1").returncode == 0
        space = folder / "space.yaml"
        space.write_text(space.read_text().replace("high: 0.6, step: 0.2", "high: 0.8, step: 0.2"))
        done = search(folder, server, "--trials", "2")
    assert done.returncode == 2
    assert "another search space (changed: main.temperature.high)" in done.stderr


def test_reproduce_and_run_use_the_exported_task_and_task_overrides(tmp_path: Path) -> None:
    folder = write_task(tmp_path)
    with OpenAIServer(good_responder) as server:
        assert search(folder, server, "--trials", "2").returncode == 0
        companion = yaml.safe_load((folder / "runs/slugify/best.task.yaml").read_text())
        assert companion["task"]["source"] == str(folder / "slugify.yaml")
        from_json = moa_opt(
            "reproduce", "runs/slugify/best.json", "--repeats", "1", "--json",
            cwd=folder, env=env(server),
        )  # fmt: skip
        other = moa_opt(
            "reproduce", "runs/slugify/best.yaml", "--repeats", "1", "--task", "fizzbuzz",
            "--json", cwd=folder, env=env(server),
        )  # fmt: skip
        cached = moa_opt("run", "runs/slugify/best.yaml", "--json", cwd=folder, env=env(server))
    assert from_json.returncode == 0, from_json.stderr
    assert "as runs/slugify/best.task.yaml names it" in " ".join(from_json.stderr.split())
    assert json.loads(from_json.stdout)["configs"][0]["runs"][0]["task"] == "slugify"
    assert other.returncode == 0, other.stderr
    assert "grading on" not in other.stderr
    assert json.loads(other.stdout)["configs"][0]["runs"][0]["task"] == "fizzbuzz"
    record = json.loads(cached.stdout)
    assert record["grade"]["score"] == 5
    assert record["calls"] and all(call["cached"] for call in record["calls"])  # search's seed


def test_an_exported_task_that_moved_is_a_one_line_error(tmp_path: Path) -> None:
    folder = write_task(tmp_path)
    with OpenAIServer(good_responder) as server:
        assert search(folder, server, "--trials", "1").returncode == 0
        (folder / "slugify.yaml").rename(folder / "moved.yaml")
        done = moa_opt("reproduce", "runs/slugify/best.yaml", cwd=folder, env=env(server))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"moa-opt: error: runs/slugify/best.yaml: task: {folder / 'slugify.yaml'}: "
        "no such task file; give --task"
    )


def test_the_summary_names_why_most_trials_scored_zero(tmp_path: Path) -> None:
    folder = write_task(tmp_path)
    with OpenAIServer(missing_responder) as server:
        done = search(folder, server, "--trials", "3", "--json")
        text = search(folder, server, "--trials", "3")
    assert done.returncode == 0, done.stderr
    failures = json.loads(done.stdout)["failures"]
    assert failures == [
        {
            "message": "no function named 'slugify' was found in the response",
            "trials": 3,
            "out_of": 3,
        }
    ]
    assert "  3/3 trials: no function named 'slugify' was found in the response" in text.stdout


def test_no_failure_summary_when_trials_score_well(tmp_path: Path) -> None:
    folder = write_task(tmp_path)
    with OpenAIServer(good_responder) as server:
        done = search(folder, server, "--trials", "2", "--json")
    assert json.loads(done.stdout)["failures"] == []


def test_the_good_answer_is_what_the_readme_grades(tmp_path: Path) -> None:
    folder = write_task(tmp_path)
    done = moa_opt("grade", "-", "--task", "slugify.yaml", "--json", cwd=folder, stdin=GOOD_ANSWER)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["score"] == 5


def test_export_writes_the_task_of_the_study(tmp_path: Path) -> None:
    folder = write_task(tmp_path)
    with OpenAIServer(good_responder) as server:
        assert search(folder, server, "--trials", "1").returncode == 0
    shown = moa_opt("export", "--study", "slugify", "--format", "yaml", cwd=folder)
    assert shown.returncode == 0, shown.stderr
    named = yaml.safe_load(shown.stdout)["task"]
    assert (named["name"], named["source"]) == ("slugify", str(folder / "slugify.yaml"))
    assert named["fingerprint"].startswith("sha256:")
    written = moa_opt("export", "--study", "slugify", "-o", "out.json", cwd=folder)
    assert written.returncode == 0, written.stderr
    assert yaml.safe_load((folder / "out.task.yaml").read_text())["task"] == named
    assert "wrote out.task.yaml (its task: slugify)" in written.stderr
