from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from optimizer._best import BEST_ATTR
from optimizer._config import config_to_dict, load_config
from optimizer._racing import config_key
from optimizer.cli.trials import trial_rows

WORKSHOP = Path(__file__).parents[3] / "search_spaces" / "baselines" / "workshop-default.json"


def at(temperature: float) -> dict[str, Any]:
    config = config_to_dict(load_config(WORKSHOP))
    return {**config, "main": {**config["main"], "temperature": temperature}}


def test_rows_rank_a_configs_pooled_runs_so_one_lucky_trial_does_not_lead() -> None:
    study = optuna.create_study(direction="maximize")
    lucky, steady = at(0.9), at(0.2)
    for config, indices, scores in [
        (lucky, [0], [120.0]),  # one lucky run ...
        (steady, [0, 1, 2, 3], [70.0, 72.0, 68.0, 71.0]),
        (lucky, [1, 2, 3], [10.0, 20.0, 15.0]),  # ... that the config's other runs refute
    ]:
        trial, mean = study.ask(), sum(scores) / len(scores)
        attrs = {"config": config, "repeat_indices": indices, "scores": scores, "mean": mean}
        for key, value in {**attrs, "max_score": 120.0}.items():
            trial.set_user_attr(key, value)
        study.tell(trial, mean)
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    study.set_user_attr(BEST_ATTR, {"config_key": config_key(steady)})

    rows = trial_rows(study)

    assert [r.number for r in rows] == [1, 0, 2, 3]
    first, lucky_row = rows[0], rows[1]
    assert first.best and first.config_runs == 4 and first.config_mean == 70.25
    # its bound borrows the study's spread (the lucky config's), so it sits well below its mean
    assert first.lower_bound is not None and 0 < first.lower_bound < 70.25
    assert lucky_row.lower_bound is not None and lucky_row.lower_bound < first.lower_bound
    # the lucky trial's own mean is 120, but its config's four runs average 41.25
    assert lucky_row.mean == 120.0 and lucky_row.repeats == 1
    assert lucky_row.config_runs == 4 and lucky_row.config_mean == 41.25
    assert not lucky_row.best and rows[2].config_mean == 41.25
    assert rows[3].state == "FAIL" and rows[3].lower_bound is None and rows[3].config_runs == 0
