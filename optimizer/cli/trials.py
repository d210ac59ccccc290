"""``moa-opt trials``: a study's leaderboard, trials by their config's pooled runs."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich import box
from rich.table import Table

from optimizer._best import study_best, study_incumbent_runs
from optimizer._config import ConfigError, config_from_dict, describe_config
from optimizer._racing import ConfigRuns, rank_key, study_runs
from optimizer._storage import DEFAULT_RUNS_DIR, load_study
from optimizer.cli._common import console, positive_int

__all__ = ["TrialRow", "register", "trial_rows"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the ``trials`` command."""
    parser = commands.add_parser(
        "trials",
        help="a study's leaderboard: trials ranked by their config's pooled runs",
        description=(
            "List a study's trials, best first (then pruned, failed and running ones). A "
            "config's runs are pooled, whichever trials made them: rows are ordered by the "
            "95% lower bound of the config's mean (as the best is chosen), and show "
            "its mean, std and runs; * marks the study's best config. Then "
            "tokens, estimated cost, state and the config in one line."
        ),
    )
    parser.add_argument("--study", required=True, metavar="NAME", help="study name")
    parser.add_argument(
        "--storage",
        metavar="URL",
        help=f"Optuna storage URL or journal file (default {DEFAULT_RUNS_DIR}/<study>/journal.log)",
    )
    parser.add_argument("--top", type=positive_int, metavar="N", help="only the first N rows")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.set_defaults(handler=handle)


@dataclass(frozen=True)
class TrialRow:
    """One trial on the leaderboard.

    Attributes:
        number: Trial number.
        state: ``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING`` or ``WAITING``.
        mean: Mean score over the trial's own repeats, if it was scored.
        std: Their standard deviation.
        repeats: The trial's own repeats scored.
        max_score: Points a repeat can earn.
        tokens: Tokens spent.
        cost: Estimated US dollars.
        config: The config in one line, or "".
        note: Why it failed or was pruned, or "".
        config_mean: Mean over every run of the trial's config (pooled), if scored.
        config_std: Their standard deviation.
        config_runs: Runs of the config, whichever trials (or the confirm stage) made them.
        lower_bound: One-sided 95% lower bound of the config's mean.
        best: Whether the config is the study's best (the confirm stage's choice, if any).
    """

    number: int
    state: str
    mean: float | None
    std: float | None
    repeats: int
    max_score: float | None
    tokens: int
    cost: float
    config: str
    note: str
    config_mean: float | None = None
    config_std: float | None = None
    config_runs: int = 0
    lower_bound: float | None = None
    best: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Returns the JSON form."""
        return {
            "number": self.number,
            "state": self.state,
            "mean": self.mean,
            "std": self.std,
            "repeats": self.repeats,
            "max_score": self.max_score,
            "tokens": self.tokens,
            "cost": self.cost,
            "config": self.config,
            "note": self.note,
            "config_mean": self.config_mean,
            "config_std": self.config_std,
            "config_runs": self.config_runs,
            "lower_bound": self.lower_bound,
            "best": self.best,
        }


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok else None


def _row(trial: FrozenTrial, pools: dict[int, ConfigRuns], best: str | None) -> TrialRow:
    attrs = trial.user_attrs
    pool = pools.get(trial.number)
    description = ""
    if isinstance(attrs.get("config"), dict):
        try:
            description = describe_config(config_from_dict(attrs["config"]))
        except ConfigError:
            description = "(unreadable config)"
    scores = attrs.get("scores")
    note = attrs.get("error") or attrs.get("pruned_reason") or ""
    return TrialRow(
        number=trial.number,
        state=trial.state.name,
        mean=_number(attrs.get("mean")) if trial.state == TrialState.COMPLETE else None,
        std=_number(attrs.get("std")) if trial.state == TrialState.COMPLETE else None,
        repeats=len(scores) if isinstance(scores, list) else 0,
        max_score=_number(attrs.get("max_score")),
        tokens=int(_number(attrs.get("tokens")) or 0),
        cost=_number(attrs.get("cost")) or 0.0,
        config=description,
        note=" ".join(str(note).split()),
        config_mean=None if pool is None else pool.mean,
        config_std=None if pool is None else pool.std,
        config_runs=0 if pool is None else pool.n,
        lower_bound=None if pool is None else pool.lcb,
        best=pool is not None and pool.key == best,
    )


def trial_rows(study: optuna.Study) -> list[TrialRow]:
    """Every trial: scored ones as the search ranks their configs (:func:`rank_key`: enough
    runs, then lower bound, then mean; best first), then the others by number."""
    need = study_incumbent_runs(study)
    pools = {n: runs for runs in study_runs(study).values() for n in runs.trials}
    chosen = study_best(study, need)
    best = None if chosen is None else chosen.search.key
    rows = [_row(t, pools, best) for t in study.get_trials(deepcopy=False)]
    scored = sorted(
        (r for r in rows if r.number in pools),
        key=lambda r: (rank_key(pools[r.number], need), -r.number),
        reverse=True,
    )
    return scored + sorted((r for r in rows if r.number not in pools), key=lambda r: r.number)


def handle(args: argparse.Namespace) -> int:
    """Runs the command."""
    study = load_study(args.study, args.storage)
    rows = trial_rows(study)[: args.top]
    if args.json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
        return 0
    if not rows:
        print(f"study {args.study!r} has no trials yet")
        return 0
    table = Table(
        title=f"trials of {args.study}",
        caption="mean, std, n: every run of the trial's config; * the study's best config",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("#", "bound", "mean", "std", "n", "tokens", "cost $"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("config", ratio=1, overflow="fold")
    for row in rows:
        top = "" if row.max_score is None else f"/{row.max_score:g}"
        table.add_row(
            f"{'*' if row.best else ''}{row.number}",
            "-" if row.lower_bound is None else f"{row.lower_bound:.4g}",
            "-" if row.config_mean is None else f"{row.config_mean:.4g}{top}",
            "-" if row.config_std is None else f"{row.config_std:.3g}",
            str(row.config_runs or row.repeats),
            f"{row.tokens:,}",
            f"{row.cost:.4f}",
            row.state.lower(),
            row.config or row.note,
        )
    console().print(table)
    return 0
