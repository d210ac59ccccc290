from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from optimizer._config import DEFAULT_AGGREGATION_TEMPLATE, load_config
from optimizer._objective import behaviour
from optimizer._prompts import PromptPool
from optimizer._space import (
    LAYER,
    MAIN,
    SearchSpace,
    SpaceError,
    load_space,
    space_from_dict,
    task_and_grader,
)

ROOT = Path(__file__).resolve().parents[2]
SPACES = ROOT / "search_spaces"
SMOKE = SPACES / "smoke.yaml"
WORKSHOP_DEFAULT = SPACES / "baselines" / "workshop-default.json"


def smoke_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SMOKE.read_text())
    return data


def study_and_pool(
    space: SearchSpace, sampler: optuna.samplers.BaseSampler | None = None
) -> tuple[optuna.Study, PromptPool]:
    study = optuna.create_study(
        sampler=sampler or optuna.samplers.RandomSampler(seed=0), direction="maximize"
    )
    pool = PromptPool(study)
    pool.ensure_seeds(space.seed_prompts())
    return study, pool


@pytest.mark.parametrize("name", ["smoke", "challenge-local", "challenge-cerebras"])
def test_shipped_spaces_load_with_their_task_and_grader(name: str) -> None:
    space = load_space(SPACES / f"{name}.yaml")
    assert space.task == "challenge" and space.grader == "function120"
    assert space.layer_agents is not None and space.cycles.high >= 1


def test_the_humaneval_space_names_the_suite_and_no_grader() -> None:
    space = load_space(SPACES / "humaneval-local.yaml")
    assert (space.task, space.grader) == ("humaneval", None)
    tasks, grader = task_and_grader(space, str(SPACES / "humaneval-local.yaml"))
    assert len(tasks) == 164 and grader.name == "humaneval"


def test_local_space_searches_the_two_embedded_models_with_small_max_tokens() -> None:
    space = load_space(SPACES / "challenge-local.yaml", check_task=False)
    assert space.models == ("local/qwen2.5-coder-0.5b", "local/qwen2.5-coder-1.5b")
    assert space.layer_agents is not None
    # worst case per repeat: every cycle's agents plus the main agent at their max_tokens
    worst = space.cycles.high * space.layer_agents.count.high * max(space.layer_agents.max_tokens)
    worst += max(space.main.max_tokens)
    assert space.repeats * worst <= 1500  # ~2 min at 13 tokens/s on 2 cores


def test_cerebras_space_offers_the_workshop_models() -> None:
    space = load_space(SPACES / "challenge-cerebras.yaml", check_task=False)
    assert set(space.models) == {
        "llama3.1-8b",
        "llama-3.3-70b",
        "llama-4-scout-17b-16e-instruct",
        "qwen-3-32b",
    }


DROP = object()
NOT_EMPTY = "the list of choices must not be empty"
BAD = [
    ("main.models", ["bad model"], "main.models.0: invalid model id 'bad model'"),
    ("main.models", ["local/qwen-9b"], "main.models.0: unknown embedded model"),
    ("layer_agents.models", ["openai/"], "layer_agents.models.0: invalid model id"),
    ("layer_agents.models", [], f"layer_agents.models: {NOT_EMPTY}"),
    ("main.prompts", [], f"main.prompts: {NOT_EMPTY}"),
    ("cycles", {"low": 3, "high": 1}, "cycles: low (3) > high (1)"),
    ("main.temperature", {"low": 0.9, "high": 0.1}, "main.temperature: low (0.9) > high (0.1)"),
    ("main.temperature", {"low": 0, "high": 1, "step": 0.3},
     "main.temperature: high - low (1) is not a multiple of step"),
    ("layer_agents.count", {"low": 0, "high": 2}, "layer_agents.count: low must be at least 1"),
    ("main.temprature", 0.3, "main.temprature: unknown field"),
    ("main", DROP, "main: required field is missing"),
    ("layer_agents", DROP, "layer_agents: required when cycles can be above 0"),
    ("aggregation_template", ["{responses}", "none"],
     "aggregation_template.1: an aggregation template must contain {responses}"),
    ("same_model", "maybe", "same_model: expected true, false or search"),
    ("cycles", "two", "cycles: expected an integer or a mapping {low, high, step}"),
    ("repeats", 0, "repeats: Input should be greater than or equal to 1"),
    ("main.max_tokens", [64, -1], "main.max_tokens.1: Input should be greater than or equal to 1"),
    ("mutation.model", "a b", "mutation.model: invalid model id 'a b'"),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value", "message"), BAD)
def test_an_invalid_space_names_the_file_and_field(
    tmp_path: Path, field: str, value: Any, message: str
) -> None:
    data = smoke_data()
    *parents, last = field.split(".")
    where = data
    for name in parents:
        where = where[name]
    if value is DROP:
        del where[last]
    else:
        where[last] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpaceError) as error:
        load_space(path)
    assert str(error.value) == f"{path}: {message}" or str(error.value).startswith(
        f"{path}: {message}"
    )
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("field", "value"), [("task", "no-such-task"), ("grader", "no-such-grader")]
)
def test_unknown_task_or_grader_is_a_space_error(tmp_path: Path, field: str, value: str) -> None:
    data = smoke_data()
    data[field] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpaceError, match=rf"^{path}: {field}: .*{value}"):
        load_space(path)


def test_missing_file_and_invalid_yaml_are_space_errors(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="cannot read"):
        load_space(tmp_path / "none.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: [unclosed\n")
    with pytest.raises(SpaceError, match=r"broken.yaml: invalid YAML: line \d+"):
        load_space(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    with pytest.raises(SpaceError, match="expected a mapping at the top level"):
        load_space(listed)


def test_suggest_builds_valid_configs_and_only_suggests_what_a_trial_uses() -> None:
    space = space_from_dict(smoke_data(), "smoke")
    study, pool = study_and_pool(space)
    seen_cycles = set()
    for _ in range(60):
        trial = study.ask()
        config = space.suggest(trial, pool)
        study.tell(trial, 0.0)
        params = trial.params
        seen_cycles.add(config.cycles)
        assert config.main.max_tokens in (64, 128)
        if config.cycles == 0:
            assert config.layer_agents == ()
            assert not any(name.startswith("layer") for name in params)
            assert "same_model" not in params and "aggregation_template" not in params
            continue
        assert 1 <= len(config.layer_agents) <= 3
        assert len(config.layer_agents) == params["layer_agents"]
        assert all(0.0 <= a.temperature <= 1.0 for a in config.layer_agents)
        assert all(a.max_tokens == 64 for a in config.layer_agents)  # fixed: not a param
        assert "layer_max_tokens" not in params
        if params["same_model"]:
            assert {a.model for a in config.layer_agents} == {config.main.model}
            assert not any(
                n.endswith("_model") and n not in ("model", "same_model") for n in params
            )
        else:
            assert "model" not in params
            names = {f"layer_{i}_model" for i in range(len(config.layer_agents))}
            assert names <= set(params)
    assert seen_cycles == {0, 1, 2}


def test_fixed_fields_are_not_parameters() -> None:
    data = smoke_data()
    data.update(cycles=1, same_model=True, aggregation_template="Answers: {responses}")
    data["layer_agents"].update(count=2, temperature=0.3)
    data["main"].update(models="model-b", temperature=0.0, max_tokens=99)
    space = space_from_dict(data, "fixed")
    study, pool = study_and_pool(space)
    trial = study.ask()
    config = space.suggest(trial, pool)
    assert {n for n in trial.params if not n.endswith(tuple(f"_g{i}" for i in range(3)))} == set()
    assert config.cycles == 1 and config.aggregation_template == "Answers: {responses}"
    assert [(a.model, a.temperature) for a in config.layer_agents] == [("model-b", 0.3)] * 2
    assert (config.main.model, config.main.temperature, config.main.max_tokens) == (
        "model-b",
        0.0,
        99,
    )


def test_self_moa_uses_one_model_for_every_agent() -> None:
    data = smoke_data()
    data.update(same_model=True, cycles={"low": 1, "high": 2})
    space = space_from_dict(data, "self-moa")
    study, pool = study_and_pool(space)
    models = set()
    for _ in range(20):
        trial = study.ask()
        config = space.suggest(trial, pool)
        study.tell(trial, 0.0)
        assert {a.model for a in config.layer_agents} == {config.main.model}
        models.add(config.main.model)
    assert models == {"model-a", "model-b"}


def test_workshop_baseline_is_reproduced_exactly_where_the_space_can_express_it() -> None:
    data = smoke_data()
    data["main"].update(max_tokens=[128, 1024])
    data["layer_agents"].update(max_tokens=[64, 1024])
    data["main"]["prompts"].append(
        "You are a helpful assistant. Please implement the requested function. {helper_response}"
    )
    space = space_from_dict(data, "smoke")
    study, pool = study_and_pool(space)
    params, target = space.baseline_params(load_config(WORKSHOP_DEFAULT), pool.params_for)
    assert target.main.model == "model-a" and {a.model for a in target.layer_agents} == {"model-a"}
    assert params["same_model"] is True and params["model"] == "model-a"
    assert params["cycles"] == 1 and params["layer_agents"] == 1
    assert params["main_temperature"] == 0.7 and params["layer_0_temperature"] == 0.5
    study.enqueue_trial(params)
    trial = study.ask()
    config = space.suggest(trial, pool)
    assert trial.params == params
    assert behaviour(config) == behaviour(target)
    assert config.aggregation_template == DEFAULT_AGGREGATION_TEMPLATE


def test_baseline_is_approximated_when_the_space_cannot_express_it() -> None:
    data = smoke_data()
    data.update(cycles={"low": 2, "high": 3})
    data["layer_agents"].update(
        count={"low": 2, "high": 3}, temperature={"low": 0.6, "high": 1.0, "step": 0.2}
    )
    space = space_from_dict(data, "smoke")
    study, pool = study_and_pool(space)
    params, target = space.baseline_params(load_config(WORKSHOP_DEFAULT), pool.params_for)
    assert params["cycles"] == 2 and params["layer_agents"] == 2
    assert params["layer_0_temperature"] == 0.6 and params["layer_1_temperature"] == 0.6
    assert params["main_max_tokens"] == 128  # nearest to the workshop's 1024
    study.enqueue_trial(params)
    trial = study.ask()
    config = space.suggest(trial, pool)
    assert trial.params == params
    assert behaviour(config) != behaviour(target)
    assert config.cycles == 2 and len(config.layer_agents) == 2


def test_baseline_models_map_onto_the_space_in_turn() -> None:
    space = load_space(SPACES / "challenge-local.yaml", check_task=False)
    config = load_config(WORKSHOP_DEFAULT)
    mapped = space.map_models(config)
    assert mapped.main.model == "local/qwen2.5-coder-0.5b"
    assert mapped.layer_agents[0].model == "local/qwen2.5-coder-0.5b"
    two = config.with_models({"llama3.1-8b": "x"})
    two = type(two)(
        main=two.main,
        cycles=1,
        layer_agents=(config.layer_agents[0],),
    )
    mapped = space.map_models(two)
    assert (mapped.main.model, mapped.layer_agents[0].model) == (
        "local/qwen2.5-coder-0.5b",
        "local/qwen2.5-coder-1.5b",
    )


def test_overrides_fix_max_tokens_and_repeats() -> None:
    space = (
        load_space(SPACES / "challenge-local.yaml", check_task=False)
        .with_max_tokens(32)
        .with_repeats(1)
    )
    assert space.main.max_tokens == (32,) and space.layer_agents is not None
    assert space.layer_agents.max_tokens == (32,) and space.repeats == 1
    assert space.seed_prompts()[MAIN] and space.seed_prompts()[LAYER]
    assert copy.deepcopy(space) == space


def test_every_space_error_is_reported_at_once(tmp_path: Path) -> None:
    data = smoke_data()
    data["cycles"] = {"low": 2, "high": 1}
    data["main"]["temperatur"] = 0.5
    data["repeats"] = 0
    with pytest.raises(SpaceError) as raised:
        space_from_dict(data, "s.yaml")
    assert str(raised.value) == (
        "s.yaml: main.temperatur: unknown field (did you mean temperature?); repeats: Input "
        "should be greater than or equal to 1; cycles: low (2) > high (1)"
    )


def test_prompts_that_would_miss_the_earlier_answers_are_refused() -> None:
    data = smoke_data()  # cycles up to 2: layer agents and the main agent see earlier answers
    data["main"]["prompts"][1] = "Combine the answers into one function."
    data["layer_agents"]["prompts"][0] = "Help with the coding task."
    with pytest.raises(SpaceError) as raised:
        space_from_dict(data, "s.yaml")
    message = str(raised.value)
    assert message.startswith(
        "s.yaml: main.prompts.1: has no {helper_response}, so this agent would never see the "
        "earlier answers"
    )
    assert "; layer_agents.prompts.0: has no {helper_response}" in message
    data["cycles"] = {"low": 0, "high": 1}  # layer agents never see earlier answers now
    with pytest.raises(SpaceError, match=r"main\.prompts\.1") as raised:
        space_from_dict(data, "s.yaml")
    assert "layer_agents" not in str(raised.value)
    data["cycles"] = 0
    space_from_dict(data, "s.yaml")  # the main agent alone: nothing to see


def test_a_task_file_is_found_next_to_the_space_file(tmp_path: Path) -> None:
    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "sums.yaml").write_text(
        "name: sums\ngrader: exact\nprompt: 2+2?\nparams: {questions: [{answer: 4}]}\n"
    )
    data = smoke_data()
    data.update(task="sums.yaml", grader=None)
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_space(path).task == "sums.yaml"  # found from any working directory
