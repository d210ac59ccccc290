from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from optimizer import (
    AgentSpec,
    ConfigError,
    MoAConfig,
    config_from_dict,
    config_to_workshop,
    load_config,
    save_config,
)
from optimizer._config import load_config_task
from optimizer._taskref import TaskRef

ROOT = Path(__file__).resolve().parents[2]
WORKSHOP_DEFAULT = ROOT / "search_spaces" / "baselines" / "workshop-default.json"


def workshop_file(**changes: object) -> dict[str, object]:
    data = json.loads(WORKSHOP_DEFAULT.read_text())
    data["ai_configuration"].update(changes)
    return data


def test_workshop_default_loads_as_the_workshops_starting_config() -> None:
    config = load_config(WORKSHOP_DEFAULT)
    assert config.main == AgentSpec(
        name="main",
        model="llama3.1-8b",
        temperature=0.7,
        system_prompt=(
            "You are a helpful assistant. Please implement the requested function. "
            "{helper_response}"
        ),
    )
    assert config.cycles == 1
    assert [(a.name, a.model, a.temperature) for a in config.layer_agents] == [
        ("assistant", "llama3.1-8b", 0.5)
    ]
    assert config.layer_agents[0].system_prompt == "Help with the coding task. {helper_response}"


def test_workshop_round_trip_keeps_ai_configuration(tmp_path: Path) -> None:
    original = workshop_file(
        cycles=3,
        layer_agents=[
            {
                "name": "a",
                "model": "qwen-3-32b",
                "temperature": 0.0,
                "prompt": "x {y} {helper_response}",
            },
            {
                "name": "b",
                "model": "llama-3.3-70b",
                "temperature": 1.25,
                "prompt": "plain {helper_response}",
            },
        ],
    )
    source = tmp_path / "in.json"
    source.write_text(json.dumps(original))
    exported = tmp_path / "out.json"
    save_config(load_config(source), exported)
    again = json.loads(exported.read_text())
    assert again["ai_configuration"] == original["ai_configuration"]
    assert again["version"] == "2.0"
    datetime.strptime(again["exported_at"], "%Y-%m-%d %H:%M:%S")


def test_yaml_round_trip_keeps_every_field(tmp_path: Path) -> None:
    config = MoAConfig(
        main=AgentSpec("main", "local/qwen2.5-coder-1.5b", 0.2, "Final. {helper_response}", 300),
        cycles=2,
        layer_agents=(
            AgentSpec("a", "m1", 0.3, "A {helper_response}", 100),
            AgentSpec("b", "m2", 1.0, "B {helper_response}", 200),
        ),
        aggregation_template="Answers so far:\n{responses}\nDo better.",
    )
    path = tmp_path / "c.yaml"
    save_config(config, path)
    assert load_config(path) == config


def test_zero_cycles_without_agents_is_the_single_model_baseline() -> None:
    config = config_from_dict(
        {
            "main": {"name": "main", "model": "m", "temperature": 0, "system_prompt": "s"},
            "cycles": 0,
        }
    )
    assert config.layer_agents == ()
    assert config.models == ("m",)


def test_export_drops_nothing_the_workshop_format_holds() -> None:
    config = load_config(WORKSHOP_DEFAULT)
    data = config_to_workshop(config, exported_at=datetime(2026, 1, 2, 3, 4, 5))
    assert data["exported_at"] == "2026-01-02 03:04:05"
    assert set(data["ai_configuration"]) == {
        "main_model",
        "main_temperature",
        "cycles",
        "system_prompt",
        "layer_agents",
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cycles": -1}, "ai_configuration.cycles: Input should be greater than or equal to 0"),
        ({"cycles": "2"}, "ai_configuration.cycles: Input should be a valid integer"),
        ({"main_temperature": 2.5}, "ai_configuration.main_temperature: Input should be less"),
        ({"main_temperature": -0.1}, "ai_configuration.main_temperature: Input should be greater"),
        ({"layer_agents": []}, "ai_configuration.layer_agents: must not be empty when cycles > 0"),
        ({"shiny": True}, "ai_configuration.shiny: unknown field"),
        (
            {"layer_agents": [{"name": "a", "model": "m", "temperature": 3, "prompt": "p"}]},
            "ai_configuration.layer_agents.0.temperature: Input should be less than or equal to 2",
        ),
        (
            {"layer_agents": [{"name": "a", "model": "m", "temperature": 0.5}]},
            "ai_configuration.layer_agents.0.prompt: required field is missing",
        ),
    ],
)
def test_workshop_validation_names_file_and_field(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(workshop_file(**changes)))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ")
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"cycles": 1}, "main: required field is missing"),
        (
            {
                "main": {"name": "m", "model": "x", "temperature": 0.5, "system_prompt": "s"},
                "cycles": 1,
            },
            "layer_agents: must not be empty when cycles > 0",
        ),
        (
            {
                "main": {"name": "m", "model": "x", "temperature": 0.5, "system_prompt": "s"},
                "cycles": 0,
                "aggregation_template": "no placeholder",
            },
            "aggregation_template: must contain {responses}",
        ),
        (
            {
                "main": {
                    "name": "m",
                    "model": "x",
                    "temperature": 0.5,
                    "system_prompt": "s",
                    "max_tokens": 0,
                },
                "cycles": 0,
            },
            "main.max_tokens: Input should be greater than or equal to 1",
        ),
        (
            {
                "main": {"name": "m", "model": "x", "temperature": 0.5, "system_prompt": "s"},
                "cycles": 1,
                "layer_agents": [
                    {"name": "a", "model": "x", "temperature": 0.5, "system_prompt": "s"},
                    {"name": "a", "model": "y", "temperature": 0.5, "system_prompt": "s"},
                ],
            },
            "layer_agents: agent names must be unique",
        ),
        ("just text", "expected a mapping at the top level"),
    ],
)
def test_yaml_validation_names_file_and_field(tmp_path: Path, data: object, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="^" + str(path)) as caught:
        load_config(path)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing.yaml", None, "cannot read"),
        ("broken.json", "{not json", "invalid JSON: line 1"),
        ("broken.yaml", "main: [unclosed", "invalid YAML"),
        ("config.toml", "x = 1", "unknown config format"),
    ],
)
def test_unreadable_files_give_one_line(
    tmp_path: Path, name: str, text: str | None, message: str
) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


def test_a_config_whose_agents_would_miss_earlier_answers_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "main: {name: main, model: m, temperature: 0, system_prompt: Final.}\n"
        "cycles: 2\n"
        "layer_agents:\n"
        "  - {name: a, model: m, temperature: 0, system_prompt: 'A {helper_response}'}\n"
        "  - {name: b, model: m, temperature: 0, system_prompt: B}\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == (
        f"{path}: layer_agents.1.system_prompt: has no {{helper_response}}, so this agent would "
        "never see the earlier answers; add {helper_response} where they belong; "
        "main.system_prompt: has no {helper_response}, so this agent would never see the "
        "earlier answers; add {helper_response} where they belong"
    )
    workshop = tmp_path / "w.json"
    workshop.write_text(json.dumps(workshop_file(system_prompt="Final.")))
    with pytest.raises(ConfigError, match=r"w\.json: ai_configuration\.system_prompt: has no"):
        load_config(workshop)


def test_an_exported_config_names_its_task(tmp_path: Path) -> None:
    config = load_config(WORKSHOP_DEFAULT)
    ref = TaskRef("slugify", str(tmp_path / "slugify.yaml"), "sha256:abc")
    save_config(config, tmp_path / "best.yaml", ref)
    save_config(config, tmp_path / "best.json", ref)
    assert load_config(tmp_path / "best.yaml") == config == load_config(tmp_path / "best.json")
    assert load_config_task(tmp_path / "best.yaml") == (ref, tmp_path / "best.yaml")
    assert load_config_task(tmp_path / "best.json") == (ref, tmp_path / "best.task.yaml")
    assert load_config_task(WORKSHOP_DEFAULT) is None
    by_hand = tmp_path / "hand.yaml"
    by_hand.write_text(
        "task: tasks/mine.yaml\n"
        "main: {name: main, model: m, temperature: 0, system_prompt: Go.}\ncycles: 0\n"
    )
    found = load_config_task(by_hand)
    assert found is not None and found[0].source == str(tmp_path / "tasks" / "mine.yaml")
    assert found[0].name == "mine" and load_config(by_hand).cycles == 0
