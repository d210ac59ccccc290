"""``moa-opt studies``: the studies in a storage, with trial counts and best scores.

``moa-opt studies --delete NAME`` deletes one (after asking, or with ``--yes``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from rich import box
from rich.table import Table

from optimizer._best import study_best, study_incumbent_runs
from optimizer._storage import DEFAULT_RUNS_DIR, JOURNAL_FILE, load_study, open_storage
from optimizer._study import failed_run
from optimizer._taskref import TASK_ATTR, TaskRef
from optimizer.cli._common import console
from optimizer.cli.validate import validation_lines, validations

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
    parser.add_argument(
        "--delete",
        metavar="NAME",
        help="delete study NAME (with the default storage, its whole runs/NAME folder)",
    )
    parser.add_argument("--yes", action="store_true", help="delete without asking")
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
        best: The best config's mean score (over its fresh runs once confirmed), or None.
        best_trial: The first trial of the best config.
        objectives: The study's objectives.
        last: When its latest trial started, ISO format, or "".
        task: The task's name, or "" for a study that did not record it.
        task_source: The shipped task's name or the task file's path, or "".
        validations: ``moa-opt validate``'s stored results, by split.
        std: Standard deviation of the best config's runs.
        n: Its runs.
        lcb: The 95% lower confidence bound of its mean.
        best_run: Its best single run.
        confirmed: Whether the figures come from fresh runs made after the confirm stage
            chose the config (else from the search runs that chose it).
        interval: The two-sided 95% interval of its mean, or None.
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
    task: str = ""
    task_source: str = ""
    validations: dict[str, Any] = field(default_factory=dict)
    std: float | None = None
    n: int = 0
    lcb: float | None = None
    best_run: float | None = None
    confirmed: bool = False
    interval: tuple[float, float] | None = None

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
            "task": self.task,
            "task_source": self.task_source,
            "validations": self.validations,
            "std": self.std,
            "n": self.n,
            "lcb": self.lcb,
            "best_run": self.best_run,
            "confirmed": self.confirmed,
            "interval": None if self.interval is None else list(self.interval),
        }


def study_rows(storage: BaseStorage, label: str) -> list[StudyRow]:
    """Returns one row per study of ``storage``, sorted by name."""
    rows = []
    for name in sorted(optuna.get_all_study_names(storage)):
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        chosen = study_best(study, study_incumbent_runs(study))
        leader = None if chosen is None else chosen.runs
        starts = [t.datetime_start for t in trials if t.datetime_start is not None]
        task = TaskRef.from_dict(study.user_attrs.get(TASK_ATTR))
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
                task="" if task is None else task.name,
                task_source="" if task is None else task.source,
                validations=validations(study),
                std=None if leader is None else leader.std,
                n=0 if leader is None else leader.n,
                lcb=None if leader is None else leader.lcb,
                best_run=None if chosen is None else chosen.best_single_run,
                confirmed=chosen is not None and chosen.confirmed,
                interval=None if leader is None else leader.interval,
            )
        )
    return rows


def _safe(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}" if at else url


def handle(args: argparse.Namespace) -> int:
    """Runs the command."""
    if args.delete is not None:
        return delete(args.delete, args.storage, args.yes)
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
    table = Table(
        title="studies", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True
    )
    table.add_column("study", overflow="fold", min_width=10)
    table.add_column("task", overflow="fold", min_width=9)
    table.add_column("trials", justify="right", no_wrap=True)
    for column in ("best mean±std (n)", "95% CI", "top run"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("last trial", no_wrap=True)
    for row in rows:
        table.add_row(
            row.study,
            row.task or "-",
            f"{row.complete + row.pruned}/{row.failed}/{row.running}",
            "-"
            if row.best is None
            else f"{row.best:.4g}±{row.std or 0:.2g} ({row.n}{'*' if row.confirmed else ''}) "
            f"#{row.best_trial}",
            "-" if row.interval is None else "{:.0f}..{:.0f}".format(*row.interval),
            "-" if row.best_run is None else f"{row.best_run:.4g}",
            row.last[5:16].replace("T", " "),
        )
    out = console()
    out.print(table)
    legend = "trials: done/failed/running; #N: the best config's first trial"
    if any(row.confirmed for row in rows):
        legend += "; (n*): fresh runs made after the confirm stage chose it"
    out.print(legend, highlight=False, soft_wrap=False)
    for row in rows:
        for line in validation_lines(row.validations):
            out.print(f"{row.study}: {line}", highlight=False, soft_wrap=True)
    for where in dict.fromkeys(row.storage for row in rows):
        out.print(f"storage: {where}", highlight=False, soft_wrap=True)
    return 0


def delete(name: str, storage_url: str | None, yes: bool) -> int:
    """Deletes study ``name`` after asking on the terminal (``yes``: without asking).

    With the default storage the study's whole folder goes (journal, transcripts, exports).

    Returns:
        0 once deleted, 1 when the answer was not yes.
    """
    study = load_study(name, storage_url)
    trials = len(study.get_trials(deepcopy=False))
    folder = DEFAULT_RUNS_DIR / name if storage_url is None else None
    where = f"{folder}/ (journal, transcripts, exports)" if folder else _safe(storage_url or "")
    if not yes:
        print(
            f"Delete study {name!r} ({trials} trials) from {where}? [y/N] ", end="", file=sys.stderr
        )
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            print(f"study {name!r} kept", file=sys.stderr)
            return 1
    optuna.delete_study(study_name=name, storage=study._storage)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"deleted study {name!r} ({trials} trials) from {where}", file=sys.stderr)
    return 0
