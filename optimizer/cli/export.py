"""``moa-opt export``: a study's best config (or Pareto front) as workshop JSON or YAML."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from optimizer._config import task_companion
from optimizer._export import (
    best_configs,
    export_configs,
    format_for_path,
    render_configs,
    study_task,
    workshop_losses,
)
from optimizer._racing import REPRODUCE_RUNS
from optimizer._storage import DEFAULT_RUNS_DIR, load_study
from optimizer.cli.validate import validation_lines, validations

__all__ = ["handle", "register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the ``export`` command."""
    parser = commands.add_parser(
        "export",
        help="export a study's best config (or Pareto front)",
        description=(
            "Export the best config of a study (the highest 95% lower bound over its pooled "
            "runs among configs with enough runs; never one lucky run) in the workshop's JSON "
            "format, importable in the workshop app, or in our YAML; with -o, its statistics "
            "go to FILE.stats.json beside it. A multi-objective study exports its Pareto front: "
            "one file per config (FILE-trial<N>.json) with -o, a JSON list or YAML stream on "
            "stdout without."
        ),
    )
    parser.add_argument("--study", default="challenge", metavar="NAME", help="study name")
    parser.add_argument(
        "--storage",
        metavar="URL",
        help=f"Optuna storage URL or journal file (default {DEFAULT_RUNS_DIR}/<study>/journal.log)",
    )
    parser.add_argument(
        "--format",
        choices=("workshop", "yaml"),
        help="workshop JSON or our YAML (default: from the -o suffix, else workshop)",
    )
    parser.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write here instead of stdout"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Runs the command."""
    study = load_study(args.study, args.storage)
    chosen = best_configs(study)
    task = study_task(study)
    fmt = format_for_path(args.output, args.format)
    for line in validation_lines(validations(study)):
        print(line, file=sys.stderr)
    for exported in chosen:
        if exported.runs is not None:
            runs, (low, high) = exported.runs.runs, exported.runs.runs.interval
            kind = "fresh runs" if exported.runs.confirmed else "search runs (not confirmed)"
            mean = (
                f" mean {runs.mean:.4g} ± {runs.std:.3g} over {runs.n} {kind}, 95% interval "
                f"[{low:.4g}, {high:.4g}], best single run {exported.runs.best_single_run:.4g}"
            )
            if exported.runs.confirmed:
                low, high = runs.predicted(REPRODUCE_RUNS)
                mean += f"; a {REPRODUCE_RUNS}-run reproduce should average {low:.4g}..{high:.4g}"
            source = ""
        else:
            mean = "" if exported.mean is None else f" mean {exported.mean:.4g}"
            if exported.repeats is not None:
                mean += f" over {exported.repeats} repeats"
            source = " (confirmed)" if exported.confirmed else ""
        values = ", ".join(f"{v:.4g}" for v in exported.values)
        print(f"trial {exported.trial}: values {values};{mean}{source}", file=sys.stderr)
        lost = workshop_losses(exported.config) if fmt == "workshop" else []
        if lost:
            print(
                f"note: the workshop format has no place for {' or '.join(lost)}; "
                "use --format yaml to keep them",
                file=sys.stderr,
            )
    if args.output is None:
        sys.stdout.write(render_configs(chosen, fmt, task))
        return 0
    for path in export_configs(chosen, args.output, fmt, task):
        print(f"wrote {path}", file=sys.stderr)
        if task is not None and fmt == "workshop":
            print(f"wrote {task_companion(path)} (its task: {task.name})", file=sys.stderr)
    return 0
