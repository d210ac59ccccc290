"""Search throughput against its two ceilings, and the memory of a long search.

``scaling``: searches of ``search_spaces/smoke.yaml`` (its real task and sandboxed grader,
every answer a correct solution, mutation off, no cache) against the loopback server of the
tests with ``--latency`` seconds per call, in a child process. Each row runs ``--trials`` trials
with W workers in all, in P search processes (W / P workers each) joining one study: one
process on the default journal file, several on ``--storage`` (PostgreSQL) or, without it, on
the journal file too. Every process
imports, warms its sandbox and connection pool with a 2-trial search of its own first, then all
start together. Measured in the same run: trials per minute; the CPU seconds per trial that
the row cost the machine (``/proc/stat``'s busy time, less the loopback server's own CPU and
the machine's background rate measured just before the row); the model calls per trial (the
server's count). ``getrusage`` of the search processes and their children is printed beside
it: it misses the sandboxed processes, which run in their own PID namespace (bubblewrap's
``--unshare-pid``) and are never reaped by a process we wait for. The ceilings:

- endpoint: the concurrency the searches may use (16 per process, the default limit of a
  ``--base-url`` endpoint) / (latency x calls per trial);
- machine: cores / machine CPU seconds per trial;
- workers: W x the trials per second of one worker in one process (the first row).

The ratio is trials per second over the lowest of the three (target: 0.8 at 16 workers).

``memory``: one search process, ``--trials`` trials; its resident memory (``VmRSS``) as the
trials complete, and its peak (``VmHWM``), with the size of the transcripts on disk.

Usage:
    PYTHONPATH=. .venv/bin/python bench/bench_throughput.py scaling [--trials 96]
        [--workers 1,4,16,32] [--processes 1] [--storage URL] [--latency 0.05]
    PYTHONPATH=. .venv/bin/python bench/bench_throughput.py memory [--trials 500] [--workers 16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import optuna
from openai_server import OpenAIServer
from optuna.trial import TrialState

from optimizer._catalog import Catalog
from optimizer._config import load_config
from optimizer._space import load_space, task_and_grader
from optimizer._storage import open_storage
from optimizer._study import Budget, Search, Status
from optimizer.providers import Limits, Router

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "search_spaces" / "smoke.yaml"
WORKSHOP = ROOT / "search_spaces" / "baselines" / "workshop-default.json"
CONCURRENCY = Limits().max_concurrency


def _serve(latency: float, connection: Connection) -> None:
    """The loopback server; answers ``count`` with its chat requests so far and its CPU."""
    sys.path.insert(0, str(ROOT / "tests" / "graders"))
    from bench_search import code_responder

    with OpenAIServer(code_responder, latency=latency) as server:
        connection.send(server.base_url)
        while connection.recv() == "count":
            used = resource.getrusage(resource.RUSAGE_SELF)
            connection.send((len(server.chat_requests), used.ru_utime + used.ru_stime))


@contextlib.contextmanager
def loopback_server(latency: float) -> Iterator[tuple[str, Connection]]:
    """Runs the server in a child process; yields its base URL and its control pipe."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(latency, child), daemon=True)
    process.start()
    try:
        yield str(parent.recv()), parent
    finally:
        parent.send("stop")
        process.join(timeout=10)


def _server(pipe: Connection) -> tuple[int, float]:
    """The loopback server's chat requests so far, and its CPU seconds."""
    pipe.send("count")
    calls, cpu = pipe.recv()
    return int(calls), float(cpu)


def _busy() -> float:
    """CPU seconds the whole machine has been busy (``/proc/stat``: not idle, iowait, steal)."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq = stat.readline().split()[1:8]
    ticks = sum(int(field) for field in (user, nice, system, irq, softirq))
    return ticks / os.sysconf("SC_CLK_TCK")


def _background(seconds: float = 2.0) -> float:
    """Cores the machine keeps busy while nothing of ours runs."""
    before = _busy()
    time.sleep(seconds)
    return (_busy() - before) / seconds


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the sandboxes)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _search(
    base_url: str,
    study: str,
    storage: str | None,
    runs: Path,
    trials: int,
    workers: int,
    observer: Any = None,
) -> Search:
    space = load_space(SMOKE)
    space = replace(space, mutation=replace(space.mutation, every=0))
    tasks, grader = task_and_grader(space, "smoke.yaml")
    return Search(
        space,
        study_name=study,
        storage=open_storage(study, storage, runs_dir=runs),
        study_dir=runs / study,
        tasks=tasks,
        grader=grader,
        router=Router(base_url=base_url, env={}),
        catalog=Catalog.load(),
        budget=Budget(trials=trials),
        workers=workers,
        seed=0,
        baselines=[("workshop-default", load_config(WORKSHOP))],
        observer=observer,
    )


def _run(search: Search) -> None:
    async def go() -> None:
        try:
            await search.run()
        finally:
            await search.router.aclose()

    asyncio.run(go())


def _worker(
    base_url: str,
    study: str,
    storage: str | None,
    runs: str,
    trials: int,
    workers: int,
    start: Any,
    report: Connection,
) -> None:
    """One search process: warms up, waits for the start, searches, reports its times."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warm = f"warm-{os.getpid()}"
    _run(_search(base_url, warm, None, Path(runs), 2, 1))
    report.send("ready")
    start.wait()
    began, cpu = time.time(), _cpu()
    _run(_search(base_url, study, storage, Path(runs), trials, workers))
    report.send((began, time.time(), _cpu() - cpu))


@dataclass(frozen=True)
class Row:
    """One measured configuration.

    Attributes:
        cpu: Machine CPU seconds of the row (less the server's and the background's).
        rusage: CPU seconds ``getrusage`` saw in the search processes and their children.
        background: Cores the machine kept busy just before the row.
    """

    workers: int
    processes: int
    trials: int
    wall: float
    cpu: float
    rusage: float
    calls: int
    load: tuple[float, float]
    background: float

    @property
    def rate(self) -> float:
        """Trials per second."""
        return self.trials / self.wall


def measure(
    base_url: str,
    pipe: Connection,
    workers: int,
    processes: int,
    trials: int,
    storage: str | None,
    runs: Path,
) -> Row:
    """Runs one configuration in ``processes`` fresh processes."""
    context = multiprocessing.get_context("spawn")
    study = f"tp-{workers}w-{processes}p-{int(time.time())}"
    start = context.Event()
    pipes, children = [], []
    for index in range(processes):
        share = workers // processes + (1 if index < workers % processes else 0)
        parent, child = context.Pipe()
        process = context.Process(
            target=_worker,
            args=(base_url, study, storage, str(runs), trials, share, start, child),
        )
        process.start()
        pipes.append(parent)
        children.append(process)
    for parent in pipes:
        assert parent.recv() == "ready"
    background = _background()
    (calls, served), load = _server(pipe), os.getloadavg()[0]
    began, busy = time.monotonic(), _busy()
    start.set()
    reports = [parent.recv() for parent in pipes]
    busy, took = _busy() - busy, time.monotonic() - began
    calls_after, served_after = _server(pipe)
    calls, served = calls_after - calls, served_after - served
    for process in children:
        process.join()
    opened = open_storage(study, storage, runs_dir=runs)
    loaded = optuna.load_study(study_name=study, storage=opened)
    done = len(loaded.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if storage is not None:
        optuna.delete_study(study_name=study, storage=opened)
    wall = max(r[1] for r in reports) - min(r[0] for r in reports)
    rusage = sum(r[2] for r in reports)
    cpu = busy - served - background * took
    return Row(
        workers, processes, done, wall, cpu, rusage, calls, (load, os.getloadavg()[0]), background
    )


def scaling(args: argparse.Namespace) -> int:
    """Prints one row per (workers, processes) with the ceilings and the ratio."""
    cores = os.cpu_count() or 1
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, loopback_server(args.latency) as (url, pipe):
        one = measure(url, pipe, 1, 1, args.trials, None, Path(tmp))
        for processes in args.processes:
            for workers in args.workers:
                if workers < processes:
                    continue
                if (workers, processes) == (1, 1):
                    rows.append(one)
                    continue
                storage = None if processes == 1 else args.storage
                rows.append(measure(url, pipe, workers, processes, args.trials, storage, Path(tmp)))
    print(f"`PYTHONPATH=. .venv/bin/python bench/bench_throughput.py {shlex.join(sys.argv[1:])}`\n")
    print(
        f"{args.trials} trials per row, {args.latency * 1000:g} ms per call, {cores} cores; "
        "ceilings in trials/min\n"
    )
    print(
        "| workers | processes | storage | trials/min | CPU ms/trial | getrusage ms/trial "
        "| calls/trial | workers ceiling | endpoint ceiling | machine ceiling | ratio "
        "| background cores | load avg |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        per_call = row.calls / row.trials
        cpu = row.cpu / row.trials
        ceilings = (
            row.workers * one.rate,
            CONCURRENCY * row.processes / (args.latency * per_call),
            cores / cpu,
        )
        storage = "journal" if row.processes == 1 or not args.storage else "postgresql"
        print(
            f"| {row.workers} | {row.processes} | {storage} | {row.rate * 60:.0f} "
            f"| {cpu * 1000:.0f} | {row.rusage / row.trials * 1000:.0f} | {per_call:.1f} | "
            + " | ".join(f"{c * 60:.0f}" for c in ceilings)
            + f" | {row.rate / min(ceilings):.2f} | {row.background:.2f} "
            f"| {row.load[0]:.1f} → {row.load[1]:.1f} |"
        )
    return 0


def memory(args: argparse.Namespace) -> int:
    """Runs one long search in this process; prints its resident memory as trials complete."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    marks = sorted({args.trials // 10, args.trials // 2, args.trials})
    seen: list[tuple[int, int]] = []

    def observe(status: Status) -> None:
        if marks and status.spent.trials >= marks[0]:
            seen.append((status.spent.trials, _status_kb("VmRSS")))
            marks.pop(0)

    with tempfile.TemporaryDirectory() as tmp, loopback_server(args.latency) as (url, _):
        runs = Path(tmp)
        began = time.perf_counter()
        _run(_search(url, "memory", None, runs, args.trials, args.workers, observe))
        wall = time.perf_counter() - began
        transcripts = sum(p.stat().st_size for p in (runs / "memory" / "trials").iterdir())
        journal = (runs / "memory" / "journal.log").stat().st_size
    print(f"`PYTHONPATH=. .venv/bin/python bench/bench_throughput.py {shlex.join(sys.argv[1:])}`\n")
    print(
        f"{args.trials} trials, {args.workers} workers, {wall:.0f} s; peak RSS (VmHWM) "
        f"{_status_kb('VmHWM') / 1024:.0f} MiB; transcripts {transcripts / 2**20:.1f} MiB, "
        f"journal {journal / 2**20:.1f} MiB on disk\n"
    )
    print("| trials done | resident memory (VmRSS) |\n|---:|---:|")
    for trials, kb in seen:
        print(f"| {trials} | {kb / 1024:.0f} MiB |")
    return 0


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    """Parses the command line and runs a benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    scale = commands.add_parser("scaling")
    scale.add_argument("--trials", type=int, default=96)
    scale.add_argument("--workers", type=_ints, default=[1, 4, 16, 32])
    scale.add_argument("--processes", type=_ints, default=[1])
    scale.add_argument(
        "--storage", help="RDB URL for rows with several processes (default: the journal file)"
    )
    scale.add_argument("--latency", type=float, default=0.05)
    mem = commands.add_parser("memory")
    mem.add_argument("--trials", type=int, default=500)
    mem.add_argument("--workers", type=int, default=16)
    mem.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args(argv)
    return scaling(args) if args.command == "scaling" else memory(args)


if __name__ == "__main__":
    sys.exit(main())
