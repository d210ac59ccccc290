"""Flags and helpers shared by the commands that call models."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from graders import UNISOLATED_ENV, BaseGrader, SandboxedGrader, SandboxError
from graders._base import Task
from optimizer._config import load_config_task
from optimizer._errors import UserError
from optimizer._evaluate import RunResult
from optimizer._taskref import TaskRef, task_ref
from optimizer.providers import ResponseCache, Router, parse_model_map

__all__ = [
    "DEFAULT_CACHE",
    "ChosenTask",
    "add_model_flags",
    "add_sandbox_flag",
    "build_router",
    "choose_task",
    "console",
    "nonnegative_int",
    "positive_int",
    "require_sandbox",
    "run_folder",
    "run_progress",
    "warn_unknown_models",
]

DEFAULT_CACHE = Path("runs/cache.sqlite")


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """Adds ``--base-url``, ``--model-map``, ``--no-cache``, ``--cache`` and ``--max-retries``."""
    group = parser.add_argument_group("model access")
    group.add_argument(
        "--base-url",
        metavar="URL",
        help="send every call to this OpenAI-compatible endpoint "
        "(env MOA_BASE_URL; key in MOA_API_KEY, optional)",
    )
    group.add_argument(
        "--model-map",
        metavar="NAME=PROVIDER/MODEL",
        action="append",
        default=[],
        help="serve model NAME with PROVIDER/MODEL instead (repeatable)",
    )
    group.add_argument("--no-cache", action="store_true", help="bypass the response cache")
    group.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        metavar="FILE",
        help=f"response cache file (default {DEFAULT_CACHE})",
    )
    group.add_argument(
        "--max-concurrency",
        type=positive_int,
        metavar="N",
        help="requests in flight at once per endpoint (default: 16; Cerebras 8)",
    )
    group.add_argument(
        "--requests-per-minute",
        type=positive_int,
        metavar="N",
        help="cap on requests per minute per endpoint (default: none)",
    )
    group.add_argument(
        "--tokens-per-minute",
        type=positive_int,
        metavar="N",
        help="cap on tokens per minute per endpoint; Cerebras charges max_tokens up front",
    )
    group.add_argument(
        "--max-retries",
        type=nonnegative_int,
        default=4,
        metavar="N",
        help="retries per call on 429, 5xx, timeouts and connection errors (default 4)",
    )


def add_sandbox_flag(parser: argparse.ArgumentParser) -> None:
    """Adds ``--unisolated``: the explicit opt-in to grading without bubblewrap."""
    parser.add_argument(
        "--unisolated",
        action="store_true",
        help="where bubblewrap cannot run, run generated code WITHOUT isolation (it can read "
        f"your files and secrets; env {UNISOLATED_ENV}=1). Never needed where bubblewrap works",
    )


def require_sandbox(grader: BaseGrader) -> None:
    """Fails at once, before any model call, when ``grader`` runs code and cannot isolate it.

    Raises:
        UserError: No isolation here, and no opt-in to running without.
    """
    if isinstance(grader, SandboxedGrader):
        try:
            grader.sandbox  # noqa: B018 - made here so that its check runs now
        except SandboxError as error:
            raise UserError(str(error)) from None


def build_router(args: argparse.Namespace) -> Router:
    """Builds the router the model flags describe."""
    flags = {
        "max_concurrency": args.max_concurrency,
        "requests_per_minute": args.requests_per_minute,
        "tokens_per_minute": args.tokens_per_minute,
    }
    return Router(
        base_url=args.base_url,
        model_map=parse_model_map(args.model_map),
        cache=None if args.no_cache else ResponseCache(args.cache),
        max_retries=args.max_retries,
        limits={name: value for name, value in flags.items() if value is not None},
    )


def run_folder(parent: Path) -> Path:
    """Creates and returns a new folder ``parent/<date>-<time>``, suffixed if that exists.

    Two runs started in the same second (say, two ``reproduce`` at once) get folders of
    their own, so neither overwrites the other's files.
    """
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for number in range(1, 1000):
        folder = parent / (stamp if number == 1 else f"{stamp}-{number}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise UserError(f"{parent}: 999 runs this second; remove some folders")


@contextmanager
def run_progress(total: int, err: Console) -> Iterator[Callable[[str, RunResult], None]]:
    """Shows graded runs as they finish: a bar on a terminal, else a line per run.

    Yields:
        The callback to call with each finished run and the name of its config.
    """
    if err.is_terminal:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err, transient=True) as progress:
            bar = progress.add_task("runs", total=total)

            def advance(name: str, result: RunResult) -> None:
                progress.update(bar, advance=1, description=f"{name}: last {_score(result)}")

            yield advance
        return
    done = 0

    def log(name: str, result: RunResult) -> None:
        nonlocal done
        done += 1
        print(
            f"[{done}/{total}] {name} {result.task.name} repeat {result.repeat}: {_score(result)}",
            file=sys.stderr,
            flush=True,
        )

    yield log


def _score(result: RunResult) -> str:
    return f"{result.grade.score:g}/{result.grade.max_score:g}"


def positive_int(text: str) -> int:
    """Argparse type: an integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """Argparse type: an integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def console(*, stderr: bool = False) -> Console:
    """A rich console; when not a terminal and ``COLUMNS`` is unset, 160 columns wide, not 80."""
    out = Console(stderr=stderr, soft_wrap=True)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(stderr=stderr, soft_wrap=True, width=max(out.width, 160))
    return out


@dataclass(frozen=True)
class ChosenTask:
    """The task a command runs configs on.

    Attributes:
        location: A shipped task's name or a task file's path, for ``load_tasks``.
        recorded: The task a config file names, when it was chosen that way.
        note: How it was chosen, to tell the user; "" when ``--task`` chose it.
    """

    location: str
    recorded: TaskRef | None
    note: str

    def changed(self, tasks: Sequence[Task]) -> str | None:
        """A warning if the recorded task's content changed since the config was exported."""
        ref = self.recorded
        if ref is None or not ref.fingerprint:
            return None
        if task_ref(tasks, self.location).fingerprint == ref.fingerprint:
            return None
        return (
            f"the task {ref.source} changed since the config was exported (its fingerprint "
            "differs), so scores may not compare with the search's"
        )


def choose_task(paths: Sequence[Path], flag: str | None, default: str | None) -> ChosenTask | None:
    """``--task`` if given, else the task the config files name, else ``default``.

    Raises:
        UserError: The configs name different tasks, or a task file that is gone.
    """
    if flag is not None:
        return ChosenTask(flag, None, "")
    named = [(path, found) for path in paths if (found := load_config_task(path)) is not None]
    sources = {found[0].source for _, found in named}
    if len(sources) > 1:
        listing = ", ".join(f"{path} names {found[0].source}" for path, found in named)
        raise UserError(f"--task: the configs name different tasks ({listing}); choose one")
    if named:
        _, (ref, holder) = named[0]
        if ref.source.endswith((".yaml", ".yml")) and not Path(ref.source).is_file():
            raise UserError(f"{holder}: task: {ref.source}: no such task file; give --task")
        return ChosenTask(ref.source, ref, f"task {ref.name} ({ref.source}), as {holder} names it")
    if default is None:
        return None
    unnamed = ", ".join(str(p) for p in paths)
    return ChosenTask(default, None, f"{unnamed} names no task; using {default} (--task to choose)")


async def warn_unknown_models(router: Router, models: Sequence[str], err: Console) -> None:
    """Prints a warning for each model the endpoint does not list (``GET /v1/models``)."""
    for warning in await router.unknown_models(tuple(models)):
        err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
