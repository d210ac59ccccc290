"""``moa-opt grade`` scores one answer with a grader; ``moa-opt graders`` lists the graders."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from graders import (
    GraderError,
    GradeResult,
    SandboxError,
    check_isolation,
    get_grader,
    list_graders,
    load_task,
    load_tasks,
    missing_dependencies,
)
from graders._base import Task
from graders._suite import is_suite
from optimizer._errors import UserError
from optimizer.cli._common import add_sandbox_flag, console

__all__ = ["handle_grade", "handle_graders", "register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the ``grade`` and ``graders`` commands."""
    grade = commands.add_parser(
        "grade",
        help="score one answer or Python file with a grader",
        description=(
            "Score FILE, a Python file or a raw model response, on a task. Prints each test's "
            "points and the total; exits 0 whenever grading ran, whatever the score."
        ),
    )
    grade.add_argument(
        "file", metavar="FILE", help="a Python file or a raw model response; - reads stdin"
    )
    grade.add_argument(
        "--task",
        default="challenge",
        metavar="NAME",
        help="a shipped task, name/instance, a task .yaml file, or a suite (humaneval or a "
        ".jsonl file; with --instance) (default: challenge)",
    )
    grade.add_argument(
        "--instance",
        metavar="TASK_ID",
        help="the problem of a suite to grade on (its task_id, e.g. HumanEval/0)",
    )
    grade.add_argument(
        "--grader",
        metavar="NAME",
        help="a grader name, entry point or module:attribute (default: the task's grader)",
    )
    grade.add_argument("--json", action="store_true", help="print the result as JSON")
    add_sandbox_flag(grade)
    grade.set_defaults(handler=handle_grade)
    graders = commands.add_parser(
        "graders",
        help="list the available graders",
        description="List the graders --grader accepts, and the sandbox isolation available.",
    )
    graders.set_defaults(handler=handle_graders)


def handle_grade(args: argparse.Namespace) -> int:
    """Runs ``moa-opt grade``."""
    path = Path(args.file)
    try:
        if args.file == "-":
            response = sys.stdin.buffer.read().decode("utf-8", errors="replace")
        else:
            response = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError as error:
        raise UserError(f"{args.file}: no such file") from error
    except OSError as error:
        raise UserError(f"{args.file}: cannot read: {error.strerror}") from error
    try:
        task = _choose_task(args.task, args.instance)
        grader = get_grader(args.grader or task.grader)
        for module in missing_dependencies(grader):
            raise UserError(
                f"the {grader.name} grader needs the {module} package, which is not installed "
                f"here (pip install {module})"
            )
        result = grader.grade(response, task)
    except GraderError as error:
        raise UserError(str(error)) from error
    except SandboxError as error:
        raise UserError(str(error)) from None
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _print_result(result, f"{task.name} graded by {grader.name}")
    return 0


def _choose_task(location: str, instance: str | None) -> Task:
    """``--task``, or the ``--instance`` problem of a suite.

    Raises:
        UserError: ``--instance`` missing for a suite, given for a task that is not one, or
            naming no problem of the suite.
        GraderError: The task cannot be loaded.
    """
    if not is_suite(location):
        task = load_task(location)
        if instance is not None:
            raise UserError("--instance: only for a suite (humaneval or a .jsonl file)")
        return task
    tasks = load_tasks(location)
    if instance is None:
        raise UserError(
            f"--instance: required for a suite; {location} holds {len(tasks)} problems "
            f"({', '.join(t.name for t in tasks[:3])}{', ...' if len(tasks) > 3 else ''})"
        )
    for task in tasks:
        if task.name == instance:
            return task
    raise UserError(f"--instance: {location} holds no problem with task_id {instance!r}")


def handle_graders(args: argparse.Namespace) -> int:
    """Runs ``moa-opt graders``."""
    table = Table("grader", "from", "what it does")
    for info in list_graders():
        table.add_row(escape(info.name), escape(info.origin), escape(info.summary))
    out = console()
    out.print(table)
    isolation = check_isolation()
    out.print(f"Sandbox isolation here: {isolation.level}: {escape(isolation.detail)}")
    return 0


def _print_result(result: GradeResult, title: str) -> None:
    table = Table("test", "points", "result", "message", title=title)
    for test in result.tests:
        verdict = "[green]pass[/]" if test.passed else "[red]FAIL[/]"
        points = f"{_number(test.points)}/{_number(test.max_points)}"
        table.add_row(escape(test.name), points, verdict, escape(test.message))
    out = console()
    out.print(table)
    out.print(
        f"Total: {_number(result.score)}/{_number(result.max_score)}"
        f"    isolation: {result.isolation}"
    )


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")
