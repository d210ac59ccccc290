"""``moa-opt run``: run one config on a task and show every call."""

from __future__ import annotations

import argparse
import asyncio
import json
from contextlib import nullcontext
from pathlib import Path

from rich.console import Console
from rich.table import Table

from optimizer._config import MoAConfig, load_config
from optimizer._errors import UserError
from optimizer._moa import MoAResult, prompts_missing_placeholder, run_moa
from optimizer.cli._common import add_model_flags, build_router, console, nonnegative_int

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the ``run`` command."""
    parser = commands.add_parser(
        "run",
        help="run one MoA config on a task",
        description="Run one MoA config on a task: prints the final answer, then every call.",
    )
    parser.add_argument("config", type=Path, help="config file (.json workshop export or .yaml)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", metavar="NAME", help="a task by name (e.g. challenge) or file")
    source.add_argument("--prompt", metavar="TEXT", help="the task prompt itself")
    parser.add_argument(
        "--sample", type=nonnegative_int, default=0, help="sample index (distinct cache entry)"
    )
    parser.add_argument("--seed", type=int, default=None, help="sampling seed for every call")
    parser.add_argument("--json", action="store_true", help="print the whole record as JSON")
    add_model_flags(parser)
    parser.set_defaults(handler=handle)


def task_prompt(task: str | None, prompt: str | None) -> str:
    """Returns the prompt of ``--task NAME`` or ``--prompt TEXT``."""
    if prompt is not None:
        if not prompt.strip():
            raise UserError("--prompt: must not be empty")
        return prompt
    from graders import GraderError, load_tasks

    try:
        tasks = load_tasks(task or "")
    except GraderError as error:
        raise UserError(f"--task: {error}") from None
    if len(tasks) != 1:
        raise UserError(f"--task: {task!r} holds {len(tasks)} instances; run takes one")
    return tasks[0].prompt


def handle(args: argparse.Namespace) -> int:
    """Runs the command."""
    config = load_config(args.config)
    prompt = task_prompt(args.task, args.prompt)
    err = console(stderr=True)
    for agent in prompts_missing_placeholder(config):
        err.print(
            f"[yellow]warning:[/] {args.config}: agent {agent!r} has no {{helper_response}} "
            "in its prompt, so it never sees the earlier answers"
        )
    result = asyncio.run(_run(config, prompt, args, err))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.answer)
        console().print(call_table(result))
    return 0


async def _run(config: MoAConfig, prompt: str, args: argparse.Namespace, err: Console) -> MoAResult:
    router = build_router(args)
    try:
        router.check(config.models)
        for notice in router.notices:
            err.print(f"[cyan]note:[/] {notice}")
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
