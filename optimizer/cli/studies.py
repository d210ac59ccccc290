"""``moa-opt studies``: the studies in a storage, with trial counts and best scores."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from optimizer._racing import best_config, study_runs
from optimizer._storage import DEFAULT_RUNS_DIR, JOURNAL_FILE, open_storage
from optimizer._study import failed_run

__all__ = ["StudyRow", "register", "study_rows"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the ``studies`` command."""
    parser = commands.add_parser(
        "studies",
        help="list studies with trial counts and best scores",
        description="List the studies of a storage (default: every runs/<study>/journal.log).",
    )
    parser.add_argument("--storage", metavar="URL", help="an Optuna storage URL or journal file")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.set_defaults(handler=handle)


@dataclass(frozen=True)
class StudyRow:
    """One study.

    Attributes:
        study: Study name.
        storage: Where it lives (journal path or URL without password).
        complete: Complete trials.
        pruned: Pruned trials.
        failed: Failed trials (not those sampled ahead that never ran).
        running: Running or waiting trials.
        best: The best config's pooled mean score, or None.
        best_trial: The first trial of the best config.
        objectives: The study's objectives.
        last: When its latest trial started, ISO format, or "".
        std: Standard deviation of the best config's runs.
        n: Its runs.
        lcb: The 95% lower confidence bound of its mean.
        best_run: Its best single run.
    """

    study: str
    storage: str
    complete: int
    pruned: int
    failed: int
    running: int
    best: float | None
    best_trial: int | None
    objectives: tuple[str, ...]
    last: str
    std: float | None = None
    n: int = 0
    lcb: float | None = None
    best_run: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Returns the JSON form."""
        return {
            "study": self.study,
            "storage": self.storage,
            "complete": self.complete,
            "pruned": self.pruned,
            "failed": self.failed,
            "running": self.running,
            "best": self.best,
            "best_trial": self.best_trial,
            "objectives": list(self.objectives),
            "last": self.last,
            "std": self.std,
            "n": self.n,
            "lcb": self.lcb,
            "best_run": self.best_run,
        }


def study_rows(storage: BaseStorage, label: str) -> list[StudyRow]:
    """Returns one row per study of ``storage``, sorted by name."""
    rows = []
    for name in sorted(optuna.get_all_study_names(storage)):
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        racing = study.user_attrs.get("racing")
        need = int(racing.get("incumbent_runs", 3)) if isinstance(racing, dict) else 3
        leader = best_config(study_runs(study), need)
        starts = [t.datetime_start for t in trials if t.datetime_start is not None]
        rows.append(
            StudyRow(
                study=name,
                storage=label,
                complete=states.count(TrialState.COMPLETE),
                pruned=states.count(TrialState.PRUNED),
                failed=sum(failed_run(t) for t in trials),
                running=states.count(TrialState.RUNNING) + states.count(TrialState.WAITING),
                best=None if leader is None else leader.mean,
                best_trial=None if leader is None else min(leader.trials),
                objectives=tuple(study.user_attrs.get("objectives", ["score"])),
                last=max(starts).isoformat(timespec="seconds") if starts else "",
                std=None if leader is None else leader.std,
                n=0 if leader is None else leader.n,
                lcb=None if leader is None else leader.lcb,
                best_run=None if leader is None else leader.best,
            )
        )
    return rows


def _safe(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}" if at else url


def handle(args: argparse.Namespace) -> int:
    """Runs the command."""
    rows: list[StudyRow] = []
    if args.storage:
        rows = study_rows(open_storage("", args.storage, create=False), _safe(args.storage))
    else:
        for journal in sorted(Path(DEFAULT_RUNS_DIR).glob(f"*/{JOURNAL_FILE}")):
            storage = open_storage(journal.parent.name, runs_dir=journal.parent.parent)
            rows += study_rows(storage, str(journal))
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    if not rows:
        where = args.storage or f"{DEFAULT_RUNS_DIR}/*/{JOURNAL_FILE}"
        print(f"no studies in {where}")
        return 0
    table = Table(title="studies")
    columns = ("study", "complete", "pruned", "failed", "running", "best mean ± std (n)", "LCB")
    for column in (*columns, "best run", "trial"):
        table.add_column(column, justify="left" if column == "study" else "right")
    table.add_column("objectives")
    table.add_column("last trial")
    table.add_column("storage")
    for row in rows:
        table.add_row(
            row.study,
            str(row.complete),
            str(row.pruned),
            str(row.failed),
            str(row.running),
            "-" if row.best is None else f"{row.best:.4g} ± {row.std or 0:.3g} ({row.n})",
            "-" if row.lcb is None else f"{row.lcb:.4g}",
            "-" if row.best_run is None else f"{row.best_run:.4g}",
            "-" if row.best_trial is None else str(row.best_trial),
            ",".join(row.objectives),
            row.last,
            row.storage,
        )
    Console().print(table)
    return 0
