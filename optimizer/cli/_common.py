"""Flags and helpers shared by the commands that call models."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from graders import UNISOLATED_ENV, BaseGrader, SandboxedGrader, SandboxError
from optimizer._errors import UserError
from optimizer.providers import ResponseCache, Router, parse_model_map

__all__ = [
    "DEFAULT_CACHE",
    "add_model_flags",
    "add_sandbox_flag",
    "build_router",
    "console",
    "nonnegative_int",
    "positive_int",
    "require_sandbox",
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
    """A rich console; when not a terminal, wide enough that tables are not cut to 80 columns."""
    out = Console(stderr=stderr, soft_wrap=True)
    if not out.is_terminal:
        out = Console(stderr=stderr, soft_wrap=True, width=max(out.width, 160))
    return out
