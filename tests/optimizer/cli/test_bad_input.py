"""Bad config and space files: one line naming the file and field, exit code 2, no traceback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from moa_cli import ROOT, moa_opt

WORKSHOP_DEFAULT = ROOT / "search_spaces" / "baselines" / "workshop-default.json"
SMOKE = ROOT / "search_spaces" / "smoke.yaml"
# root reads any file; without these capabilities it obeys the file's mode like anyone
NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search"]
NO_DAC += ["--bounding-set=-dac_override,-dac_read_search"]


def run_config(path: Path, cwd: Path, prefix: list[str] | None = None) -> tuple[int, str]:
    done = moa_opt("run", str(path), "--prompt", "hi", cwd=cwd, prefix=prefix or [])
    return done.returncode, done.stderr


def search_space(path: Path, cwd: Path, prefix: list[str] | None = None) -> tuple[int, str]:
    done = moa_opt(
        "search",
        "--space",
        str(path),
        "--study",
        "bad",
        "--base-url",
        "http://127.0.0.1:9/v1",
        cwd=cwd,
        prefix=prefix or [],
    )
    return done.returncode, done.stderr


def assert_one_line(code: int, stderr: str, path: Path, *fragments: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"moa-opt: error: {path}: "), stderr
    for fragment in fragments:
        assert fragment in stderr


def binary(path: Path) -> Path:
    path.write_bytes(b"\x9f\x00\xff binary \x89PNG\r\n")
    return path


def workshop(path: Path, edit: dict[str, object]) -> Path:
    data = yaml.safe_load(WORKSHOP_DEFAULT.read_text())
    data["ai_configuration"].update(edit)
    path.write_text(json.dumps(data))
    return path


def space(path: Path, edit: dict[str, object], drop: str | None = None) -> Path:
    data = yaml.safe_load(SMOKE.read_text())
    data.update(edit)
    if drop is not None:
        del data[drop]
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", ["c.yaml", "c.json"])
def test_binary_config_is_one_line(tmp_path: Path, name: str) -> None:
    path = binary(tmp_path / name)
    assert_one_line(*run_config(path, tmp_path), path, "not a UTF-8 text file (byte 0x9f")


def test_binary_space_is_one_line(tmp_path: Path) -> None:
    path = binary(tmp_path / "s.yaml")
    assert_one_line(*search_space(path, tmp_path), path, "not a UTF-8 text file")


def test_directory_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.mkdir()
    assert_one_line(*run_config(path, tmp_path), path, "cannot read: Is a directory")
    assert_one_line(*search_space(path, tmp_path), path, "cannot read: Is a directory")


@pytest.mark.parametrize("name", ["c.yaml", "c.json", "s.yaml"])
def test_unreadable_file_is_one_line(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    shutil.copy(SMOKE if name == "s.yaml" else WORKSHOP_DEFAULT, path)
    if name == "c.yaml":
        path.write_text("main: {}\ncycles: 0\n")
    path.chmod(0)
    prefix = NO_DAC if os.geteuid() == 0 else []
    if prefix and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux): cannot make a file unreadable")
    run = search_space if name == "s.yaml" else run_config
    assert_one_line(*run(path, tmp_path, prefix), path, "cannot read: Permission denied")


def test_yaml_list_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "l.yaml"
    path.write_text("- main\n- cycles\n")
    expected = "expected a mapping at the top level, got a list"
    assert_one_line(*run_config(path, tmp_path), path, expected)
    assert_one_line(*search_space(path, tmp_path), path, expected)
    (tmp_path / "l.json").write_text("[1, 2]")
    assert_one_line(*run_config(tmp_path / "l.json", tmp_path), tmp_path / "l.json", "got a list")


def test_misspelled_config_field_is_named_with_a_suggestion(tmp_path: Path) -> None:
    data = yaml.safe_load(WORKSHOP_DEFAULT.read_text())
    data["ai_configuration"]["main_modle"] = data["ai_configuration"].pop("main_model")
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    code, stderr = run_config(path, tmp_path)
    expected = "ai_configuration.main_modle: unknown field (did you mean main_model?)"
    assert_one_line(code, stderr, path, expected)
    assert "required field is missing" not in stderr  # the typo explains it


def test_misspelled_nested_fields_in_our_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "main: {name: m, model: x, temperature: 0.1, system_promt: hi}\ncylces: 0\ntsak: t\n"
    )
    assert_one_line(
        *run_config(path, tmp_path),
        path,
        "main.system_promt: unknown field (did you mean system_prompt?)",
        "cylces: unknown field (did you mean cycles?)",
        "tsak: unknown field (did you mean task?)",
    )


def test_unknown_field_far_from_any_lists_the_known_ones(tmp_path: Path) -> None:
    path = space(tmp_path / "s.yaml", {"colour": "red"})
    assert_one_line(
        *search_space(path, tmp_path), path, "colour: unknown field (known fields: task, main,"
    )


def test_misspelled_space_fields_deep_inside(tmp_path: Path) -> None:
    data = yaml.safe_load(SMOKE.read_text())
    data["layer_agents"]["count"] = {"low": 1, "hihg": 3}
    data["mutation"]["evry"] = data["mutation"].pop("every")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    code, stderr = search_space(path, tmp_path)
    assert_one_line(
        code,
        stderr,
        path,
        "layer_agents.count.hihg: unknown field (did you mean high?)",
        "mutation.evry: unknown field (did you mean every?)",
    )
    assert "count.high: required field is missing" not in stderr


def test_wrong_types_name_the_field_and_the_value(tmp_path: Path) -> None:
    config = workshop(tmp_path / "c.json", {"cycles": "two"})
    assert_one_line(
        *run_config(config, tmp_path),
        config,
        "ai_configuration.cycles: Input should be a valid integer, got 'two'",
    )
    path = space(tmp_path / "s.yaml", {"repeats": "many", "main": 3})
    assert_one_line(
        *search_space(path, tmp_path),
        path,
        "repeats: Input should be a valid integer, got 'many'",
        "main: expected a mapping of fields, got 3",
    )


def test_a_mapping_where_a_list_belongs_says_list(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "main: {name: m, model: x, temperature: 0.1, system_prompt: hi}\n"
        "cycles: 1\nlayer_agents: {name: a}\n"
    )
    expected = "layer_agents: Input should be a list, got a mapping"
    assert_one_line(*run_config(path, tmp_path), path, expected)
