from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest

from optimizer._config import config_from_dict, config_to_dict, load_config
from optimizer._racing import (
    ConfigRuns,
    best_config,
    confidence_interval,
    config_key,
    incumbent,
    lower_confidence_bound,
    more_runs,
    pooled_std,
    prediction_interval,
    study_runs,
    upper_confidence_bound,
)

ROOT = Path(__file__).resolve().parents[2]
WORKSHOP = ROOT / "search_spaces" / "baselines" / "workshop-default.json"


def runs(key: str, *scores: float, trial: int = 0) -> ConfigRuns:
    return ConfigRuns(key, {}, (trial,), tuple(range(len(scores))), scores, 120.0)


def test_config_key_ignores_agent_names_but_not_prompt_texts() -> None:
    data = config_to_dict(load_config(WORKSHOP))
    renamed = config_to_dict(load_config(WORKSHOP))
    renamed["main"]["name"] = "another name"
    for agent in renamed["layer_agents"]:
        agent["name"] = "x"
    assert config_key(data) == config_key(renamed)
    reworded = config_to_dict(load_config(WORKSHOP))
    reworded["main"]["system_prompt"] += " Be brief."
    assert config_key(reworded) != config_key(data)
    assert config_key(config_to_dict(config_from_dict(data))) == config_key(data)


def test_a_first_config_races_to_k_runs_and_a_weak_challenger_stops() -> None:
    assert more_runs(runs("a", 50), None, incumbent_runs=3, max_runs=8) == 1
    assert more_runs(runs("a", 50, 60), None, incumbent_runs=3, max_runs=8) == 1
    assert more_runs(runs("a", 50, 60, 70), None, incumbent_runs=3, max_runs=8) == 0
    leader = runs("inc", 80, 100, 60, 80)  # mean 80, sem 8.16
    assert more_runs(runs("c", 40), leader, incumbent_runs=3, max_runs=8) == 0
    # close (72 >= 80 - 8.16) or better: doubles its runs up to the incumbent's count
    assert more_runs(runs("c", 72), leader, incumbent_runs=3, max_runs=8) == 1
    assert more_runs(runs("c", 120, 100), leader, incumbent_runs=3, max_runs=8) == 2
    # ahead on the mean, not yet on the bound: on to max_runs, doubling
    assert more_runs(runs("c", 120, 100, 110), leader, incumbent_runs=3, max_runs=8) == 1
    assert more_runs(runs("c", 120, 0, 120, 120), leader, incumbent_runs=3, max_runs=8) == 4
    assert (
        more_runs(runs("c", 120, 0, 120, 120, 40, 110), leader, incumbent_runs=3, max_runs=8) == 2
    )
    assert more_runs(runs("c", 120, 0, 120, 120, 0, 120), leader, incumbent_runs=3, max_runs=8) == 0
    assert more_runs(runs("c", 80, 70, 75, 75), leader, incumbent_runs=3, max_runs=8) == 0
    assert more_runs(runs("c", 120, 100), leader, incumbent_runs=3, max_runs=3) == 1
    assert more_runs(leader, leader, incumbent_runs=3, max_runs=8) == 0


def test_one_lucky_run_never_outranks_a_config_with_k_runs() -> None:
    pools = {"lucky": runs("lucky", 120, trial=1), "steady": runs("steady", 70, 80, 75)}
    assert incumbent(pools, 3) is pools["steady"]
    assert best_config(pools, 3) is pools["steady"]
    assert best_config({"lucky": pools["lucky"]}, 3) is pools["lucky"]  # nothing else known
    assert incumbent({"lucky": pools["lucky"]}, 3) is None
    # with k runs each, the higher lower bound wins, not the higher mean
    noisy = runs("noisy", 120, 120, 0, 120)
    assert (
        noisy.mean > pools["steady"].mean
        and incumbent({**pools, "noisy": noisy}, 3).key == "steady"
    )


def test_bounds_form_a_90_percent_interval() -> None:
    scores = [60.0, 100.0, 60.0, 100.0]
    assert lower_confidence_bound(scores) == pytest.approx(80 - 2.353 * 23.094 / 2, abs=1e-2)
    assert upper_confidence_bound(scores) == pytest.approx(80 + 2.353 * 23.094 / 2, abs=1e-2)
    assert upper_confidence_bound([]) == lower_confidence_bound([]) == 0.0


def test_the_reported_interval_stays_within_the_scores_a_run_can_get() -> None:
    few = runs("few", 0, 10, 5)  # a t interval of three spread runs reaches below 0
    assert confidence_interval(few.scores)[0] < 0 and few.lcb < 0  # ranking keeps the bound
    low, high = few.interval
    assert low == 0.0 and high == pytest.approx(confidence_interval(few.scores)[1])
    assert runs("top", 120, 90).interval[1] == 120.0
    unknown = ConfigRuns("u", {}, (0,), (0, 1), (0.0, 30.0), 0.0)  # no max score: no top cut
    assert unknown.interval == (0.0, confidence_interval(unknown.scores)[1])


def test_a_reproductions_mean_lands_in_the_prediction_interval_not_always_in_the_ci() -> None:
    # 6 fresh runs predict the mean of a 10-run reproduction, as the confirm stage reports
    rng = np.random.default_rng(7)
    inside_prediction = inside_ci = 0
    for _ in range(4000):
        fresh = rng.normal(50.0, 30.0, 6).tolist()
        reproduced = float(rng.normal(50.0, 30.0, 10).mean())
        low, high = prediction_interval(fresh, 10)
        inside_prediction += low <= reproduced <= high
        low, high = confidence_interval(fresh)
        inside_ci += low <= reproduced <= high
    assert 0.93 < inside_prediction / 4000 < 0.97  # what it promises
    assert inside_ci / 4000 < 0.90  # the interval of the mean is too narrow for this
    # mean +- t(0.975, n - 1) * std * sqrt(1/n + 1/m)
    assert prediction_interval([60.0, 100.0, 60.0, 100.0], 10) == pytest.approx(
        (
            80 - 3.182 * 23.094 * (1 / 4 + 1 / 10) ** 0.5,
            80 + 3.182 * 23.094 * (1 / 4 + 1 / 10) ** 0.5,
        ),
        abs=1e-2,
    )
    assert prediction_interval([40.0], 10) == (40.0, 40.0)  # no spread known
    spread = runs("s", 0, 10, 5, 120, 115)
    stats = spread.stats()["reproduce_interval"]
    assert stats["repeats"] == 10 and (stats["low"], stats["high"]) == spread.predicted(10)
    assert spread.predicted(10)[0] == 0.0 and spread.predicted(10)[1] == 120.0  # cut to scores


def test_bounds_borrow_the_studys_spread_so_runs_that_agree_by_chance_are_not_certain() -> None:
    # three runs that agree, against six that spread (as on the embedded models)
    agree = runs("agree", 25, 25, 25)
    spread = runs("spread", 90, 10, 85, 15, 80, 8, trial=1)
    assert incumbent({"a": agree, "s": spread}, 3) is agree  # std 0 makes a tight bound
    prior = pooled_std({"a": agree, "s": spread})
    assert prior == pytest.approx((5 * spread.std**2 / 7) ** 0.5)
    agree, spread = replace(agree, prior=prior), replace(spread, prior=prior)
    assert incumbent({"a": agree, "s": spread}, 3) is spread  # the higher mean, known better
    # shrinkage: (4 prior runs x prior^2 + (n - 1) x s^2) / (n - 1 + 4), t with n - 1 + 4 df
    assert lower_confidence_bound([90.0], prior=10.0) == pytest.approx(90 - 2.132 * 10, abs=1e-2)
    assert confidence_interval([60.0, 100.0, 60.0, 100.0]) == pytest.approx(
        (80 - 3.182 * 23.094 / 2, 80 + 3.182 * 23.094 / 2), abs=1e-2
    )
    assert pooled_std({"one": runs("one", 50)}) == 0.0  # no spread known yet


def test_study_runs_pool_trials_and_confirm_runs_by_repeat_index() -> None:
    study = optuna.create_study(direction="maximize")
    config = config_to_dict(load_config(WORKSHOP))
    renamed = {**config, "main": {**config["main"], "name": "other"}}
    for number, (data, indices, scores) in enumerate(
        [(config, [0, 1], [10.0, 20.0]), (renamed, [2], [30.0]), (config, [1], [99.0])]
    ):
        trial = study.ask()
        for key, value in {"config": data, "repeat_indices": indices, "scores": scores,
                           "max_score": 120.0}.items():  # fmt: skip
            trial.set_user_attr(key, value)
        study.tell(trial, number)
    key = config_key(config)
    study.set_user_attr(f"runs:{key}:3", {"repeats": [3, 4], "scores": [40.0, 50.0]})
    pooled = study_runs(study)
    assert list(pooled) == [key]
    # repeat 1 was recorded twice (two trials at once): the first score stands
    assert pooled[key].repeats == (0, 1, 2, 3, 4)
    assert pooled[key].scores == (10.0, 20.0, 30.0, 40.0, 50.0)
    assert pooled[key].trials == (0, 1, 2) and pooled[key].next_repeat() == 5
    assert pooled[key].prior == pytest.approx(15.811, abs=1e-3)  # its own std: the only one
