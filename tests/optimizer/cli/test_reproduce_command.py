from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from challenge_candidates import CLEAN
from moa_cli import moa_opt
from openai_server import OpenAIServer

from optimizer._config import config_from_workshop, config_to_dict, load_config
from optimizer._racing import ConfigRuns
from optimizer._storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)

GOOD = f"```python\n{CLEAN}```"  # scores 120

NAIVE = """```python
def calculate_user_metrics(users, start_date, end_date):
    total = 0
    for u in users:
        if u["last_login"] >= start_date and u["last_login"] <= end_date:
            total += (u["posts"] * 2 + u["comments"] * 1.5 + u["likes"] * 0.1) / u["days_active"]
    count = len(users)
    return {"average_engagement": total / count, "top_performers": users[:5], "active_count": count}
```"""


def code_responder(body: dict[str, Any]) -> str:
    """The main agent answers GOOD code on even seeds and NAIVE code on odd ones."""
    system = next(m["content"] for m in body["messages"] if m["role"] == "system")
    if not system.startswith("MAIN"):
        return "Layer notes: validate input, skip users with missing keys."
    return GOOD if (body.get("seed") or 0) % 2 == 0 else NAIVE


def write_yaml(path: Path, main_prompt: str = "MAIN: implement it. {helper_response}") -> Path:
    data = {
        "main": {
            "name": "main",
            "model": "llama3.1-8b",
            "temperature": 0.0,
            "system_prompt": main_prompt,
        },
        "cycles": 1,
        "layer_agents": [
            {
                "name": "helper",
                "model": "llama3.1-8b",
                "temperature": 0.0,
                "system_prompt": "Help. {helper_response}",
            }
        ],
    }
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def code_server() -> Any:
    with OpenAIServer(code_responder) as server:
        yield server


def reproduce_json(
    cwd: Path, server: OpenAIServer, *configs: str, repeats: int = 4
) -> dict[str, Any]:
    done = moa_opt(
        "reproduce",
        *configs,
        "--repeats",
        str(repeats),
        "--base-url",
        server.base_url,
        "--json",
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def test_reproduce_prints_every_statistic_side_by_side(
    tmp_path: Path, code_server: OpenAIServer
) -> None:
    write_yaml(tmp_path / "plain.yaml")
    write_yaml(tmp_path / "layered.yaml", "MAIN with help: {helper_response}")
    done = moa_opt(
        "reproduce",
        "plain.yaml",
        "layered.yaml",
        "--repeats",
        "2",
        "--base-url",
        code_server.base_url,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    for label in (
        "plain.yaml",
        "layered.yaml",
        "scores",
        "mean",
        "std",
        "min",
        "max",
        "max-score rate",
    ):
        assert label in done.stdout
    assert "/ 120" in done.stdout
    # progress goes to stderr, one line per graded run when stderr is not a terminal
    assert "[4/4]" in done.stderr and "repeat 1" in done.stderr


def test_json_and_transcripts_say_why_each_run_scored_what_it_did(
    tmp_path: Path, code_server: OpenAIServer
) -> None:
    write_yaml(tmp_path / "c.yaml")
    runs = reproduce_json(tmp_path, code_server, "c.yaml", repeats=2)["configs"][0]["runs"]
    assert [run["answer"] for run in runs] == [GOOD, NAIVE]
    assert runs[0]["feedback"] == "Score 120/120: every test passed."
    assert (
        runs[1]["feedback"].startswith("Score ")
        and "handles_division_by_zero" in runs[1]["feedback"]
    )
    (folder,) = (tmp_path / "runs" / "reproduce").iterdir()
    lines = [json.loads(line) for line in (folder / "0-c.jsonl").read_text().splitlines()]
    grades = [line for line in lines if line["type"] == "grade"]
    assert [g["answer"] for g in grades] == [GOOD, NAIVE]
    assert lines[0]["reproduce"] == "c.yaml" and lines[0]["scores"] == [120.0, runs[1]["score"]]
    assert sum(line["type"] == "call" for line in lines) == 4


def test_rerun_is_cached_and_gives_the_same_scores(
    tmp_path: Path, code_server: OpenAIServer
) -> None:
    write_yaml(tmp_path / "c.yaml")
    first = reproduce_json(tmp_path, code_server, "c.yaml")["configs"][0]
    requests = len(code_server.chat_requests)
    second = reproduce_json(tmp_path, code_server, "c.yaml")["configs"][0]
    assert len(code_server.chat_requests) == requests == 4 * 2
    assert second["scores"] == first["scores"]
    assert second["cache_hits"] == second["calls"] == 8
    # each run keeps its own transcripts, even when both ran within one second
    folders = sorted((tmp_path / "runs" / "reproduce").iterdir())
    assert len(folders) == 2 and all((f / "0-c.jsonl").is_file() for f in folders)
    scores = first["scores"]
    assert scores[0] == scores[2] and scores[1] == scores[3] and scores[0] > scores[1]
    assert first["max_score"] == 120 and len(first["test_pass_rates"]) == 11
    assert first["mean"] == pytest.approx(sum(scores) / 4)


def test_an_exported_config_reproduces_the_search_scores(
    tmp_path: Path, code_server: OpenAIServer
) -> None:
    config = load_config(write_yaml(tmp_path / "found.yaml"))
    searched = reproduce_json(tmp_path, code_server, "found.yaml")["configs"][0]
    # the search stored this config in its best trial
    study = optuna.create_study(
        study_name="s", storage=open_storage("s", runs_dir=tmp_path / "runs"), direction="maximize"
    )
    study.add_trial(
        optuna.trial.create_trial(
            value=searched["mean"],
            user_attrs={"config": config_to_dict(config), "mean": searched["mean"]},
        )
    )
    exported = moa_opt("export", "--study", "s", "-o", "best.json", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert config_from_workshop(json.loads((tmp_path / "best.json").read_text())) == config
    requests = len(code_server.chat_requests)
    again = reproduce_json(tmp_path, code_server, "best.json")["configs"][0]
    assert again["scores"] == searched["scores"]
    assert again["cache_hits"] == again["calls"]
    assert len(code_server.chat_requests) == requests


def test_unknown_grader_or_task_is_one_line(tmp_path: Path) -> None:
    write_yaml(tmp_path / "c.yaml")
    done = moa_opt(
        "reproduce",
        "c.yaml",
        "--grader",
        "nope",
        "--base-url",
        "http://127.0.0.1:9/v1",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("moa-opt: error: --grader:")
    done = moa_opt("reproduce", "c.yaml", "--task", "no-such-task", cwd=tmp_path)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("moa-opt: error: --task:")


def write_stats(config: Path, *scores: float) -> None:
    """The statistics file ``export`` writes beside a confirmed config, with these fresh runs."""
    runs = ConfigRuns("k", {}, (0,), tuple(range(len(scores))), scores, 120.0)
    stats = {"trial": 0, "confirmed": True, **runs.stats()}
    config.with_name(f"{config.stem}.stats.json").write_text(json.dumps(stats))


def test_reproduce_says_whether_its_mean_is_where_the_exporting_search_predicted(
    tmp_path: Path, code_server: OpenAIServer
) -> None:
    # runs alternate 120 and a lower score: the mean of 4 is their midpoint
    mean = reproduce_json(tmp_path, code_server, write_yaml(tmp_path / "c.yaml").name)["configs"][
        0
    ]["mean"]
    write_stats(
        write_yaml(tmp_path / "spread.yaml"), mean - 40, mean + 40, mean, mean - 20, mean + 20
    )
    write_stats(write_yaml(tmp_path / "narrow.yaml"), 10, 12, 11, 9, 10, 11)
    write_yaml(tmp_path / "plain.yaml")
    (tmp_path / "junk.stats.json").write_text("{not json")
    write_yaml(tmp_path / "junk.yaml")
    configs = reproduce_json(
        tmp_path, code_server, "spread.yaml", "narrow.yaml", "plain.yaml", "junk.yaml"
    )["configs"]
    spread, narrow, plain, junk = (c["expected"] for c in configs)
    assert spread["verdict"] == "inside" and spread["low"] < mean < spread["high"]
    assert spread["repeats"] == 4 and spread["runs"] == 5 and spread["confirmed"] is True
    assert spread["stats_file"].endswith("spread.stats.json")
    assert narrow["verdict"] == "above" and narrow["high"] < 13
    assert plain is None and junk is None  # none beside it, or unreadable: nothing predicted
    done = moa_opt(
        "reproduce",
        "junk.yaml",
        "--repeats",
        "1",
        "--base-url",
        code_server.base_url,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr
    assert "warning: junk.stats.json: not an export's statistics" in done.stderr
    done = moa_opt(
        "reproduce",
        "narrow.yaml",
        "--repeats",
        "4",
        "--base-url",
        code_server.base_url,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "search predicted (95%)" in done.stdout and "mean above (6 fresh" in done.stdout
    # --task naming a task the config does not name: the prediction may not apply
    other = moa_opt(
        "reproduce",
        "narrow.yaml",
        "--repeats",
        "1",
        "--task",
        "challenge",
        "--base-url",
        code_server.base_url,
        "--json",
        cwd=tmp_path,
    )
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)["configs"][0]["expected"] is None


def test_reproduce_warns_when_its_seeds_replay_the_search_runs_of_the_config(
    tmp_path: Path, code_server: OpenAIServer
) -> None:
    # a search without --seed ran this config with seeds 0-2, then fresh runs from 1,000,000
    config = write_yaml(tmp_path / "best.yaml")
    runs = ConfigRuns("k", {}, (0,), (1_000_000, 1_000_001, 1_000_002), (60.0, 80.0, 70.0), 120.0)
    search = ConfigRuns("k", {}, (0,), (0, 1, 2), (120.0, 120.0, 120.0), 120.0)
    stats = {"confirmed": True, **runs.stats(), "call_seed": 0, "search": search.stats()}
    config.with_name("best.stats.json").write_text(json.dumps(stats))

    def reproduce(*flags: str) -> tuple[dict[str, Any], str]:
        done = moa_opt(
            "reproduce", "best.yaml", "--repeats", "4", *flags,
            "--base-url", code_server.base_url, "--json", cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["configs"][0]["expected"], done.stderr

    replayed, warned = reproduce()
    assert replayed["shared_seeds"] == 3
    assert "3 of seeds 0 to 3 made runs of this config in its search" in warned
    assert "--seed 1000 draws fresh ones" in warned and "Traceback" not in warned
    fresh, quiet = reproduce("--seed", "1000")
    assert fresh["shared_seeds"] == 0 and "made runs of this config" not in quiet
    _, edge = reproduce("--seed", "999998")  # seeds 999,998 to 1,000,001: two fresh runs'
    assert "2 of seeds 999998 to 1000001" in edge and "--seed 1001000 draws" in edge
