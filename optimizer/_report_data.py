"""What the report shows, read from a study (which may still be running)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from optimizer._export import CONFIRM_ATTR_PREFIX
from optimizer._prompts import PromptPool

__all__ = [
    "Confirmation",
    "LineageNode",
    "ReportTrial",
    "confirmations",
    "importances",
    "lineage",
    "report_trials",
    "top_trials",
]


@dataclass(frozen=True)
class ReportTrial:
    """A completed trial, as the report plots it.

    Attributes:
        number: Trial number.
        mean: Mean score over its repeats.
        scores: Each repeat's score.
        confirm_scores: The confirm stage's scores, if it re-evaluated the trial.
        tokens: Tokens spent.
        cost: Estimated US dollars.
        latency: Seconds its evaluation took.
        finished: When it finished.
        pass_rates: Pass rate of each test, by test name.
    """

    number: int
    mean: float
    scores: tuple[float, ...]
    confirm_scores: tuple[float, ...]
    tokens: int
    cost: float
    latency: float
    finished: datetime
    pass_rates: Mapping[str, float]


@dataclass(frozen=True)
class Confirmation:
    """The confirm stage's re-evaluation of one trial (study attr ``confirm:<number>``)."""

    number: int
    repeats: int
    mean: float
    std: float
    lcb: float
    max_rate: float
    max_score: float | None


@dataclass(frozen=True)
class LineageNode:
    """A prompt of the best config, or one of its ancestors.

    Attributes:
        id: Its pool id.
        generation: The generation it was written in.
        operator: How it was made (``seed``, ``rephrase``, ...).
        parents: Ids of the prompts it was made from.
        text: The prompt.
        used_as: The trial parameters that chose it in the best trial ("" for an ancestor).
    """

    id: str
    generation: int
    operator: str
    parents: tuple[str, ...]
    text: str
    used_as: str


def _number(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) else default


def confirmations(study: optuna.Study) -> dict[int, Confirmation]:
    """The confirm stage's results, by trial number."""
    found = {}
    for key, value in study.user_attrs.items():
        number = key.removeprefix(CONFIRM_ATTR_PREFIX)
        if key.startswith(CONFIRM_ATTR_PREFIX) and number.isdigit() and isinstance(value, dict):
            found[int(number)] = Confirmation(
                number=int(number),
                repeats=int(_number(value.get("repeats"))),
                mean=_number(value.get("mean")),
                std=_number(value.get("std")),
                lcb=_number(value.get("lcb")),
                max_rate=_number(value.get("max_rate")),
                max_score=_number(value.get("max_score"), -1.0) if "max_score" in value else None,
            )
    return found


def _confirm_scores(study: optuna.Study, number: int) -> tuple[float, ...]:
    value = study.user_attrs.get(f"{CONFIRM_ATTR_PREFIX}{number}")
    scores = value.get("scores", []) if isinstance(value, dict) else []
    return tuple(float(s) for s in scores if isinstance(s, int | float))


def report_trials(study: optuna.Study) -> list[ReportTrial]:
    """The study's completed trials that were scored, by trial number."""
    found = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        if not isinstance(attrs.get("mean"), int | float):
            continue
        scores = attrs.get("scores")
        rates = attrs.get("test_pass_rates")
        scores = scores if isinstance(scores, list) else []
        rates = rates if isinstance(rates, dict) else {}
        found.append(
            ReportTrial(
                number=trial.number,
                mean=float(attrs["mean"]),
                scores=tuple(float(s) for s in scores if isinstance(s, int | float)),
                confirm_scores=_confirm_scores(study, trial.number),
                tokens=int(_number(attrs.get("tokens"))),
                cost=_number(attrs.get("cost")),
                latency=_number(attrs.get("wall_time")),
                finished=trial.datetime_complete or trial.datetime_start or datetime.now(),
                pass_rates={
                    str(k): float(v) for k, v in rates.items() if isinstance(v, int | float)
                },
            )
        )
    return sorted(found, key=lambda t: t.number)


def top_trials(trials: Sequence[ReportTrial], count: int = 10) -> list[ReportTrial]:
    """The ``count`` best trials by mean score (the earlier trial first on a tie)."""
    return sorted(trials, key=lambda t: (-t.mean, t.number))[:count]


def importances(study: optuna.Study) -> dict[str, float] | str:
    """Optuna's parameter importances on the mean score, or why they cannot be computed yet."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if isinstance(t.user_attrs.get("mean"), int | float)
    ]
    if len(complete) < 3:
        return "needs at least 3 completed trials"
    if len({t.user_attrs["mean"] for t in complete}) == 1:
        return "every completed trial has the same mean score"
    try:
        with warnings.catch_warnings():  # Optuna warns of small samples in every report
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(
                study, target=lambda t: -float(t.user_attrs.get("mean", 0.0))
            )  # Optuna's default evaluator (PED-ANOVA) explains low target values
    except (RuntimeError, ValueError) as error:
        return f"Optuna could not compute them: {error}"
    if not found:
        return "no parameter varied across the completed trials"
    return {name: float(value) for name, value in found.items()}


def lineage(study: optuna.Study, trial: FrozenTrial) -> list[LineageNode]:
    """The pool prompts ``trial`` used and all their ancestors, by generation then id."""
    pool = PromptPool(study)
    used: dict[str, list[str]] = {}
    for param, variant in pool.used(trial).items():
        used.setdefault(variant.id, []).append(param)
    seen: dict[str, LineageNode] = {}
    waiting = list(used)
    while waiting:
        prompt_id = waiting.pop()
        if prompt_id in seen:
            continue
        try:
            variant = pool.variant(prompt_id)
        except KeyError:
            continue
        seen[prompt_id] = LineageNode(
            id=variant.id,
            generation=variant.generation,
            operator=variant.operator,
            parents=variant.parents,
            text=variant.text,
            used_as=", ".join(used.get(prompt_id, [])),
        )
        waiting.extend(variant.parents)
    return sorted(seen.values(), key=lambda n: (n.generation, n.id))
