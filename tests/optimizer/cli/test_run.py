from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import SECRET
from moa_cli import ROOT, moa_opt
from openai_server import OpenAIServer

WORKSHOP_DEFAULT = ROOT / "search_spaces" / "baselines" / "workshop-default.json"


def write_config(path: Path, **changes: object) -> Path:
    data: dict[str, object] = {
        "main": {
            "name": "main",
            "model": "judge-model",
            "temperature": 0.0,
            "system_prompt": "Main sees: {helper_response}",
        },
        "cycles": 1,
        "layer_agents": [
            {
                "name": "alpha",
                "model": "model-a",
                "temperature": 0.1,
                "system_prompt": "Alpha {helper_response}",
            },
            {
                "name": "beta",
                "model": "model-b",
                "temperature": 0.2,
                "system_prompt": "Beta {helper_response}",
            },
        ],
    }
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return path


def test_run_prints_answer_then_call_table(tmp_path: Path, server: OpenAIServer) -> None:
    config = write_config(tmp_path / "c.yaml")
    done = moa_opt(
        "run", str(config), "--prompt", "Say hi", "--base-url", server.base_url, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    first_line = done.stdout.splitlines()[0]
    assert first_line.startswith("[judge-model t=0.0] Main sees:")
    for name in ("alpha", "beta", "main", "model-a", "model-b", "judge-model", "total"):
        assert name in done.stdout
    assert len(server.chat_requests) == 3
    assert (tmp_path / "runs" / "cache.sqlite").exists()


def test_run_json_record_and_cache_hits_on_second_run(tmp_path: Path, server: OpenAIServer) -> None:
    config = write_config(tmp_path / "c.yaml")
    args = ("run", str(config), "--prompt", "Say hi", "--base-url", server.base_url, "--json")
    first = json.loads(moa_opt(*args, cwd=tmp_path).stdout)
    second = json.loads(moa_opt(*args, cwd=tmp_path).stdout)
    assert [c["cached"] for c in first["calls"]] == [False, False, False]
    assert [c["cached"] for c in second["calls"]] == [True, True, True]
    assert second["answer"] == first["answer"]
    assert second["prompt_tokens"] == 0 and second["completion_tokens"] == 0
    assert first["prompt_tokens"] > 0
    assert len(server.chat_requests) == 3
    main_call = first["calls"][-1]
    assert main_call["agent"] == "main" and main_call["cycle"] == 2
    assert main_call["messages"][1] == {"role": "user", "content": "Say hi"}
    assert "0. [model-a t=0.1] Alpha" in main_call["messages"][0]["content"]
    assert "1. [model-b t=0.2] Beta" in main_call["messages"][0]["content"]
    uncached = json.loads(moa_opt(*args, "--no-cache", cwd=tmp_path).stdout)
    assert not any(c["cached"] for c in uncached["calls"])
    assert len(server.chat_requests) == 6


def test_run_refuses_prompts_without_placeholder(tmp_path: Path, server: OpenAIServer) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        main={"name": "main", "model": "m", "temperature": 0.0, "system_prompt": "No placeholder"},
    )
    done = moa_opt("run", str(config), "--prompt", "x", "--base-url", server.base_url, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"moa-opt: error: {config}: main.system_prompt: has no ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not server.chat_requests


def test_run_challenge_task_sends_the_challenge_prompt(
    tmp_path: Path, server: OpenAIServer
) -> None:
    done = moa_opt(
        "run",
        str(WORKSHOP_DEFAULT),
        "--task",
        "challenge",
        "--base-url",
        server.base_url,
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert [c["model"] for c in record["calls"]] == ["llama3.1-8b", "llama3.1-8b"]
    user = record["calls"][0]["messages"][1]["content"]
    assert "calculate_user_metrics" in user
    assert "top_performers" in user


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "missing.yaml", "--prompt", "x"), "missing.yaml: cannot read"),
        (("run", "c.yaml"), "--task or --prompt: required (c.yaml names no task)"),
        (
            ("run", "c.yaml", "--prompt", "x", "--max-retries", "-1"),
            "--max-retries: must not be negative",
        ),
        (
            ("run", "c.yaml", "--prompt", "x", "--model-map", "oops"),
            "--model-map: expected NAME=provider/model",
        ),
        (("run", "c.yaml", "--task", "no-such-task"), "--task"),
        (("models", "--provider", "nope"), "--provider"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    write_config(tmp_path / "c.yaml")
    done = moa_opt(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_missing_cloud_key_names_the_env_var(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        cycles=0,
        layer_agents=[],
        main={
            "name": "main",
            "model": "cerebras/llama3.1-8b",
            "temperature": 0.0,
            "system_prompt": "s",
        },
    )
    done = moa_opt("run", str(config), "--prompt", "x", cwd=tmp_path)
    assert done.returncode == 2
    assert "set CEREBRAS_API_KEY" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_api_key_never_reaches_output_or_runs(tmp_path: Path) -> None:
    with OpenAIServer(api_key=SECRET) as server:
        config = write_config(tmp_path / "c.yaml")
        ok = moa_opt(
            "run",
            str(config),
            "--prompt",
            "x",
            "--base-url",
            server.base_url,
            "--json",
            cwd=tmp_path,
            env={"MOA_API_KEY": SECRET},
        )
        assert ok.returncode == 0, ok.stderr
        refused = moa_opt(
            "run",
            str(config),
            "--prompt",
            "y",
            "--base-url",
            server.base_url,
            cwd=tmp_path,
            env={"MOA_API_KEY": SECRET + "-wrong"},
        )
    assert refused.returncode == 1
    assert "401" in refused.stderr
    for text in (ok.stdout, ok.stderr, refused.stdout, refused.stderr):
        assert SECRET not in text
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes()


def test_models_lists_the_endpoints_models(tmp_path: Path, server: OpenAIServer) -> None:
    done = moa_opt("models", "--base-url", server.base_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["model-a", "model-b"]


def test_models_lists_embedded_models_without_keys(tmp_path: Path) -> None:
    done = moa_opt("models", "--provider", "local", cwd=tmp_path)
    assert done.stdout.split() == ["local/qwen2.5-coder-0.5b", "local/qwen2.5-coder-1.5b"]


def test_max_concurrency_flag_limits_calls_in_flight(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml")
    with OpenAIServer(latency=0.3) as server:
        args = ("run", str(config), "--prompt", "x", "--base-url", server.base_url, "--no-cache")
        assert moa_opt(*args, cwd=tmp_path).returncode == 0
        together = server.chat_requests[:2]  # the two layer agents of cycle 1
        assert max(r.started for r in together) < min(r.finished for r in together)
        assert moa_opt(*args, "--max-concurrency", "1", cwd=tmp_path).returncode == 0
        alone = server.chat_requests[3:5]
        assert max(r.started for r in alone) >= min(r.finished for r in alone)
