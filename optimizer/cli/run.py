"""``moa-opt run``: run one config on a task, show every call and grade the answer."""

from __future__ import annotations

import argparse
import asyncio
import json
from contextlib import nullcontext
from pathlib import Path

from rich.console import Console
from rich.table import Table

from graders import BaseGrader, GraderError, GradeResult, SandboxError, Task, is_suite
from optimizer._config import MoAConfig, load_config
from optimizer._errors import UserError
from optimizer._moa import MoAResult, run_moa
from optimizer.cli._common import (
    add_model_flags,
    build_router,
    choose_task,
    console,
    nonnegative_int,
    warn_unknown_models,
)
from optimizer.cli.reproduce import load_grader_and_tasks

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the ``run`` command."""
    parser = commands.add_parser(
        "run",
        help="run one MoA config on a task",
        description=(
            "Run one MoA config on a task: prints the final answer, every call, and the "
            "answer's grade. The task is --task, else the one the config names (an exported "
            "config names its study's task); --prompt runs a prompt of your own, ungraded."
        ),
    )
    parser.add_argument("config", type=Path, help="config file (.json workshop export or .yaml)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--task",
        metavar="NAME",
        help="a task by name (e.g. challenge) or file (default: the task the config names)",
    )
    source.add_argument("--prompt", metavar="TEXT", help="the task prompt itself (not graded)")
    parser.add_argument(
        "--instance",
        metavar="TASK_ID",
        help="the problem of a suite to run on (its task_id, e.g. HumanEval/0)",
    )
    parser.add_argument(
        "--sample", type=nonnegative_int, default=0, help="sample index (distinct cache entry)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="sampling seed for every call (default 0, as a search's first repeat, so the "
        "search's calls answer from the cache)",
    )
    parser.add_argument("--json", action="store_true", help="print the whole record as JSON")
    add_model_flags(parser)
    parser.set_defaults(handler=handle)


def _task(args: argparse.Namespace, err: Console) -> tuple[Task, BaseGrader] | None:
    """The task to run and grade on (``--task`` or the config's), or None for ``--prompt``."""
    if args.prompt is not None:
        if not args.prompt.strip():
            raise UserError("--prompt: must not be empty")
        return None
    chosen = choose_task([args.config], args.task, None)
    if chosen is None:
        raise UserError(f"--task or --prompt: required ({args.config} names no task)")
    grader, tasks = load_grader_and_tasks(chosen.location, None)
    changed = chosen.changed(tasks)  # the whole task's fingerprint, before picking an instance
    if args.instance is not None:
        tasks = tuple(task for task in tasks if task.name == args.instance)
        if not tasks:
            raise UserError(f"--instance: {chosen.location} holds no problem {args.instance!r}")
    if len(tasks) != 1 and is_suite(chosen.location):
        raise UserError(
            f"--instance: required; the suite {chosen.location} holds {len(tasks)} problems"
        )
    if len(tasks) != 1:
        listing = ", ".join(task.name for task in tasks)
        raise UserError(
            f"--task: {chosen.location!r} holds {len(tasks)} instances; pick one: {listing}"
        )
    if chosen.note:
        err.print(f"[cyan]note:[/] running on {chosen.note}", highlight=False)
    if changed:
        err.print(f"[yellow]warning:[/] {changed}", highlight=False)
    return tasks[0], grader


def handle(args: argparse.Namespace) -> int:
    """Runs the command."""
    config = load_config(args.config)
    err = console(stderr=True)
    chosen = _task(args, err)
    prompt = args.prompt if chosen is None else chosen[0].prompt
    result = asyncio.run(_run(config, prompt, args, err))
    grade = None if chosen is None else _grade(result.answer, *chosen)
    if args.json:
        record = result.to_dict()
        if grade is not None:
            record["grade"] = grade.to_dict()
        print(json.dumps(record, indent=2))
        return 0
    print(result.answer)
    console().print(call_table(result))
    if grade is not None and chosen is not None:
        task, grader = chosen
        failed = [t for t in grade.tests if not t.passed]
        print(
            f"Score: {grade.score:g}/{grade.max_score:g} on {task.name} (graded by {grader.name}; "
            f"{len(grade.tests) - len(failed)} of {len(grade.tests)} tests passed)"
        )
        for test in failed[:5]:
            print(f"  failed {test.name}: {' '.join(test.message.split())[:160]}")
    return 0


def _grade(answer: str, task: Task, grader: BaseGrader) -> GradeResult:
    try:
        return grader.grade(answer, task)
    except GraderError as error:
        raise UserError(str(error)) from None
    except SandboxError as error:
        raise UserError(f"the sandbox cannot run here: {error}") from None


async def _run(config: MoAConfig, prompt: str, args: argparse.Namespace, err: Console) -> MoAResult:
    router = build_router(args)
    try:
        router.check(config.models)
        for notice in router.notices:
            err.print(f"[cyan]note:[/] {notice}")
        await warn_unknown_models(router, config.models, err)
        status = err.status("running the MoA...") if err.is_terminal else nullcontext()
        with status:
            return await run_moa(config, prompt, router, sample=args.sample, seed=args.seed)
    finally:
        await router.aclose()


def call_table(result: MoAResult) -> Table:
    """Returns the table of calls with a totals row."""
    table = Table(title="calls", show_footer=True)
    table.add_column("cycle", footer="total")
    table.add_column("agent")
    table.add_column("model")
    table.add_column("prompt tok", justify="right", footer=str(result.prompt_tokens))
    table.add_column("compl tok", justify="right", footer=str(result.completion_tokens))
    table.add_column("latency s", justify="right", footer=f"{result.wall_time:.2f}")
    table.add_column("retries", justify="right", footer=str(sum(c.retries for c in result.calls)))
    table.add_column("cached", footer=f"{result.cache_hits}/{len(result.calls)}")
    for call in result.calls:
        table.add_row(
            str(call.cycle),
            call.agent,
            call.model,
            str(call.prompt_tokens),
            str(call.completion_tokens),
            f"{call.latency:.2f}",
            str(call.retries),
            "yes" if call.cached else "no",
        )
    return table
