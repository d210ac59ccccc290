"""The ``moa-opt`` command line: each command is a module with ``register`` and a handler."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from graders import UNISOLATED_ENV, SandboxError
from optimizer._errors import UserError
from optimizer.providers import ProviderError

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """Returns the parser with every command registered."""
    from optimizer.cli import (
        export,
        grade,
        models,
        report,
        reproduce,
        run,
        search,
        studies,
        trials,
        validate,
    )

    parser = _Parser(
        prog="moa-opt", description="Search, run and reproduce Mixture-of-Agents configs."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (
        run,
        search,
        reproduce,
        validate,
        export,
        report,
        studies,
        trials,
        grade,
        models,
    ):
        module.register(commands)
    return parser


def _version() -> str:
    """The installed distribution's version."""
    try:
        return importlib.metadata.version("moa-optimizer")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the flag, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns its exit code (2 for bad input, 1 for a failed call)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "unisolated", False):
        os.environ[UNISOLATED_ENV] = "1"
    try:
        code: int = args.handler(args)
    except (UserError, SandboxError) as error:
        print(f"moa-opt: error: {error}", file=sys.stderr)
        return 2
    except ProviderError as error:
        print(f"moa-opt: model call failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("moa-opt: interrupted", file=sys.stderr)
        return 130
    return code
