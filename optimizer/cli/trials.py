"""``moa-opt trials``: a study's leaderboard, trials by mean score."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from rich import box
from rich.console import Console
from rich.table import Table

from optimizer._config import ConfigError, config_from_dict, describe_config
from optimizer._storage import DEFAULT_RUNS_DIR, load_study
from optimizer.cli._common import positive_int

__all__ = ["TrialRow", "register", "trial_rows"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the ``trials`` command."""
    parser = commands.add_parser(
        "trials",
        help="a study's leaderboard: trials by mean score",
        description=(
            "List a study's trials, best mean score first (then pruned, failed and running "
            "ones): mean, std, repeats, tokens, estimated cost, state and the config in one line."
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
        mean: Mean score over its repeats, if it was scored.
        std: Their standard deviation.
        repeats: Repeats scored.
        max_score: Points a repeat can earn.
        tokens: Tokens spent.
        cost: Estimated US dollars.
        config: The config in one line, or "".
        note: Why it failed or was pruned, or "".
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
        }


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok else None


def _row(trial: FrozenTrial) -> TrialRow:
    attrs = trial.user_attrs
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
    )


def trial_rows(trials: list[FrozenTrial]) -> list[TrialRow]:
    """Every trial, complete ones by mean score (best first), then the others by number."""
    rows = [_row(t) for t in trials]
    scored = sorted(
        (r for r in rows if r.mean is not None), key=lambda r: (-(r.mean or 0.0), r.number)
    )
    return scored + sorted((r for r in rows if r.mean is None), key=lambda r: r.number)


def handle(args: argparse.Namespace) -> int:
    """Runs the command."""
    study = load_study(args.study, args.storage)
    rows = trial_rows(study.get_trials(deepcopy=False))[: args.top]
    if args.json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
        return 0
    if not rows:
        print(f"study {args.study!r} has no trials yet")
        return 0
    table = Table(title=f"trials of {args.study}", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("#", "mean", "std", "n", "tokens", "cost $"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("config", ratio=1, overflow="fold")
    for row in rows:
        top = "" if row.max_score is None else f"/{row.max_score:g}"
        table.add_row(
            str(row.number),
            "-" if row.mean is None else f"{row.mean:.4g}{top}",
            "-" if row.std is None else f"{row.std:.3g}",
            str(row.repeats),
            f"{row.tokens:,}",
            f"{row.cost:.4f}",
            row.state.lower(),
            row.config or row.note,
        )
    Console(soft_wrap=False).print(table)
    return 0
