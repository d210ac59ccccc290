"""Benchmarks of the search: the optimizer's own overhead, and search strategies compared.

``overhead``: a search on ``search_spaces/smoke.yaml`` (its real task and grader) against the
loopback OpenAI-compatible server of the tests with zero latency, running in a child process
so its threads do not compete with the search for this process's GIL. Every model call and
every grading is timed; the optimizer's overhead is the search's wall time outside all of
them (sampling, storage, user attrs, transcripts, bookkeeping), per trial and as a share of
the wall time (target: under 5%). One search per workers x sampler x journal x loop, side by
side: journal ``moa`` is our storage, ``optuna`` Optuna's journal file backend as it comes;
loop ``ahead`` is the search's loop (one trial sampled while the others run), ``sequential``
the same loop sampling a trial only once a worker is free (the baseline).

``compare``: at an equal number of trials on the embedded model (``challenge-local.yaml``;
hours on 2 cores), three arms run round-robin, one trial each per round: the workshop's
baseline config alone (re-run with a new seed each trial), random search without prompt
mutation, and TPE with prompt mutation. Each arm
reports its best mean score and the trial that first reached it; then each arm's best config
is re-run with ``--confirm-repeats`` new seeds, since a best of noisy single scores flatters.
Every trial goes to a CSV and a plot of score vs trial. Studies live in ``runs/bench-<arm>/``
and resume if the command is run again.

Usage:
    PYTHONPATH=. .venv/bin/python bench/bench_search.py overhead [--trials 40] [--workers 1,2,4]
        [--samplers tpe,random] [--journals moa,optuna] [--loops ahead,sequential] [--latency S]
    PYTHONPATH=. .venv/bin/python bench/bench_search.py compare --trials 60 [--space FILE]
        [--timeout S] [--confirm-repeats 5] [--out bench/results] [--base-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import functools
import multiprocessing
import shlex
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import optuna
from openai_server import OpenAIServer
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalFileBackend

from graders._base import BaseGrader, GradeResult, Task
from optimizer._catalog import Catalog
from optimizer._config import MoAConfig, config_from_dict, load_config
from optimizer._evaluate import Evaluation, evaluate
from optimizer._prompts import PromptPool
from optimizer._space import SearchSpace, load_space, task_and_grader
from optimizer._storage import FlockJournalLock, open_storage
from optimizer._study import Budget, Search, Spent, Status, TrialEnd
from optimizer.providers import ChatRequest, Completion, Provider, ResponseCache, Router

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"
WORKSHOP = SPACES / "baselines" / "workshop-default.json"
CONFIRM_SEED = 1000  # the confirm runs' seeds: 1000, 1001, ... (trials use smaller ones)


def code_responder(body: dict[str, Any]) -> str:
    """Answers every call with a correct solution of the challenge (graded in the sandbox)."""
    from challenge_candidates import CLEAN

    return f"Here is the function.\n\n```python\n{CLEAN.strip()}\n```\n"


def _serve(latency: float, connection: Connection) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "graders"))
    with OpenAIServer(code_responder, latency=latency) as server:
        connection.send(server.base_url)
        connection.recv()


@contextlib.contextmanager
def loopback_server(latency: float) -> Iterator[str]:
    """Runs the test server in a child process; yields its base URL."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(latency, child), daemon=True)
    process.start()
    try:
        yield str(parent.recv())
    finally:
        parent.send("stop")
        process.join(timeout=10)


class Intervals:
    """Collects (start, end) perf_counter intervals; their union is busy time."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []

    def add(self, start: float, end: float) -> None:
        """Records one interval."""
        self.spans.append((start, end))

    def total(self) -> float:
        """Sum of the intervals' lengths."""
        return sum(end - start for start, end in self.spans)


def union(*groups: Intervals) -> float:
    """Seconds covered by at least one interval of ``groups``."""
    spans = sorted(span for group in groups for span in group.spans)
    covered, reach = 0.0, float("-inf")
    for start, end in spans:
        if end > reach:
            covered += end - max(start, reach)
            reach = end
    return covered


class TimedProvider(Provider):
    """Times every ``complete`` of the provider it wraps."""

    def __init__(self, inner: Provider, spans: Intervals) -> None:
        self.inner = inner
        self.spans = spans
        self.name = inner.name
        self.endpoint = inner.endpoint

    async def complete(self, request: ChatRequest) -> Completion:
        start = time.perf_counter()
        try:
            return await self.inner.complete(request)
        finally:
            self.spans.add(start, time.perf_counter())


class TimedRouter(Router):
    """A router whose providers are timed."""

    def __init__(self, spans: Intervals, **options: Any) -> None:
        super().__init__(**options)
        self.spans = spans
        self._timed: dict[int, Provider] = {}

    def resolve(self, model: str) -> tuple[Provider, str]:
        provider, name = super().resolve(model)
        timed = self._timed.setdefault(id(provider), TimedProvider(provider, self.spans))
        return timed, name


class TimedGrader(BaseGrader):
    """Times every ``grade`` of the grader it wraps."""

    name: ClassVar[str] = "timed"

    def __init__(self, inner: BaseGrader, spans: Intervals) -> None:
        self.inner = inner
        self.spans = spans

    def grade(self, response: str, task: Task) -> GradeResult:
        start = time.perf_counter()
        try:
            return self.inner.grade(response, task)
        finally:
            self.spans.add(start, time.perf_counter())


class SequentialSearch(Search):
    """The search loop without a trial sampled ahead: a trial is asked once a worker is free."""

    def _room(self, spent: Spent, running: set[asyncio.Task[TrialEnd]]) -> bool:
        return len(running) < self.workers and super()._room(spent, running)


def _overhead_search(
    space: SearchSpace,
    name: str,
    runs: Path,
    trials: int,
    workers: int,
    sampler: str,
    journal: str,
    router: Router,
    grader: BaseGrader,
    tasks: Sequence[Task],
    loop: str = "ahead",
) -> float:
    """Runs one search; returns its wall time in seconds."""
    search = (SequentialSearch if loop == "sequential" else Search)(
        space,
        study_name=name,
        storage=_journal_storage(journal, name, runs),
        study_dir=runs / name,
        tasks=tasks,
        grader=grader,
        router=router,
        catalog=Catalog.load(),
        budget=Budget(trials=trials),
        workers=workers,
        sampler=sampler,
        seed=0,
        baselines=[("workshop-default", load_config(WORKSHOP))],
    )

    async def go() -> float:
        start = time.perf_counter()
        try:
            await search.run()
            return time.perf_counter() - start
        finally:
            await router.aclose()

    return asyncio.run(go())


def overhead(args: argparse.Namespace, out: Path) -> int:
    """Runs one measured search per (workers, sampler, journal, loop); prints a markdown table."""
    space = load_space(SPACES / "smoke.yaml")
    space = replace(space, mutation=replace(space.mutation, every=0))
    tasks, grader = task_and_grader(space, "smoke.yaml")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs = out / f"overhead-{int(time.time())}"
    setups = [
        (w, s, j, loop)
        for w in args.workers
        for s in args.samplers
        for j in args.journals
        for loop in args.loops
    ]
    rows = []
    with loopback_server(args.latency) as base_url:
        # a short warm-up search: imports, connection pool, sandbox start-up are not counted
        router = TimedRouter(Intervals(), base_url=base_url, env={})
        _overhead_search(space, "warm-up", runs, 2, 1, "tpe", "moa", router, grader, tasks)
        for workers, sampler, journal, loop in setups:
            calls, grading = Intervals(), Intervals()
            router = TimedRouter(calls, base_url=base_url, env={})
            timed = TimedGrader(grader, grading)
            name = f"measured-{workers}-{sampler}-{journal}-{loop}"
            wall = _overhead_search(
                space,
                name,
                runs,
                args.trials,
                workers,
                sampler,
                journal,
                router,
                timed,
                tasks,
                loop=loop,
            )
            study = optuna.load_study(study_name=name, storage=open_storage(name, runs_dir=runs))
            n = len(study.get_trials(deepcopy=False))
            busy = union(calls, grading)
            setup = (workers, sampler, journal, loop)
            rows.append((*setup, n, wall, union(calls), union(grading), busy))
    print(f"`PYTHONPATH=. .venv/bin/python bench/bench_search.py {shlex.join(sys.argv[1:])}`\n")
    print(
        f"{args.trials} trials per row of smoke.yaml ({space.repeats} repeats, grader "
        f"{grader.name}, every answer scores 120), loopback server with {args.latency:g} s "
        "latency in a child process, journal storage, no cache, after a 2-trial warm-up search; "
        "times per trial\n"
    )
    print(
        "| workers | sampler | journal | loop | wall time | in model calls | in grading "
        "| in calls or grading | overhead | overhead share |"
    )
    print("|---:|---|---|---|---:|---:|---:|---:|---:|---:|")
    for workers, sampler, journal, loop, n, wall, calls_s, grading_s, busy in rows:
        ms = [f"{seconds / n * 1000:.1f} ms" for seconds in (wall, calls_s, grading_s, busy)]
        outside = wall - busy
        share = outside / wall
        verdict = "" if share < 0.05 else " (over 5%)"
        print(
            f"| {workers} | {sampler} | {journal} | {loop} | {' | '.join(ms)} "
            f"| {outside / n * 1000:.1f} ms "
            f"| {share:.1%}{verdict} |"
        )
    walls = {row[:4]: row[5] / row[4] for row in rows}
    for (workers, sampler, journal, loop), wall in walls.items():
        sequential = walls.get((workers, sampler, journal, "sequential"))
        if loop == "ahead" and sequential:
            print(
                f"\n{workers} worker(s), {sampler}, {journal} journal: wall time per trial "
                f"ahead / sequential = {wall / sequential:.3f}",
                end="",
            )
    print()
    return 0


def _journal_storage(journal: str, name: str, runs: Path) -> BaseStorage:
    """``moa``: ours (:func:`open_storage`); ``optuna``: Optuna's journal file backend as it
    comes (an fsync and an append per record), with the same lock."""
    if journal == "moa":
        return open_storage(name, runs_dir=runs)
    path = runs / name / "journal.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FlockJournalLock(str(path))
    return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=lock))


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def baseline_config(space: SearchSpace) -> MoAConfig:
    """The config a search's baseline trial runs: the workshop default mapped onto ``space``."""
    study = optuna.create_study(direction="maximize")
    pool = PromptPool(study)
    pool.ensure_seeds(space.seed_prompts())
    params, _ = space.baseline_params(load_config(WORKSHOP), pool.params_for)
    study.enqueue_trial(params)
    return space.suggest(study.ask(), pool)


class BenchSearch(Search):
    """A search run one trial at a time whose TPE start-up matches the whole run's budget."""

    def __init__(self, *args: Any, total_trials: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.total_trials = total_trials

    def _startup_trials(self) -> int:
        return max(2, min(10, self.total_trials // 3))


def compare(args: argparse.Namespace, out: Path) -> int:
    """Runs the three arms round-robin, a trial each per round; writes a CSV and a plot.

    Every round gives each arm one more trial, so the arms have equal budgets whenever the
    run stops (``--timeout``, Ctrl-C, or the end); the CSV and plot are rewritten each round.
    """
    space = load_space(args.space)
    tasks, grader = task_and_grader(space, str(args.space))
    catalog = Catalog.load()
    cache = None if args.no_cache else ResponseCache(args.cache)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = baseline_config(space)  # the baseline arm: this config, a fresh seed each trial
    arms = {
        "random": (replace(space, mutation=replace(space.mutation, every=0)), "random"),
        "tpe-mutation": (space, "tpe"),
    }
    storages = {arm: open_storage(f"bench-{arm}") for arm in arms}
    workshop = load_config(WORKSHOP)
    baseline_rows: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    start = time.monotonic()

    async def run_rounds(route: Router) -> None:
        for trial in range(args.trials):
            if args.timeout is not None and time.monotonic() - start >= args.timeout:
                print(f"--timeout: stopping after {trial} round(s)", file=sys.stderr)
                return
            evaluation = await evaluate(
                config,
                tasks,
                route,
                grader,
                repeats=space.repeats,
                seed=trial * space.repeats,
                catalog=catalog,
            )
            tokens = evaluation.prompt_tokens + evaluation.completion_tokens
            baseline_rows.append(
                _row("baseline", trial, "COMPLETE", evaluation.mean, tokens, evaluation.cost)
            )
            print(f"baseline trial {trial}: {evaluation.mean:.4g}", file=sys.stderr)
            for arm, (arm_space, sampler) in arms.items():
                name = f"bench-{arm}"
                search = BenchSearch(
                    arm_space,
                    study_name=name,
                    storage=storages[arm],
                    study_dir=Path("runs") / name,
                    tasks=tasks,
                    grader=grader,
                    router=route,
                    catalog=catalog,
                    budget=Budget(trials=trial + 1),
                    sampler=sampler,
                    seed=args.seed,
                    baselines=[("workshop-default", workshop)],
                    observer=functools.partial(_show, arm),
                    total_trials=args.trials,
                )
                summary = await search.run()
                if summary.interrupted:
                    raise KeyboardInterrupt
            rows[:] = baseline_rows + _study_rows(storages, trial + 1)
            _write(rows, out, space)

    confirmed: dict[str, Evaluation] = {}

    async def confirm(route: Router) -> None:
        """Re-runs each arm's best config with ``--confirm-repeats`` fresh seeds."""
        for arm in ("baseline", *arms):
            best = _best_row(rows, arm)
            if best is None:
                continue
            chosen = config
            if arm != "baseline":
                name = f"bench-{arm}"
                study = optuna.load_study(study_name=name, storage=storages[arm])
                data = study.trials[int(best["trial"])].user_attrs["config"]
                chosen = config_from_dict(data, f"{name} trial {best['trial']}")
            confirmed[arm] = await evaluate(
                chosen,
                tasks,
                route,
                grader,
                repeats=args.confirm_repeats,
                seed=CONFIRM_SEED,
                catalog=catalog,
            )
            print(f"{arm}: confirmed {confirmed[arm].scores}", file=sys.stderr)

    async def go() -> None:
        route = Router(base_url=args.base_url, cache=cache)
        try:
            await run_rounds(route)
            if args.confirm_repeats > 0:
                await confirm(route)
        finally:
            await route.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())
    if not rows:
        print("no complete round", file=sys.stderr)
        return 1
    rounds = len(baseline_rows)
    print(f"`PYTHONPATH=. .venv/bin/python bench/bench_search.py {shlex.join(sys.argv[1:])}`\n")
    print(f"{rounds} trials per arm on {args.space.name} ({space.repeats} repeat(s) per trial)\n")
    print(
        f"| arm | best mean | trials to best | complete | tokens | mean of its trials "
        f"(first half / last half) | best config re-run ({args.confirm_repeats} new seeds): "
        "mean ± std | max-score rate |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for arm in ("baseline", *arms):
        mine = [r for r in rows if r["arm"] == arm]
        scored = [r for r in mine if r["value"] != ""]
        best_row = _best_row(rows, arm)
        best = float(best_row["value"]) if best_row else float("nan")
        first = best_row["trial"] if best_row else "-"
        tokens = sum(int(r["tokens"] or 0) for r in mine)
        check = confirmed.get(arm)
        rerun = f"{check.mean:.4g} ± {check.std:.3g}" if check else "-"
        rate = f"{check.max_rate:.0%}" if check else "-"
        values = [float(r["value"]) for r in scored]
        half = len(values) // 2
        means = "-"
        if half:
            means = f"{statistics.fmean(values[:half]):.3g} / {statistics.fmean(values[half:]):.3g}"
        print(
            f"| {arm} | {best:.4g} | {first} | {len(scored)} | {tokens:,} | {means} | {rerun} "
            f"| {rate} |"
        )
    print(f"\nCSV: {out / 'search_compare.csv'}\nplot: {out / 'search_compare.png'}")
    return 0


def _best_row(rows: Sequence[dict[str, Any]], arm: str) -> dict[str, Any] | None:
    """The first row of ``arm`` with its best value."""
    scored = [r for r in rows if r["arm"] == arm and r["value"] != ""]
    if not scored:
        return None
    best = max(float(r["value"]) for r in scored)
    return next(r for r in scored if float(r["value"]) == best)


def _study_rows(storages: dict[str, BaseStorage], trials: int) -> list[dict[str, Any]]:
    """The first ``trials`` trials of each arm's study, as CSV rows."""
    rows = []
    for arm, storage in storages.items():
        study = optuna.load_study(study_name=f"bench-{arm}", storage=storage)
        for trial in study.get_trials(deepcopy=False)[:trials]:
            attrs = trial.user_attrs
            value = trial.values[0] if trial.values else None
            tokens, cost = attrs.get("tokens", 0), attrs.get("cost", 0.0)
            rows.append(_row(arm, trial.number, trial.state.name, value, tokens, cost))
    return rows


def _write(rows: list[dict[str, Any]], out: Path, space: SearchSpace) -> None:
    """Writes the CSV and the plot."""
    out.mkdir(parents=True, exist_ok=True)
    _best_so_far(rows)
    with (out / "search_compare.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _plot(rows, out / "search_compare.png", space)


def _show(arm: str, status: Status) -> None:
    if status.message:
        print(f"{arm}: {status.message}", file=sys.stderr)


def _row(
    arm: str, trial: int, state: str, value: float | None, tokens: Any, cost: Any
) -> dict[str, Any]:
    return {
        "arm": arm,
        "trial": trial,
        "state": state,
        "value": "" if value is None else value,
        "best_so_far": "",
        "tokens": int(tokens or 0),
        "cost": float(cost or 0.0),
    }


def _best_so_far(rows: Sequence[dict[str, Any]]) -> None:
    best: dict[str, float] = {}
    for row in rows:
        if row["value"] != "":
            best[row["arm"]] = max(best.get(row["arm"], float("-inf")), float(row["value"]))
        row["best_so_far"] = best.get(row["arm"], "")


def _plot(rows: Sequence[dict[str, Any]], path: Path, space: SearchSpace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm and r["value"] != ""]
        line = axes.plot(
            [r["trial"] for r in mine],
            [r["best_so_far"] for r in mine],
            label=f"{arm} (best so far)",
        )
        axes.scatter(
            [r["trial"] for r in mine],
            [r["value"] for r in mine],
            s=10,
            alpha=0.4,
            color=line[0].get_color(),
        )
    axes.set_xlabel("trial")
    axes.set_ylabel(f"mean score over {space.repeats} repeat(s)")
    axes.set_title(f"{space.task}: score vs trial at equal budget")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    """Parses the command line and runs one benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="bench", required=True)
    over = commands.add_parser("overhead", help="the optimizer's overhead per trial")
    over.add_argument("--trials", type=int, default=40)
    over.add_argument("--workers", type=lambda t: [int(n) for n in _names(t)], default=[1, 2, 4])
    over.add_argument("--samplers", type=_names, default=["tpe"])
    over.add_argument("--journals", type=_names, default=["moa", "optuna"])
    over.add_argument("--loops", type=_names, default=["ahead", "sequential"])
    over.add_argument("--latency", type=float, default=0.0, help="seconds per model call")
    over.add_argument("--out", type=Path, default=Path("runs/bench"))
    cmp = commands.add_parser("compare", help="baseline vs random vs TPE with mutation")
    cmp.add_argument("--trials", type=int, default=60, help="trials per arm (equal budget)")
    cmp.add_argument("--space", type=Path, default=SPACES / "challenge-local.yaml")
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--timeout", type=float, help="seconds; no new round starts after it")
    cmp.add_argument(
        "--confirm-repeats",
        type=int,
        default=5,
        help="re-run each arm's best config this many times with new seeds (0: skip)",
    )
    cmp.add_argument(
        "--base-url", help="an OpenAI-compatible endpoint instead of the embedded models"
    )
    cmp.add_argument("--cache", type=Path, default=Path("runs/cache.sqlite"))
    cmp.add_argument("--no-cache", action="store_true")
    cmp.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if args.bench == "overhead":
        return overhead(args, args.out)
    return compare(args, args.out)


if __name__ == "__main__":
    sys.exit(main())
