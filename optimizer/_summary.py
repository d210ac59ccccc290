"""What a search reports: progress snapshots, how each trial ended, and the final summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from optimizer._budget import Budget, Spent
from optimizer._config import MoAConfig, config_to_dict
from optimizer._failures import FailureCause
from optimizer._prompts import REJECTED_PREFIX
from optimizer._racing import ConfigRuns

if TYPE_CHECKING:
    from optimizer._confirm import Confirmation

__all__ = ["SearchSummary", "Status", "TrialEnd", "rejection_counts", "summary_dict"]


@dataclass(frozen=True)
class Status:
    """A snapshot for the progress display.

    Attributes:
        spent: What the study has used.
        budget: The budget.
        running: Trials of this process calling models or being graded.
        best: The incumbent's pooled mean score, or None.
        best_trial: The first trial of the incumbent's config.
        message: What just happened, or "".
        incumbent: Every run of the incumbent's config (mean, std, n), or None.
    """

    spent: Spent
    budget: Budget
    running: int
    best: float | None
    best_trial: int | None
    message: str = ""
    incumbent: ConfigRuns | None = None


@dataclass(frozen=True)
class TrialEnd:
    """How one trial of this session ended.

    Attributes:
        number: Trial number.
        state: ``COMPLETE``, ``PRUNED`` or ``FAIL``.
        values: Objective values of a complete trial.
        detail: The pruning reason or the error.
        cause: A failed trial's short cause (see :func:`optimizer._failures.error_cause`).
        transient: Whether the endpoint failed it and may answer later.
    """

    number: int
    state: TrialState
    values: tuple[float, ...] = ()
    detail: str = ""
    cause: str = ""
    transient: bool = False


@dataclass(frozen=True)
class SearchSummary:
    """How a search ended.

    Attributes:
        study: Study name.
        stopped_by: What stopped it (a budget, an interrupt, repeated failures).
        spent: What the study has used in total.
        session_trials: Trials this session ran, in the order they ended.
        stale: Trials a dead worker had left running, marked failed by this session (with
            heartbeats each is retried once).
        best: The first trial of the best config (the incumbent: the highest lower bound
            over its pooled runs, among those with enough runs), or None.
        best_config: Its config.
        pareto: Trial numbers on the Pareto front (multi-objective studies).
        confirmations: The confirm stage's results, best first.
        exports: Files the best config was written to.
        objectives: The study's objectives.
        failures: When most trials share a low score, its most common causes.
        best_runs: The best config's pooled search runs (mean, std, n, bounds), or None.
        rejected: Mutator answers the study rejected, counted by reason (``cut off by
            max_tokens``, ``near-duplicate``...).
        fresh_runs: The best config's fresh runs, made after the confirm stage chose it
            (the figures to expect), or None before a confirm stage.
        failed_by_cause: The study's failed trials counted by cause, most frequent first.
    """

    study: str
    stopped_by: str
    spent: Spent
    session_trials: tuple[TrialEnd, ...]
    stale: tuple[int, ...]
    best: FrozenTrial | None
    best_config: MoAConfig | None
    pareto: tuple[int, ...]
    confirmations: tuple[Confirmation, ...]
    exports: tuple[Path, ...]
    objectives: tuple[str, ...]
    failures: tuple[FailureCause, ...] = ()
    best_runs: ConfigRuns | None = None
    rejected: tuple[tuple[str, int], ...] = ()
    fresh_runs: ConfigRuns | None = None
    failed_by_cause: tuple[tuple[str, int], ...] = ()

    @property
    def interrupted(self) -> bool:
        """Whether a signal stopped the search."""
        return self.stopped_by.startswith("interrupt")


def rejection_counts(study: optuna.Study) -> tuple[tuple[str, int], ...]:
    """How many mutator answers the study rejected, by reason, most frequent first."""
    counts: dict[str, int] = {}
    for name, value in study.user_attrs.items():
        if name.startswith(f"{REJECTED_PREFIX}:") and isinstance(value, list):
            for item in value:
                reason = str(item.get("reason", "")) if isinstance(item, dict) else ""
                kind = reason.split(" (")[0].split(" of ")[0]
                counts[kind] = counts.get(kind, 0) + 1
    return tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _best_complete(study: optuna.Study) -> FrozenTrial | None:
    """The complete trial with the best mean score (on the Pareto front), earliest first."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    if len(study.directions) > 1:
        complete = study.best_trials
    return max(complete, key=lambda t: (t.values[0], -t.number))


def summary_dict(summary: SearchSummary) -> dict[str, Any]:
    """Returns the summary as JSON-ready data."""
    best = summary.best
    return {
        "study": summary.study,
        "stopped_by": summary.stopped_by,
        "spent": {
            "trials": summary.spent.trials,
            "failed": summary.spent.failed,
            "elapsed": summary.spent.elapsed,
            "tokens": summary.spent.tokens,
            "cost": summary.spent.cost,
        },
        "session_trials": [
            {
                "number": e.number,
                "state": e.state.name,
                "values": list(e.values),
                "detail": e.detail,
            }
            for e in summary.session_trials
        ],
        "stale": list(summary.stale),
        "best": None
        if best is None
        else {
            "number": best.number,
            "values": best.values,
            **{
                k: best.user_attrs.get(k)
                for k in ("mean", "std", "scores", "max_score", "max_rate", "test_pass_rates")
            },
        },
        "best_runs": None if summary.best_runs is None else summary.best_runs.stats(),
        "fresh_runs": None if summary.fresh_runs is None else summary.fresh_runs.stats(),
        "best_config": None if summary.best_config is None else config_to_dict(summary.best_config),
        "pareto": list(summary.pareto),
        "rejected_variants": dict(summary.rejected),
        "failed_by_cause": dict(summary.failed_by_cause),
        "confirmations": [c.to_dict() for c in summary.confirmations],
        "exports": [str(p) for p in summary.exports],
        "objectives": list(summary.objectives),
        "failures": [
            {"message": f.message, "trials": f.trials, "out_of": f.out_of} for f in summary.failures
        ],
    }
