"""``moa-opt search``: the overnight search over MoA configs."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from rich.console import Console
from rich.live import Live
from rich.text import Text

from graders._base import BaseGrader, Task
from graders._suite import is_suite
from optimizer._best import BestRuns
from optimizer._catalog import Catalog
from optimizer._config import MoAConfig, config_to_dict, load_config
from optimizer._errors import UserError
from optimizer._instances import PRUNERS, InstanceSampling
from optimizer._objective import parse_objectives
from optimizer._space import SearchSpace, load_space, space_task_location, task_and_grader
from optimizer._split import SPLIT_ATTR, Split, choose_split, split_tasks, stored_attr
from optimizer._stale import heartbeat_storage
from optimizer._storage import DEFAULT_RUNS_DIR, open_storage
from optimizer._study import (
    SAMPLERS,
    Budget,
    Search,
    SearchSummary,
    Status,
    lower_confidence_bound,
    summary_dict,
)
from optimizer._taskref import task_ref
from optimizer._yamlfile import dump_yaml
from optimizer.cli._common import (
    add_model_flags,
    add_sandbox_flag,
    build_router,
    nonnegative_int,
    positive_int,
    require_sandbox,
    warn_unknown_models,
)

__all__ = [
    "DEFAULT_BASELINE",
    "DEFAULT_CONFIRM_REPEATS",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_SPACE",
    "DEFAULT_STUDY",
    "DEFAULT_TRIALS",
    "register",
]

_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
DEFAULT_SPACE = _SPACES / "challenge-local.yaml"
DEFAULT_BASELINE = _SPACES / "baselines" / "workshop-default.json"
DEFAULT_STUDY = "challenge"
DEFAULT_TRIALS = 10
DEFAULT_CONFIRM_REPEATS = 6
"""The confirm stage tops the 3 best configs up to this many runs (about a fifth of the runs
of a 40-trial search with racing)."""
DEFAULT_HEARTBEAT = (30, 120)
"""Seconds between a worker's heartbeats, and without one before its trial counts as lost."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the ``search`` command."""
    parser = commands.add_parser(
        "search",
        help="search MoA configs with an Optuna study (resumable)",
        description=(
            "Search MoA configs: each trial runs a config from the search space on the task "
            "and scores it. Running the same command again resumes the study. With no "
            f"budget flag it runs {DEFAULT_TRIALS} trials in total."
        ),
    )
    parser.add_argument(
        "--space",
        type=Path,
        default=DEFAULT_SPACE,
        metavar="FILE",
        help=f"search space YAML (default {DEFAULT_SPACE.relative_to(_SPACES.parent)})",
    )
    parser.add_argument(
        "--study",
        metavar="NAME",
        help=f"study name (default {DEFAULT_STUDY!r} for the default space, else the space's "
        "file name)",
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage URL (default: journal file runs/<study>/journal.log); "
        "postgresql://... lets workers on several machines join one study",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=positive_int,
        metavar="S",
        help="with a database --storage: each worker records a heartbeat of its running trials "
        f"every S seconds (default {DEFAULT_HEARTBEAT[0]})",
    )
    parser.add_argument(
        "--grace-period",
        type=positive_int,
        metavar="S",
        help="with a database --storage: a running trial with no heartbeat for S seconds (its "
        "worker died, on any host) is failed by the other workers and retried once "
        f"(default {DEFAULT_HEARTBEAT[1]})",
    )
    budget = parser.add_argument_group("budgets (each counts what the study already spent)")
    budget.add_argument("--trials", type=positive_int, metavar="N", help="finished trials")
    budget.add_argument("--timeout", type=_positive_float, metavar="S", help="seconds of search")
    budget.add_argument("--max-tokens", type=positive_int, metavar="N", help="tokens spent")
    budget.add_argument("--max-cost", type=_positive_float, metavar="USD", help="estimated cost")
    parser.add_argument(
        "--workers", type=positive_int, default=1, metavar="N", help="trials at once (default 1)"
    )
    parser.add_argument(
        "--repeats", type=positive_int, metavar="R", help="runs per trial (default: the space's)"
    )
    parser.add_argument(
        "--incumbent-runs",
        type=positive_int,
        metavar="K",
        help="runs the incumbent (best config so far) always has; a challenger races it with "
        "more runs before it may replace it (default: the space's racing.incumbent_runs, 3)",
    )
    parser.add_argument(
        "--agent-max-tokens",
        type=positive_int,
        metavar="N",
        help="fix every agent's max_tokens to N (overrides the space)",
    )
    parser.add_argument(
        "--sampler", choices=SAMPLERS, default="tpe", help="Optuna sampler (default tpe)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help="seed for the sampler and a new study's model calls (seeds from S x 10,000,000)",
    )
    parser.add_argument(
        "--objectives",
        default="score",
        metavar="LIST",
        help="score (default), score,cost or score,latency (a Pareto front)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="another config to run first, mapped onto the space (repeatable; the workshop's "
        "default config always runs first)",
    )
    parser.add_argument(
        "--confirm-repeats",
        type=nonnegative_int,
        default=DEFAULT_CONFIRM_REPEATS,
        metavar="N",
        help="once a budget stops the search, top the best configs up to N pooled runs each, "
        "choose one, then run it N fresh times: the reported interval comes from those fresh "
        "runs only (not on Ctrl-C; its spending counts towards a resumed study's budgets; "
        f"default {DEFAULT_CONFIRM_REPEATS}; 0 turns it off)",
    )
    parser.add_argument(
        "--confirm-top",
        type=positive_int,
        default=3,
        metavar="K",
        help="how many of the best configs the confirm stage tops up (default 3)",
    )
    suite = parser.add_argument_group("suites (a .jsonl task or humaneval)")
    suite.add_argument(
        "--dev-size",
        type=positive_int,
        metavar="N",
        help="problems the search may see; the rest are kept for validate (default: a "
        "quarter of the suite; fixed when the study is created)",
    )
    suite.add_argument(
        "--split-seed",
        type=int,
        metavar="S",
        help="seed of the dev/test split (default 0; fixed when the study is created)",
    )
    suite.add_argument(
        "--instances",
        type=positive_int,
        metavar="K",
        help="evaluate a seeded sample of K dev problems per trial (default: all)",
    )
    suite.add_argument(
        "--pruner",
        choices=PRUNERS,
        default="none",
        help="wilcoxon: stop a trial once it is clearly worse than the best, problem by "
        "problem (Optuna's WilcoxonPruner; default none)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_model_flags(parser)
    add_sandbox_flag(parser)
    parser.set_defaults(handler=handle)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def study_name(args: argparse.Namespace) -> str:
    """The study name: ``--study``, else ``challenge`` for the default space, else its stem."""
    if args.study:
        return str(args.study)
    if args.space.resolve() == DEFAULT_SPACE:
        return DEFAULT_STUDY
    return str(args.space.stem)


def budget_from(args: argparse.Namespace) -> Budget:
    """The budgets the flags name; with none, :data:`DEFAULT_TRIALS` trials."""
    budget = Budget(args.trials, args.timeout, args.max_tokens, args.max_cost)
    if budget == Budget():
        return Budget(trials=DEFAULT_TRIALS)
    return budget


def heartbeat_from(args: argparse.Namespace) -> tuple[int, int]:
    """``--heartbeat-interval`` and ``--grace-period``, defaults filled in.

    Raises:
        UserError: The grace period is not longer than the interval.
    """
    interval = args.heartbeat_interval or DEFAULT_HEARTBEAT[0]
    grace = args.grace_period or max(DEFAULT_HEARTBEAT[1], 2 * interval)
    if grace <= interval:
        raise UserError(
            f"--grace-period: must be longer than the heartbeat interval ({interval} s), "
            f"got {grace}"
        )
    return interval, grace


def baselines_from(args: argparse.Namespace) -> list[tuple[str, MoAConfig]]:
    """The workshop default plus each ``--baseline`` file, named by file name."""
    files = [DEFAULT_BASELINE, *args.baseline]
    return [(path.stem, load_config(path)) for path in dict.fromkeys(files)]


def prepare_space(args: argparse.Namespace) -> SearchSpace:
    """Loads ``--space``; applies ``--repeats``, ``--incumbent-runs``, ``--agent-max-tokens``."""
    space = load_space(args.space)
    if args.repeats is not None:
        space = space.with_repeats(args.repeats)
    if args.incumbent_runs is not None:
        space = space.with_incumbent_runs(args.incumbent_runs)
    if args.agent_max_tokens is not None:
        space = space.with_max_tokens(args.agent_max_tokens)
    return space


def handle(args: argparse.Namespace) -> int:
    """Runs the command."""
    try:
        objectives = parse_objectives(args.objectives)
    except ValueError as error:
        raise UserError(f"--objectives: {error}") from None
    heartbeat = heartbeat_from(args)
    space = prepare_space(args)
    tasks, grader = task_and_grader(space, str(args.space))
    require_sandbox(grader)
    location = space_task_location(space, str(args.space))
    check_task(tasks, grader, location)
    name = study_name(args)
    storage = open_storage(name, args.storage, heartbeat=heartbeat)
    if heartbeat_storage(storage) is None:
        for flag, value in (
            ("--heartbeat-interval", args.heartbeat_interval),
            ("--grace-period", args.grace_period),
        ):
            if value is not None:
                raise UserError(
                    f"{flag}: only with a database --storage (postgresql://..., sqlite:///...); "
                    "a journal file finds dead workers by their pid on its own host"
                )
    search_tasks, split, sampling = suite_setup(args, tasks, location, storage, name, objectives)
    baselines = baselines_from(args)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    err = Console(stderr=True)
    router = build_router(args)
    display = ProgressDisplay(err, name)
    search = Search(
        space,
        study_name=name,
        storage=storage,
        study_dir=DEFAULT_RUNS_DIR / name,
        tasks=search_tasks,
        grader=grader,
        router=router,
        catalog=Catalog.load(),
        budget=budget_from(args),
        workers=args.workers,
        sampler=args.sampler,
        seed=args.seed,
        objectives=objectives,
        baselines=baselines,
        confirm_repeats=args.confirm_repeats,
        confirm_top=args.confirm_top,
        observer=display.update,
        task=task_ref(tasks, location),
        split=split,
        sampling=sampling,
        pruner=args.pruner,
    )

    async def run() -> SearchSummary:
        try:
            router.check(list(space.models))
            for notice in router.notices:
                err.print(f"[cyan]note:[/] {notice}")
            await warn_unknown_models(router, space.models, err)
            with display:
                return await search.run()
        finally:
            await router.aclose()

    summary = asyncio.run(run())
    if args.json:
        print(json.dumps(summary_dict(summary), indent=2))
    else:
        print("\n".join(summary_lines(summary)))
    if summary.interrupted:
        sig = signal.SIGTERM if "SIGTERM" in summary.stopped_by else signal.SIGINT
        return 128 + int(sig)
    return 0 if summary.best is not None else 1


def suite_setup(
    args: argparse.Namespace,
    tasks: Sequence[Task],
    location: str,
    storage: BaseStorage,
    name: str,
    objectives: Sequence[str],
) -> tuple[Sequence[Task], Split | None, InstanceSampling | None]:
    """For a suite: the dev problems the search sees, the study's split and the sampling.

    Raises:
        UserError: Suite flags for a task that is not a suite, a split that differs from the
            study's, more ``--instances`` than dev problems, a pruner with two objectives.
    """
    if args.pruner != "none" and len(objectives) > 1:
        raise UserError("--pruner: works with one objective (score), not a Pareto search")
    if not is_suite(location):
        for flag, value in (
            ("--dev-size", args.dev_size),
            ("--split-seed", args.split_seed),
            ("--instances", args.instances),
        ):
            if value is not None:
                raise UserError(f"{flag}: only for a suite (a .jsonl task or humaneval)")
        if args.pruner != "none":
            raise UserError("--pruner: only for a suite (a .jsonl task or humaneval)")
        return tasks, None, None
    stored = stored_attr(storage, name, SPLIT_ATTR)
    split = choose_split(stored, [t.name for t in tasks], args.dev_size, args.split_seed, name)
    if args.instances is not None and args.instances > len(split.dev):
        raise UserError(
            f"--instances: at most the {len(split.dev)} dev problems, got {args.instances}"
        )
    sampling = InstanceSampling(args.instances, args.seed or 0)
    return split_tasks(tasks, split.dev), split, sampling


def check_task(tasks: Sequence[Task], grader: BaseGrader, location: str) -> None:
    """The pre-flight check: the task can work, before any model is called.

    Raises:
        UserError: It cannot; the message names the task file and the cause.
    """
    from graders import GraderError, preflight

    try:
        preflight(tasks, grader, location)
    except GraderError as error:
        raise UserError(f"{error} (pre-flight check; no model was called)") from None


class ProgressDisplay:
    """Shows the search's progress on stderr: a live line on a terminal, else a log line.

    Args:
        console: The stderr console.
        study: Study name.
    """

    def __init__(self, console: Console, study: str) -> None:
        self.console = console
        self.study = study
        self.started = time.monotonic()
        self._live: Live | None = None
        self._last: Status | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.console.is_terminal:
            self._live = Live(Text(""), console=self.console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def line(self, status: Status) -> str:
        """The status line: trials, the incumbent's mean ± std (n), tokens, cost, elapsed."""
        spent, budget = status.spent, status.budget
        trials = f"{spent.trials}" + (f"/{budget.trials}" if budget.trials else "")
        leader = status.incumbent
        best = "-"
        if leader is not None:
            best = (
                f"{leader.mean:.4g} ± {leader.std:.3g} (n={leader.n}, "
                f"trial {min(leader.trials, default='-')})"
            )
        return (
            f"[{self.study}] trials {trials} done, {status.running} running, "
            f"{spent.failed} failed | incumbent {best} | tokens {spent.tokens:,} | "
            f"cost ${spent.cost:.4f} | elapsed {_duration(spent.elapsed)}"
        )

    def update(self, status: Status) -> None:
        """Shows ``status`` (the search's observer)."""
        self._last = status
        if self._live is not None:
            if status.message:
                self.console.print(Text(status.message, style="dim"))
            self._live.update(Text(self.line(status)))
            return
        if status.message:
            self.console.print(Text(f"{self.line(status)} | {status.message}"), soft_wrap=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def summary_lines(summary: SearchSummary) -> list[str]:
    """How the search ended, the best config and its statistics, and the exports."""
    spent = summary.spent
    session = len(summary.session_trials)
    lines = [
        f"Search {summary.study!r} stopped by {summary.stopped_by}.",
        f"Trials: {spent.trials} finished ({session} ended this session), {spent.failed} failed; "
        f"tokens {spent.tokens:,}; estimated cost ${spent.cost:.4f}; "
        f"search time {_duration(spent.elapsed)}",
    ]
    if summary.failed_by_cause:
        shown = ", ".join(f"{count} {cause}" for cause, count in summary.failed_by_cause)
        lines.append(f"Failed trials by cause: {shown}")
    if summary.stale:
        lines.append(
            "Marked failed (their worker had died): trials " + ", ".join(map(str, summary.stale))
        )
    if summary.failures:
        lines.append("Most trials scored the same low score; the grader said why:")
        lines += [f"  {cause.line()}" for cause in summary.failures]
    best = summary.best
    if best is None or summary.best_config is None:
        lines.append("No trial completed, so there is no best config yet.")
        return lines
    attrs = best.user_attrs
    runs = summary.best_runs
    if runs is None:  # a multi-objective study: the trial's own runs
        scores = [float(s) for s in attrs.get("scores", [])]
        most = float(attrs.get("max_score", 0.0))
        lines.append(
            f"Pareto pick: trial {best.number}: mean {float(attrs.get('mean', 0.0)):.4g}/{most:g} "
            f"(std {float(attrs.get('std', 0.0)):.3g}, n={len(scores)}, "
            f"95% lower bound {lower_confidence_bound(scores):.4g}), scores {scores}"
        )
    else:
        chosen = BestRuns(runs, summary.fresh_runs)
        lines += chosen.lines()
        lines.append(f"Scores: {', '.join(f'{s:.4g}' for s in chosen.runs.scores)}")
        if chosen.runs.n < 2:
            lines.append("Only one run: no spread is known; raise --confirm-repeats to know more.")
        if summary.confirmations:
            lines.append("The confirm stage chose among (search runs, topped up):")
    for confirmation in summary.confirmations:
        marker = "*" if confirmation.number == best.number else " "
        lines.append(
            f" {marker} config of trial {confirmation.number}: "
            f"{confirmation.repeats} runs, mean {confirmation.mean:.4g}/"
            f"{confirmation.max_score:g} ± {confirmation.std:.3g}, 95% lower bound "
            f"{confirmation.lcb:.4g}, max-score rate {confirmation.max_rate:.0%}"
        )
    if summary.rejected:
        total = sum(count for _, count in summary.rejected)
        shown = ", ".join(f"{count} {reason}" for reason, count in summary.rejected)
        lines.append(f"Mutator answers rejected: {total} ({shown})")
    rates = attrs.get("test_pass_rates") or {}
    if rates:
        shown = ", ".join(f"{name} {rate:.0%}" for name, rate in rates.items())
        lines.append(f"Per-test pass rates: {shown}")
    if summary.pareto:
        names = ", ".join(summary.objectives)
        lines.append(
            f"Pareto front ({names}): trials {', '.join(map(str, summary.pareto))}; "
            f"`moa-opt export --study {summary.study}` writes every config of the front"
        )
    lines.append("Config:")
    text = dump_yaml(config_to_dict(summary.best_config))
    lines += ["  " + line if line else "" for line in text.rstrip().splitlines()]
    if summary.exports:
        workshop, ours, *stats = summary.exports
        extra = f", {stats[0]} (statistics)" if stats else ""
        lines.append(f"Exported: {workshop} (workshop JSON), {ours} (YAML){extra}")
    return lines
