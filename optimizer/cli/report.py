"""``moa-opt report``: write a study's HTML report with figures."""

from __future__ import annotations

import argparse
from pathlib import Path

from optimizer._errors import UserError
from optimizer._report import write_report
from optimizer._storage import DEFAULT_RUNS_DIR, load_study

__all__ = ["handle", "register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the ``report`` command."""
    parser = commands.add_parser(
        "report",
        help="a study's HTML report with figures (also while it runs)",
        description=(
            "Write DIR/index.html with PNG figures: score by trial, repeat spread, parameter "
            "importances, per-test pass rates, score against cost and latency with the Pareto "
            "front, the best config's prompt lineage, tokens and cost over time; then the best "
            "config, its confirmation and the export command."
        ),
    )
    parser.add_argument("--study", required=True, metavar="NAME", help="study name")
    parser.add_argument(
        "--storage",
        metavar="URL",
        help=f"Optuna storage URL or journal file (default {DEFAULT_RUNS_DIR}/<study>/journal.log)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="DIR",
        help=f"directory to write (default {DEFAULT_RUNS_DIR}/<study>/report)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Runs the command."""
    study = load_study(args.study, args.storage)
    out_dir = args.output or DEFAULT_RUNS_DIR / args.study / "report"
    try:
        report = write_report(study, out_dir, args.storage)
    except OSError as error:
        raise UserError(f"-o: cannot write {out_dir}: {error.strerror or error}") from None
    running = f"; {report.running} trials still running" if report.running else ""
    print(f"Report: {report.index} ({len(report.figures)} figures{running})")
    return 0
