"""Budgets and spending: what a study may use and what it has used, over every session."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from optimizer._best import FRESH_ATTR
from optimizer._prompts import MUTATION_SPEND_PREFIX
from optimizer._racing import RUNS_ATTR

__all__ = [
    "CONFIRM_ATTR",
    "NOT_RUN",
    "SESSION_ATTR",
    "Budget",
    "Spent",
    "failed_run",
    "study_spent",
]

CONFIRM_ATTR = "confirm"
"""Study user attrs ``confirm:<trial number>``: re-evaluations of studies made before racing
(their spending still counts; the confirm stage now writes ``runs:`` attrs)."""
SESSION_ATTR = "session"
"""Study user attrs ``session:<host>:<pid>:<start>``: ``[start, end]`` epoch seconds."""
NOT_RUN = "not run:"
"""Starts the error of a trial that was sampled ahead and never ran (a budget stopped it)."""


@dataclass(frozen=True)
class Budget:
    """When to stop; None means no limit. Each counts what the study already spent.

    Attributes:
        trials: Finished trials (complete or pruned).
        timeout: Seconds of search, over every session of the study.
        max_tokens: Prompt plus completion tokens.
        max_cost: Estimated US dollars.
    """

    trials: int | None = None
    timeout: float | None = None
    max_tokens: int | None = None
    max_cost: float | None = None


@dataclass(frozen=True)
class Spent:
    """What a study has used so far.

    Attributes:
        trials: Finished trials (complete or pruned).
        failed: Failed trials, not counting those sampled ahead that never ran.
        elapsed: Seconds of search over every session (overlapping sessions count once).
        tokens: Prompt plus completion tokens, trials and confirm stage.
        cost: Estimated US dollars, trials and confirm stage.
    """

    trials: int
    failed: int
    elapsed: float
    tokens: int
    cost: float

    def exhausted(self, budget: Budget) -> str | None:
        """Names the budget that is used up, or None."""
        if budget.trials is not None and self.trials >= budget.trials:
            return f"trials budget ({budget.trials} trials)"
        if budget.timeout is not None and self.elapsed >= budget.timeout:
            return f"time budget ({budget.timeout:g} s)"
        if budget.max_tokens is not None and self.tokens >= budget.max_tokens:
            return f"token budget ({budget.max_tokens:,} tokens)"
        if budget.max_cost is not None and self.cost >= budget.max_cost:
            return f"cost budget (${budget.max_cost:g})"
        return None


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _union_seconds(intervals: Sequence[tuple[float, float]]) -> float:
    total, end = 0.0, -math.inf
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def study_spent(
    study: optuna.Study, now: float | None = None, session: tuple[str, float] | None = None
) -> Spent:
    """Adds up what ``study`` has used: its trials, confirm runs and mutator calls.

    Args:
        study: The study.
        now: Epoch seconds taken as the end of the running session.
        session: The running session's attr key and start, which may not be stored yet.
    """
    trials = study.get_trials(deepcopy=False)
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    failed = sum(failed_run(t) for t in trials)
    tokens = sum(int(_number(t.user_attrs.get("tokens"))) for t in trials)
    cost = sum(_number(t.user_attrs.get("cost")) for t in trials)
    intervals: dict[str, tuple[float, float]] = {}
    for key, value in study.user_attrs.items():
        spend = key.startswith(
            (f"{CONFIRM_ATTR}:", f"{MUTATION_SPEND_PREFIX}:", f"{RUNS_ATTR}:", f"{FRESH_ATTR}:")
        )
        if spend and isinstance(value, dict):
            tokens += int(_number(value.get("tokens")))
            cost += _number(value.get("cost"))
        elif key.startswith(f"{SESSION_ATTR}:") and isinstance(value, list) and len(value) == 2:
            intervals[key] = (_number(value[0]), _number(value[1]))
    if session is not None:
        key, start = session
        intervals[key] = (start, time.time() if now is None else now)
    return Spent(finished, failed, _union_seconds(list(intervals.values())), tokens, cost)


def failed_run(trial: FrozenTrial) -> bool:
    """Whether ``trial`` failed after it started (not one sampled ahead that never ran)."""
    return trial.state == TrialState.FAIL and not str(trial.user_attrs.get("error")).startswith(
        NOT_RUN
    )
