"""``moa-opt validate``: a study's best config against the baselines, on its held-out problems."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.table import Table

from graders import GraderError, get_grader, load_tasks
from optimizer._config import MoAConfig, config_from_dict
from optimizer._errors import UserError
from optimizer._evaluate import RunResult, write_transcript
from optimizer._export import best_configs
from optimizer._split import SPLIT_ATTR, Split, split_tasks
from optimizer._storage import DEFAULT_RUNS_DIR, load_study
from optimizer._taskref import TASK_ATTR, TaskRef, task_ref
from optimizer._validate import ValidationRow, validate_configs
from optimizer.cli._common import (
    add_model_flags,
    add_sandbox_flag,
    build_router,
    console,
    positive_int,
    require_sandbox,
)

__all__ = [
    "INTERVALS",
    "VALIDATE_ATTR",
    "best_config",
    "register",
    "validation_lines",
    "validations",
]

VALIDATE_ATTR = "validate"
"""Study user attrs ``validate:<split>``: the last validation on that split."""
INTERVALS = (
    "pass@1: 95% Wilson score interval over problems; difference (found - baseline): 95% "
    "percentile bootstrap over problems, paired, 10,000 resamples"
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the ``validate`` command."""
    parser = commands.add_parser(
        "validate",
        help="the study's best config against single-call and self-consistency baselines, "
        "on held-out problems",
        description=(
            "Evaluate a suite study's best config on the problems its search never saw (the "
            "test split), beside a single call of its main model, self-consistency at equal "
            "tokens and the workshop default: pass@1 with a 95% interval, tokens and cost "
            "per problem, and the paired difference found - baseline with its interval."
        ),
    )
    parser.add_argument("--study", required=True, metavar="NAME", help="the study (on a suite)")
    parser.add_argument("--storage", metavar="URL", help="Optuna storage URL (as for search)")
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
    tasks = split_tasks(suite, split.ids(args.split))
    grader = get_grader(suite[0].grader)
    require_sandbox(grader)
    number, found = best_config(study)
    workshop = _workshop(study)
    err = console(stderr=True)
    err.print(
        f"validating trial {number} of {args.study!r} on {len(tasks)} {args.split} problems, "
        f"{args.repeats} repeat(s) each",
        highlight=False,
    )
    rows = asyncio.run(_run(found, workshop, tasks, grader, args))
    folder = DEFAULT_RUNS_DIR / args.study / "validate"
    for row in rows:
        write_transcript(
            folder / f"{args.split}-{row.config}.jsonl",
            row.evaluation,
            {"validate": args.split, "config_name": row.config, "trial": number},
        )
    record = {
        "split": args.split,
        "trial": number,
        "problems": len(tasks),
        "repeats": args.repeats,
        "intervals": INTERVALS,
        "results": [row.to_dict() for row in rows],
    }
    study.set_user_attr(f"{VALIDATE_ATTR}:{args.split}", record)
    if args.json:
        record["results"] = [row.to_dict(runs=True) for row in rows]
        print(json.dumps(record, indent=2))
        return 0
    console().print(results_table(rows, args.split, number))
    print(INTERVALS)
    print(f"Transcripts: {folder}/")
    return 0


async def _run(
    found: MoAConfig,
    workshop: MoAConfig | None,
    tasks: tuple[Any, ...],
    grader: Any,
    args: argparse.Namespace,
) -> list[ValidationRow]:
    router = build_router(args)
    done = 0

    def log(name: str, result: RunResult) -> None:
        nonlocal done
        done += 1
        print(
            f"[{done}] {name} {result.task.name} repeat {result.repeat}: "
            f"{result.grade.score:g}/{result.grade.max_score:g}",
            file=sys.stderr,
            flush=True,
        )

    try:
        router.check([*found.models, *([] if workshop is None else workshop.models)])
        return await validate_configs(
            found, workshop, tasks, router, grader, repeats=args.repeats, seed=args.seed,
            on_result=log,
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


def results_table(rows: list[ValidationRow], split: str, trial: int) -> Table:
    """The configs side by side: pass@1 and interval, tokens, cost, difference to found."""
    table = Table(title=f"validate on {split} (found = trial {trial})")
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
