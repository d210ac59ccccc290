from __future__ import annotations

import json
from pathlib import Path

import optuna
import yaml
from moa_cli import moa_opt

from optimizer._config import (
    AgentSpec,
    MoAConfig,
    config_from_dict,
    config_from_workshop,
    config_to_dict,
)
from optimizer._storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


def config(temperature: float, max_tokens: int = 1024) -> MoAConfig:
    return MoAConfig(
        main=AgentSpec("main", "llama3.1-8b", temperature, "Main {helper_response}", max_tokens),
        cycles=1,
        layer_agents=(AgentSpec("a", "llama3.1-8b", 0.5, "Help {helper_response}", max_tokens),),
    )


def make_study(
    cwd: Path,
    name: str,
    directions: list[str],
    trials: list[tuple[list[float], MoAConfig]],
    storage: str | None = None,
) -> None:
    study = optuna.create_study(
        study_name=name,
        storage=open_storage(name, storage, runs_dir=cwd / "runs"),
        directions=directions,
    )
    for values, cfg in trials:
        study.add_trial(
            optuna.trial.create_trial(values=values, user_attrs={"config": config_to_dict(cfg)})
        )


def test_export_best_to_stdout_and_to_a_file(tmp_path: Path) -> None:
    make_study(tmp_path, "demo", ["maximize"], [([50.0], config(0.1)), ([118.0], config(0.9))])
    shown = moa_opt("export", "--study", "demo", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert config_from_workshop(json.loads(shown.stdout)) == config(0.9)
    assert "trial 1" in shown.stderr
    written = moa_opt("export", "--study", "demo", "-o", "out/best.yaml", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    assert config_from_dict(yaml.safe_load((tmp_path / "out/best.yaml").read_text())) == config(0.9)
    assert "wrote out/best.yaml" in written.stderr


def test_export_warns_what_the_workshop_format_drops(tmp_path: Path) -> None:
    make_study(tmp_path, "small", ["maximize"], [([1.0], config(0.2, max_tokens=256))])
    done = moa_opt("export", "--study", "small", "-o", "b.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "no place for max_tokens (256)" in done.stderr and "--format yaml" in done.stderr


def test_export_pareto_front_writes_one_file_per_config(tmp_path: Path) -> None:
    trials = [
        ([100.0, 0.01], config(0.1)),
        ([90.0, 0.02], config(0.2)),
        ([120.0, 0.03], config(0.3)),
    ]
    make_study(tmp_path, "multi", ["maximize", "minimize"], trials)
    done = moa_opt("export", "--study", "multi", "-o", "front.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.glob("front*.json")) == [
        "front-trial0.json",
        "front-trial2.json",
    ]
    loaded = config_from_workshop(json.loads((tmp_path / "front-trial2.json").read_text()))
    assert loaded == config(0.3)


def test_export_from_a_storage_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    make_study(tmp_path, "indb", ["maximize"], [([3.0], config(0.3))], storage=url)
    done = moa_opt("export", "--study", "indb", "--storage", url, "--format", "yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert config_from_dict(yaml.safe_load(done.stdout)) == config(0.3)


def test_missing_study_is_one_line_listing_the_others(tmp_path: Path) -> None:
    make_study(tmp_path, "alpha", ["maximize"], [([1.0], config(0.1))])
    done = moa_opt("export", "--study", "nope", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "moa-opt: error: --study: no study named 'nope'; existing studies: alpha"
    ]
    assert done.stdout == ""
