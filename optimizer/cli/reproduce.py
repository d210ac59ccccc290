"""``moa-opt reproduce``: run configs N times and show every score and statistic."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from graders._base import BaseGrader, Task
from optimizer._catalog import Catalog
from optimizer._config import MoAConfig, load_config, load_config_task
from optimizer._errors import UserError
from optimizer._evaluate import RunResult, write_transcript
from optimizer._export import stats_path
from optimizer._reproduce import (
    Expectation,
    Reproduction,
    context_warnings,
    expectation,
    reproduce,
    reproduction_json,
    results_table,
)
from optimizer._storage import DEFAULT_RUNS_DIR
from optimizer.cli._common import (
    add_model_flags,
    add_sandbox_flag,
    build_router,
    choose_task,
    console,
    positive_int,
    require_sandbox,
    run_folder,
    run_progress,
    warn_unknown_models,
)
from optimizer.providers import Router

__all__ = ["DEFAULT_TASK", "REPRODUCE_DIR", "handle", "load_grader_and_tasks", "register"]

DEFAULT_TASK = "challenge"
"""The task of a config that names none."""
REPRODUCE_DIR = DEFAULT_RUNS_DIR / "reproduce"
"""Where each ``reproduce`` keeps its transcripts (``<date>-<time>/<n>-<config>.jsonl``)."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the ``reproduce`` command."""
    parser = commands.add_parser(
        "reproduce",
        help="run configs N times; every score, mean, std, max-score rate",
        description=(
            "Run each config N times on a task (repeat r uses sample index r and seed S+r) "
            "and print every score, mean, std, min, max, how often it scored the maximum and "
            "the pass rate of every test; several configs are shown side by side."
        ),
    )
    parser.add_argument(
        "configs", nargs="+", type=Path, metavar="CONFIG", help="config files (.json or .yaml)"
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=5, metavar="N", help="runs per config (default 5)"
    )
    parser.add_argument(
        "--task",
        metavar="NAME",
        help="task name or file (default: the task the config names, else challenge)",
    )
    parser.add_argument(
        "--grader", metavar="NAME", help="grader name (default: the task's own grader)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="base model seed: repeat r uses S+r (default 0, as a search without --seed)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    add_model_flags(parser)
    add_sandbox_flag(parser)
    parser.set_defaults(handler=handle)


def load_grader_and_tasks(task: str, grader: str | None) -> tuple[BaseGrader, tuple[Task, ...]]:
    """Loads ``--task`` and ``--grader`` (default: the task's grader).

    Raises:
        UserError: Unknown task or grader; the message names the flag.
    """
    from graders import GraderError, get_grader, load_tasks

    try:
        tasks = tuple(load_tasks(task))
    except GraderError as error:
        raise UserError(f"--task: {error}") from None
    if not tasks:
        raise UserError(f"--task: {task!r} holds no instances")
    name = grader or tasks[0].grader
    try:
        return get_grader(name), tasks
    except GraderError as error:
        raise UserError(f"--grader: {error}") from None


def _expected(path: Path, repeats: int, seed: int, err: Console) -> Expectation | None:
    """What the search predicted for ``path``'s reproduction, or None (warned if unreadable).

    Warns when some of the reproduction's seeds made the search's runs of the config.
    """
    try:
        expected = expectation(stats_path(path), repeats, seed)
    except ValueError as error:
        err.print(f"[yellow]warning:[/] {error}; no prediction shown", highlight=False)
        return None
    if expected is not None and expected.shared_seeds:
        err.print(
            f"[yellow]warning:[/] {path}: {expected.shared_seeds} of seeds {seed} to "
            f"{seed + repeats - 1} made runs of this config in its search, so they replay its "
            f"answers and are no independent check; --seed {expected.fresh_seed} draws fresh ones",
            highlight=False,
            soft_wrap=True,
        )
    return expected


def _on_own_task(path: Path, task: str | None) -> bool:
    """Whether the config runs on the task its search ran on (what its statistics are for)."""
    if task is None:
        return True
    named = load_config_task(path)
    return named is not None and named[0].source == task


def _names(paths: list[Path]) -> list[str]:
    """Short distinct column names: file names, or whole paths where names repeat."""
    names = [p.name for p in paths]
    return [str(p) if names.count(p.name) > 1 else p.name for p in paths]


def handle(args: argparse.Namespace) -> int:
    """Runs the command."""
    configs: list[tuple[str, MoAConfig]] = [
        (name, load_config(path))
        for name, path in zip(_names(args.configs), args.configs, strict=True)
    ]
    chosen = choose_task(args.configs, args.task, DEFAULT_TASK)
    assert chosen is not None
    grader, tasks = load_grader_and_tasks(chosen.location, args.grader)
    require_sandbox(grader)
    catalog = Catalog.load()
    err = Console(stderr=True)
    if chosen.note:
        err.print(f"[cyan]note:[/] grading on {chosen.note}", highlight=False, soft_wrap=True)
    changed = chosen.changed(tasks)
    if changed:
        err.print(f"[yellow]warning:[/] {changed}", highlight=False, soft_wrap=True)
    for warning in context_warnings(configs, tasks, catalog):
        err.print(f"[yellow]warning:[/] may not fit: {warning}", highlight=False)
    results = asyncio.run(_run(configs, tasks, grader, catalog, args, err))
    if len(tasks) == 1 and args.grader is None:
        results = [
            replace(result, expected=_expected(path, args.repeats, args.seed, err))
            if _on_own_task(path, args.task)
            else result
            for result, path in zip(results, args.configs, strict=True)
        ]
    folder = run_folder(REPRODUCE_DIR)
    for number, result in enumerate(results):
        extra = {"reproduce": result.name, "task": chosen.location}
        write_transcript(
            folder / f"{number}-{Path(result.name).stem}.jsonl", result.evaluation, extra
        )
    err.print(f"transcripts: {folder}/", highlight=False, soft_wrap=True)
    if args.json:
        print(json.dumps(reproduction_json(results), indent=2))
    else:
        console().print(results_table(results))
    return 0


async def _run(
    configs: list[tuple[str, MoAConfig]],
    tasks: tuple[Task, ...],
    grader: BaseGrader,
    catalog: Catalog,
    args: argparse.Namespace,
    err: Console,
) -> list[Reproduction]:
    router = build_router(args)
    total = len(configs) * len(tasks) * args.repeats
    try:
        for _, config in configs:
            router.check(config.models)
        for notice in router.notices:
            err.print(f"[cyan]note:[/] {notice}", highlight=False)
        await warn_unknown_models(router, [m for _, c in configs for m in c.models], err)
        with run_progress(total, err) as on_result:
            return await _reproduce(configs, tasks, grader, catalog, args, router, on_result)
    finally:
        await router.aclose()


async def _reproduce(
    configs: list[tuple[str, MoAConfig]],
    tasks: tuple[Task, ...],
    grader: BaseGrader,
    catalog: Catalog,
    args: argparse.Namespace,
    router: Router,
    on_result: Callable[[str, RunResult], None],
) -> list[Reproduction]:
    return await reproduce(
        configs,
        tasks,
        router,
        grader,
        repeats=args.repeats,
        seed=args.seed,
        catalog=catalog,
        on_result=on_result,
    )
