"""``moa-opt validate``: a config against the baselines, on problems its search never saw.

Either a suite study's best config on the study's own split (``--study``), or a config file
on a suite's split computed as a new study on that suite would store it (``--config`` with
``--task``): a config tuned on another task, checked for transfer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.table import Table

from graders import BaseGrader, GraderError, get_grader, load_tasks
from graders._base import Task
from graders._suite import is_suite
from optimizer._config import MoAConfig, config_from_dict, load_config
from optimizer._errors import UserError
from optimizer._evaluate import write_transcript
from optimizer._export import best_configs
from optimizer._split import SPLIT_ATTR, Split, make_split, split_tasks
from optimizer._storage import DEFAULT_RUNS_DIR, load_study
from optimizer._taskref import TASK_ATTR, TaskRef, task_location, task_ref
from optimizer._validate import ValidationRow, validate_configs, workshop_on
from optimizer.cli._common import (
    add_model_flags,
    add_sandbox_flag,
    build_router,
    console,
    positive_int,
    require_sandbox,
    run_folder,
    run_progress,
)
from optimizer.cli.search import DEFAULT_BASELINE, check_task

__all__ = [
    "INTERVALS",
    "VALIDATE_ATTR",
    "VALIDATE_DIR",
    "best_config",
    "register",
    "validation_lines",
    "validations",
]

VALIDATE_ATTR = "validate"
"""Study user attrs ``validate:<split>``: the last validation on that split."""
VALIDATE_DIR = DEFAULT_RUNS_DIR / "validate"
"""Where a ``validate --config`` keeps its result and transcripts (``<date>-<time>/``)."""
INTERVALS = (
    "pass@1: 95% Wilson score interval over problems; difference (found - baseline): 95% "
    "percentile bootstrap over problems, paired, 10,000 resamples"
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the ``validate`` command."""
    parser = commands.add_parser(
        "validate",
        help="a config against single-call and self-consistency baselines, on held-out problems",
        description=(
            "Evaluate a suite study's best config on the problems its search never saw (the "
            "test split), or a config file on a suite's test split (--config with --task), "
            "beside a single call of its main model, self-consistency at equal tokens and the "
            "workshop default: pass@1 with a 95% interval, tokens and cost per problem, and the "
            "paired difference found - baseline with its interval."
        ),
    )
    parser.add_argument("--study", metavar="NAME", help="the study (on a suite)")
    parser.add_argument("--storage", metavar="URL", help="Optuna storage URL (as for search)")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="instead of a study: this config (.yaml, or the workshop's .json), on --task",
    )
    parser.add_argument(
        "--task", metavar="SUITE", help="with --config: the suite (a .jsonl file or humaneval)"
    )
    parser.add_argument(
        "--dev-size",
        type=positive_int,
        metavar="N",
        help="with --config: the split's dev size, as search's flag (default a quarter)",
    )
    parser.add_argument(
        "--split-seed",
        type=int,
        metavar="S",
        help="with --config: the split's seed, as search's flag (default 0)",
    )
    parser.add_argument(
        "--split", choices=("test", "dev"), default="test", help="which problems (default test)"
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=1, metavar="R", help="runs per problem (default 1)"
    )
    parser.add_argument("--seed", type=int, default=0, help="base sampling seed (default 0)")
    parser.add_argument(
        "--json", action="store_true", help="print the results, with every run, as JSON"
    )
    add_model_flags(parser)
    add_sandbox_flag(parser)
    parser.set_defaults(handler=handle)


@dataclass(frozen=True)
class Target:
    """What is validated, on which problems, and where its result goes.

    Attributes:
        found: The config validated (row ``found``).
        workshop: The workshop default's config, if there is one to run.
        tasks: The problems of the chosen split.
        grader: The suite's grader.
        label: How ``found`` is named in messages (``trial 3``, a file name).
        location: The suite, as the user gave it or the study names it.
        source: Where ``found`` comes from, for the record and transcripts.
        folder: Where the transcripts go, or None for a new folder under ``runs/validate``.
        store: Keeps the record (without runs) beside the transcripts; returns where, for
            the user.
    """

    found: MoAConfig
    workshop: MoAConfig | None
    tasks: tuple[Task, ...]
    grader: BaseGrader
    label: str
    location: str
    source: dict[str, Any]
    folder: Path | None
    store: Callable[[dict[str, Any], Path], str]


def best_config(study: optuna.Study) -> tuple[int, MoAConfig]:
    """The config ``export`` exports: the confirm stage's best if it ran, else the best mean.

    Raises:
        UserError: No trial completed, or a study of several objectives.
    """
    chosen = best_configs(study)
    if len(chosen) != 1:
        raise UserError(
            f"--study: study {study.study_name!r} has a Pareto front of {len(chosen)} configs; "
            "validate takes a single-objective study"
        )
    return chosen[0].trial, chosen[0].config


def _workshop(study: optuna.Study) -> MoAConfig | None:
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        if trial.user_attrs.get("baseline") == "workshop-default":
            return config_from_dict(trial.user_attrs["config"], f"trial {trial.number}")
    return None


def handle(args: argparse.Namespace) -> int:
    """Runs the command."""
    target = _from_config(args) if args.config is not None else _from_study(args)
    require_sandbox(target.grader)
    check_task(target.tasks, target.grader, target.location)
    err = console(stderr=True)
    err.print(
        f"validating {target.label} on {len(target.tasks)} {args.split} problems, "
        f"{args.repeats} repeat(s) each",
        highlight=False,
    )
    folder = target.folder or run_folder(VALIDATE_DIR)

    def finished(row: ValidationRow) -> None:  # kept at once: a stopped run leaves these
        path = folder / f"{args.split}-{row.config}.jsonl"
        extra = {"validate": args.split, "config_name": row.config, **target.source}
        write_transcript(path, row.evaluation, extra)
        err.print(f"{_row_line(row)}; transcript: {path}", highlight=False, soft_wrap=True)

    rows = asyncio.run(
        _run(target.found, target.workshop, target.tasks, target.grader, args, finished)
    )
    record = {
        "split": args.split,
        **target.source,
        "problems": len(target.tasks),
        "repeats": args.repeats,
        "intervals": INTERVALS,
        "results": [row.to_dict() for row in rows],
    }
    stored = target.store(record, folder)
    if args.json:
        record["results"] = [row.to_dict(runs=True) for row in rows]
        print(json.dumps(record, indent=2))
        return 0
    console().print(results_table(rows, args.split, target.label))
    print(INTERVALS)
    print(f"Stored: {stored}; transcripts: {folder}/")
    return 0


def _from_study(args: argparse.Namespace) -> Target:
    """The study's best config on its own split; the result is stored in the study."""
    if args.study is None:
        raise UserError("validate: give --study NAME, or --config FILE with --task SUITE")
    for flag, value in (
        ("--task", args.task),
        ("--dev-size", args.dev_size),
        ("--split-seed", args.split_seed),
    ):
        if value is not None:
            raise UserError(
                f"{flag}: only with --config; a study is validated on its own suite and split"
            )
    study = load_study(args.study, args.storage)
    ref = TaskRef.from_dict(study.user_attrs.get(TASK_ATTR))
    split = Split.from_dict(study.user_attrs.get(SPLIT_ATTR))
    if ref is None or split is None:
        raise UserError(
            f"--study: study {args.study!r} has no dev/test split; validate needs a study "
            "searched on a suite (a .jsonl task or humaneval)"
        )
    try:
        suite = load_tasks(ref.source)
    except GraderError as error:
        raise UserError(f"study {args.study!r}: task: {error}") from None
    if task_ref(suite, ref.source).fingerprint != ref.fingerprint:
        raise UserError(
            f"{ref.source}: the suite changed since study {args.study!r} was created; its "
            "split and scores no longer apply"
        )
    number, found = best_config(study)

    def store(record: dict[str, Any], folder: Path) -> str:
        study.set_user_attr(f"{VALIDATE_ATTR}:{args.split}", record)
        return f"study {args.study!r} (user attr {VALIDATE_ATTR}:{args.split})"

    return Target(
        found=found,
        workshop=_workshop(study),
        tasks=split_tasks(suite, split.ids(args.split)),
        grader=get_grader(suite[0].grader),
        label=f"trial {number} of {args.study!r}",
        location=ref.source,
        source={"trial": number},
        folder=DEFAULT_RUNS_DIR / args.study / "validate",
        store=store,
    )


def _from_config(args: argparse.Namespace) -> Target:
    """A config file on a suite's split, drawn as a new study on the suite would draw it.

    The result goes to ``runs/validate/<date>-<time>/result.json``, beside the transcripts.
    """
    if args.study is not None:
        raise UserError("--config: give --study or --config, not both")
    if args.storage is not None:
        raise UserError("--storage: only with --study (a --config is validated without one)")
    if args.task is None:
        raise UserError(
            "--config: needs --task SUITE (a .jsonl file or humaneval), the suite to validate on"
        )
    if not is_suite(args.task):
        raise UserError(
            f"--task: validate needs a suite (a .jsonl file or humaneval), got {args.task!r}"
        )
    found = load_config(args.config)
    location = task_location(args.task)
    try:
        suite = load_tasks(location)
    except GraderError as error:
        raise UserError(f"--task: {error}") from None
    seed = 0 if args.split_seed is None else args.split_seed
    split = make_split([task.name for task in suite], args.dev_size, seed)

    def store(record: dict[str, Any], folder: Path) -> str:
        path = folder / "result.json"
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return str(path)

    return Target(
        found=found,
        workshop=workshop_on(load_config(DEFAULT_BASELINE), found),
        tasks=split_tasks(suite, split.ids(args.split)),
        grader=get_grader(suite[0].grader),
        label=args.config.name,
        location=location,
        source={"config": str(args.config), "task": location, "suite_split": split.to_dict()},
        folder=None,
        store=store,
    )


async def _run(
    found: MoAConfig,
    workshop: MoAConfig | None,
    tasks: tuple[Any, ...],
    grader: Any,
    args: argparse.Namespace,
    on_row: Callable[[ValidationRow], None],
) -> list[ValidationRow]:
    router = build_router(args)
    configs = 3 if workshop is None else 4  # found, single call, self-consistency, workshop
    try:
        router.check([*found.models, *([] if workshop is None else workshop.models)])
        with run_progress(configs * len(tasks) * args.repeats, console(stderr=True)) as log:
            return await validate_configs(
                found, workshop, tasks, router, grader, repeats=args.repeats, seed=args.seed,
                on_result=log, on_row=on_row,
            )  # fmt: skip
    finally:
        await router.aclose()


def validations(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """The study's stored validations, by split."""
    prefix = f"{VALIDATE_ATTR}:"
    return {
        key.removeprefix(prefix): value
        for key, value in sorted(study.user_attrs.items())
        if key.startswith(prefix) and isinstance(value, dict)
    }


def validation_lines(records: dict[str, dict[str, Any]]) -> list[str]:
    """One line per stored validation: each config's pass@1 and its 95% interval."""
    lines = []
    for split, record in records.items():
        shown = "; ".join(
            f"{row['config']} {row['pass_at_1']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
            for row in record.get("results", [])
        )
        lines.append(
            f"validated trial {record.get('trial')} on {split} ({record.get('problems')} "
            f"problems), pass@1 [95% interval]: {shown}"
        )
    return lines


def results_table(rows: list[ValidationRow], split: str, found: str) -> Table:
    """The configs side by side: pass@1 and interval, tokens, cost, difference to found."""
    table = Table(title=f"validate on {split} (found = {found})")
    for column in ("config", "pass@1", "95% interval", "tokens/problem", "cost/problem"):
        table.add_column(column, justify="left" if column == "config" else "right")
    table.add_column("found - this [95% interval]", justify="right")
    for row in rows:
        name = row.config + (f" (n={row.samples})" if row.samples > 1 else "")
        diff = "" if row.config == "found" else (
            f"{row.diff:+.3f} [{row.diff_low:+.3f}, {row.diff_high:+.3f}]"
        )  # fmt: skip
        table.add_row(
            name,
            f"{row.pass_at_1:.3f}",
            f"[{row.ci_low:.3f}, {row.ci_high:.3f}]",
            f"{row.tokens:,.0f}",
            f"${row.cost:.5f}",
            diff,
        )
    return table


def _row_line(row: ValidationRow) -> str:
    """One config's result in a line, printed as soon as its runs are done."""
    line = (
        f"{row.config}: pass@1 {row.pass_at_1:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}], "
        f"{row.tokens:,.0f} tokens/problem"
    )
    if row.config != "found":
        line += f", found - this {row.diff:+.3f} [{row.diff_low:+.3f}, {row.diff_high:+.3f}]"
    return line
