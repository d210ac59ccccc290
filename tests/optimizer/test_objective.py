from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from openai_server import Fault, OpenAIServer
from search_helpers import KeywordGrader, keyword_task, seed_responder

from optimizer._catalog import Catalog
from optimizer._config import config_from_dict
from optimizer._objective import Objective, Spend, parse_objectives, transcript_path
from optimizer._prompts import PromptPool
from optimizer._space import SearchSpace, space_from_dict
from optimizer.providers import ProviderError, Router

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "search_spaces" / "smoke.yaml"

ATTRS = {
    "config", "scores", "mean", "std", "max_score", "max_rate", "test_pass_rates",
    "prompt_tokens", "completion_tokens", "tokens", "calls", "cache_hits", "wall_time", "cost",
    "feedback", "transcript", "repeats", "seed",
}  # fmt: skip


def catalog(window: int = 8192) -> Catalog:
    return Catalog.from_dict(
        {"default": {"input_per_million": 1.0, "output_per_million": 2.0, "context_window": window}}
    )


def smoke(**changes: Any) -> SearchSpace:
    data = yaml.safe_load(SMOKE.read_text())
    data.update(changes)
    return space_from_dict(data, "smoke")


def make_objective(
    space: SearchSpace,
    router: Router,
    tmp_path: Path,
    window: int = 8192,
    objectives: tuple[str, ...] = ("score",),
) -> Objective:
    return Objective(
        space=space,
        tasks=[keyword_task("kw0"), keyword_task("kw1")],
        grader=KeywordGrader(),
        router=router,
        catalog=catalog(window),
        study_dir=tmp_path / "study",
        objectives=objectives,
        seed=4,
    )


def one_trial(
    objective: Objective, directions: list[str] | None = None, spend: Spend | None = None
) -> tuple[optuna.Study, optuna.Trial, list[float]]:
    study = optuna.create_study(
        directions=directions or ["maximize"], sampler=optuna.samplers.RandomSampler(seed=1)
    )
    pool = PromptPool(study)
    pool.ensure_seeds(objective.space.seed_prompts())
    trial = study.ask()
    values = asyncio.run(objective(trial, pool, spend))
    study.tell(trial, values)
    return study, trial, values


def test_a_trial_records_every_user_attr_and_its_transcript(tmp_path: Path) -> None:
    with OpenAIServer(seed_responder) as server:
        space = smoke(cycles=1, racing={"incumbent_runs": 2, "max_runs": 2})  # no extra runs
        objective = make_objective(space, Router(base_url=server.base_url), tmp_path)
        study, _, values = one_trial(objective)
    frozen = study.trials[0]
    attrs = frozen.user_attrs
    assert set(attrs) >= ATTRS
    # seeds 4 and 5: the even seed earns alpha + beta (100), the odd one alpha (60)
    assert attrs["scores"] == [100.0, 60.0] and attrs["repeats"] == 2 and attrs["seed"] == 4
    assert values == [80.0] and attrs["mean"] == 80.0 and attrs["max_score"] == 120.0
    assert attrs["test_pass_rates"] == {"has_alpha": 1.0, "has_beta": 0.5, "has_gamma": 0.0}
    assert json.loads(transcript_path(tmp_path / "study", 0).read_text().splitlines()[0])[
        "tasks"
    ] == ["kw0", "kw1"]
    config = config_from_dict(attrs["config"])
    assert config.cycles == 1
    calls = 2 * 2 * (len(config.layer_agents) + 1)  # 2 tasks x 2 repeats x calls per run
    assert attrs["calls"] == calls == len(server.chat_requests)
    assert attrs["tokens"] == attrs["prompt_tokens"] + attrs["completion_tokens"] > 0
    assert attrs["cost"] == pytest.approx(
        (attrs["prompt_tokens"] * 1.0 + attrs["completion_tokens"] * 2.0) / 1e6
    )
    assert "gamma" in attrs["feedback"]
    path = transcript_path(tmp_path / "study", frozen.number)
    assert attrs["transcript"] == str(path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["type"] == "evaluation" and lines[0]["trial"] == frozen.number
    assert sum(line["type"] == "call" for line in lines) == calls
    assert sum(line["type"] == "grade" for line in lines) == 4


def test_context_guard_prunes_without_calling_a_model(tmp_path: Path) -> None:
    with OpenAIServer(seed_responder) as server:
        objective = make_objective(smoke(), Router(base_url=server.base_url), tmp_path, window=60)
        study = optuna.create_study(direction="maximize")
        pool = PromptPool(study)
        pool.ensure_seeds(objective.space.seed_prompts())
        trial = study.ask()
        with pytest.raises(optuna.TrialPruned, match="context window is 60"):
            asyncio.run(objective(trial, pool))
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        assert server.chat_requests == []
    attrs = study.trials[0].user_attrs
    assert attrs["pruned_reason"].startswith("context: ") and "max_tokens" in attrs["pruned_reason"]
    assert "config" in attrs and "mean" not in attrs
    assert not transcript_path(tmp_path / "study", 0).exists()


@pytest.mark.parametrize("second", ["cost", "latency"])
def test_multi_objective_values(tmp_path: Path, second: str) -> None:
    with OpenAIServer(seed_responder) as server:
        objective = make_objective(
            smoke(cycles=0),
            Router(base_url=server.base_url),
            tmp_path,
            objectives=("score", second),
        )
        study, _, values = one_trial(objective, ["maximize", "minimize"])
    attrs = study.trials[0].user_attrs
    assert values[0] == attrs["mean"]
    if second == "cost":
        assert values[1] == pytest.approx(attrs["cost"]) and values[1] > 0
    else:
        assert 0 < values[1] <= attrs["wall_time"]


def test_a_failed_call_records_what_was_spent_and_raises(tmp_path: Path) -> None:
    with OpenAIServer(seed_responder) as server:
        router = Router(base_url=server.base_url, max_retries=2)
        objective = make_objective(smoke(cycles=0, repeats=1), router, tmp_path)
        # one instance is answered; the other fails for good after two retries (~1 s of
        # backoff), by which time the first has been graded
        server.inject(Fault(kind="delay"), Fault(status=500), Fault(status=500), Fault(status=500))
        spend = Spend()
        study = optuna.create_study(direction="maximize")
        pool = PromptPool(study)
        pool.ensure_seeds(objective.space.seed_prompts())
        trial = study.ask()
        with pytest.raises(ProviderError):
            asyncio.run(objective(trial, pool, spend))
    attrs = study.trials[0].user_attrs
    assert spend.runs == 1 and spend.tokens > 0
    assert attrs["tokens"] == spend.tokens and attrs["cost"] == spend.cost
    assert "mean" not in attrs


def test_parse_objectives() -> None:
    assert parse_objectives("score") == ("score",)
    assert parse_objectives("score, cost") == ("score", "cost")
    assert parse_objectives("score,latency") == ("score", "latency")
    for bad in ("", "cost", "score,score", "score,speed", "score,cost,latency"):
        with pytest.raises(ValueError):
            parse_objectives(bad)
