from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from optimizer._config import (
    AgentSpec,
    MoAConfig,
    config_from_dict,
    config_from_workshop,
    config_to_dict,
)
from optimizer._export import (
    ExportError,
    best_configs,
    export_configs,
    format_for_path,
    render_configs,
    workshop_losses,
)
from optimizer._storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_config(temperature: float, max_tokens: int = 1024) -> MoAConfig:
    return MoAConfig(
        main=AgentSpec("main", "llama3.1-8b", temperature, "Main {helper_response}", max_tokens),
        cycles=1,
        layer_agents=(
            AgentSpec("assistant", "qwen-3-32b", 0.5, "Help {helper_response}", max_tokens),
        ),
    )


def add(study: optuna.Study, values: list[float], config: MoAConfig, **attrs: object) -> None:
    study.add_trial(
        optuna.trial.create_trial(
            values=values, user_attrs={"config": config_to_dict(config), **attrs}
        )
    )


def study_in(tmp_path: Path, directions: list[str] | None = None) -> optuna.Study:
    storage = open_storage("s", runs_dir=tmp_path / "runs")
    return optuna.create_study(
        study_name="s", storage=storage, directions=directions or ["maximize"]
    )


def test_single_objective_exports_the_best_score(tmp_path: Path) -> None:
    study = study_in(tmp_path)
    add(study, [60.0], make_config(0.1), mean=60.0, repeats=3)
    add(study, [110.0], make_config(0.2), mean=110.0, repeats=3)
    add(study, [110.0], make_config(0.3), mean=110.0, repeats=3)  # a tie: the earlier wins
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    [best] = best_configs(study)
    assert best.trial == 1 and best.config == make_config(0.2)
    assert best.mean == 110.0 and best.repeats == 3 and not best.confirmed


def test_the_confirm_stage_decides_when_it_ran(tmp_path: Path) -> None:
    study = study_in(tmp_path)
    add(study, [100.0], make_config(0.1))
    add(study, [119.0], make_config(0.2))  # lucky on few repeats
    study.set_user_attr("confirm:0", {"mean": 104.0, "lcb": 101.0, "repeats": 10})
    study.set_user_attr("confirm:1", {"mean": 90.0, "lcb": 70.0, "repeats": 10})
    [best] = best_configs(study)
    assert best.trial == 0 and best.confirmed and best.mean == 104.0 and best.repeats == 10


def test_a_study_with_racing_exports_the_highest_lower_bound_with_its_statistics(
    tmp_path: Path,
) -> None:
    study = study_in(tmp_path)
    study.set_user_attr("racing", {"incumbent_runs": 3, "max_runs": 8})
    add(study, [120.0], make_config(0.1), scores=[120.0], max_score=120.0)  # one lucky run
    add(study, [80.0], make_config(0.2), scores=[80.0, 90.0], max_score=120.0,
        repeat_indices=[0, 1])  # fmt: skip
    add(study, [85.0], make_config(0.2), scores=[85.0], max_score=120.0, repeat_indices=[2])
    [best] = best_configs(study)
    assert best.trial == 1 and best.config == make_config(0.2) and not best.confirmed
    assert best.runs is not None and best.runs.search.scores == (80.0, 90.0, 85.0)
    assert best.mean == 85.0 and best.repeats == 3
    written = export_configs([best], tmp_path / "out" / "best.yaml", "yaml")
    assert written == [tmp_path / "out" / "best.yaml", tmp_path / "out" / "best.stats.json"]
    text = written[0].read_text()
    assert text.startswith("# Best config: trial 1 (runs pooled over trials 1, 2).\n")
    assert "# Its 3 search runs: mean 85/120, std 5, 95% interval" in text
    assert "Not confirmed on fresh runs yet" in text
    assert config_from_dict(yaml.safe_load(text)) == make_config(0.2)
    stats = json.loads(written[1].read_text())
    assert stats["n"] == 3 and stats["best_single_run"] == 90.0 and stats["trial"] == 1
    # the spread is shrunk toward the study's pooled std (5 here), t with 2 + 4 df
    assert stats["lcb"] == pytest.approx(85 - 1.943 * 5 / 3**0.5, abs=1e-2)
    # once the confirm stage has chosen it and run it fresh, those runs are what is reported
    key = best.runs.search.key
    study.set_user_attr("best", {"config_key": key})
    study.set_user_attr(f"fresh:{key}:1000000", {"repeats": [1000000, 1000001, 1000002],
                                                 "scores": [40.0, 50.0, 60.0]})  # fmt: skip
    [best] = best_configs(study)
    assert best.confirmed and best.mean == 50.0 and best.repeats == 3
    text = export_configs([best], tmp_path / "c" / "best.yaml", "yaml")[0].read_text()
    assert "# Confirmed on 3 fresh runs after it was chosen: mean 50/120, std 10" in text
    assert "# The 3 search runs that chose it: mean 85, std 5 (optimistic" in text
    workshop = export_configs([best], tmp_path / "w" / "best.json", "workshop")
    assert config_from_workshop(json.loads(workshop[0].read_text())).main.temperature == 0.2


def test_multi_objective_exports_the_pareto_front(tmp_path: Path) -> None:
    study = study_in(tmp_path, ["maximize", "minimize"])
    add(study, [100.0, 0.02], make_config(0.1))
    add(study, [90.0, 0.05], make_config(0.2))  # dominated
    add(study, [120.0, 0.04], make_config(0.3))
    front = best_configs(study)
    assert [e.trial for e in front] == [0, 2]
    assert [e.values for e in front] == [(100.0, 0.02), (120.0, 0.04)]
    paths = export_configs(front, tmp_path / "out" / "front.json", "workshop")
    assert paths == [tmp_path / "out/front-trial0.json", tmp_path / "out/front-trial2.json"]
    assert config_from_workshop(json.loads(paths[1].read_text())) == make_config(0.3)
    listing = json.loads(render_configs(front, "workshop"))
    assert [c["ai_configuration"]["main_temperature"] for c in listing] == [0.1, 0.3]
    documents = list(yaml.safe_load_all(render_configs(front, "yaml")))
    assert [config_from_dict(d) for d in documents] == [make_config(0.1), make_config(0.3)]


def test_nothing_to_export_is_a_user_error(tmp_path: Path) -> None:
    study = study_in(tmp_path)
    with pytest.raises(ExportError, match="study 's' has no completed trial to export yet"):
        best_configs(study)


def test_workshop_export_round_trips_and_names_what_it_drops(tmp_path: Path) -> None:
    plain, small = make_config(0.2), make_config(0.2, max_tokens=256)
    assert workshop_losses(plain) == []
    assert workshop_losses(small) == ["max_tokens (256)"]
    [path] = export_configs(best_configs_of(tmp_path, plain), tmp_path / "best.json", "workshop")
    data = json.loads(path.read_text())
    assert set(data) == {"ai_configuration", "exported_at", "version"}
    assert config_from_workshop(data) == plain
    [path] = export_configs(best_configs_of(tmp_path, small, "t"), tmp_path / "b.yaml", "yaml")
    assert config_from_dict(yaml.safe_load(path.read_text())) == small


def best_configs_of(tmp_path: Path, config: MoAConfig, name: str = "one") -> list:  # type: ignore[type-arg]
    storage = open_storage(name, runs_dir=tmp_path / "runs")
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    add(study, [1.0], config)
    return best_configs(study)


def test_format_follows_the_flag_then_the_suffix() -> None:
    assert format_for_path(None, None) == "workshop"
    assert format_for_path(Path("x.yaml"), None) == "yaml"
    assert format_for_path(Path("x.yml"), None) == "yaml"
    assert format_for_path(Path("x.json"), "yaml") == "yaml"
    assert format_for_path(Path("x.yaml"), "workshop") == "workshop"


def test_config_attr_stored_as_json_text_is_read_too(tmp_path: Path) -> None:
    study = study_in(tmp_path)
    study.add_trial(
        optuna.trial.create_trial(
            value=1.0, user_attrs={"config": json.dumps(config_to_dict(make_config(0.4)))}
        )
    )
    assert best_configs(study)[0].config == make_config(0.4)
