"""End to end on the real embedded model (small token budgets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from moa_cli import moa_opt

pytestmark = pytest.mark.local_model


def test_workshop_config_runs_offline_on_the_embedded_model(tmp_path: Path) -> None:
    config = {
        "main": {
            "name": "main",
            "model": "llama3.1-8b",
            "temperature": 0.0,
            "system_prompt": "You write Python. {helper_response}",
            "max_tokens": 24,
        },
        "cycles": 1,
        "layer_agents": [
            {
                "name": "assistant",
                "model": "llama3.1-8b",
                "temperature": 0.0,
                "system_prompt": "Help with the coding task. {helper_response}",
                "max_tokens": 16,
            }
        ],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ("run", str(path), "--prompt", "Write a Python function add(a, b).", "--json")
    first = moa_opt(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "embedded model local/qwen2.5-coder-0.5b serves every model" in first.stderr
    record = json.loads(first.stdout)
    assert [c["agent"] for c in record["calls"]] == ["assistant", "main"]
    budgets = (16, 24)
    for call, budget in zip(record["calls"], budgets, strict=True):
        assert 0 < call["completion_tokens"] <= budget
    assert record["answer"].strip()
    # The main agent saw the assistant's answer, numbered.
    assert "0. " + record["calls"][0]["response"] in record["calls"][1]["messages"][0]["content"]
    again = json.loads(moa_opt(*args, cwd=tmp_path).stdout)
    assert again["answer"] == record["answer"]
    assert [c["cached"] for c in again["calls"]] == [True, True]
    fresh = json.loads(moa_opt(*args, "--no-cache", cwd=tmp_path).stdout)
    assert fresh["answer"] == record["answer"]  # temperature 0 is deterministic
