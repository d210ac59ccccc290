"""Benchmark: grading with function120 in the sandbox against a bare in-process ``exec``.

The candidates are the challenge solutions of the grader tests (the workshop's original, a
do-nothing answer, two correct solutions and ten one-bug variants), repeated to ``--candidates``.
The baseline does what the workshop's grader did: ``exec`` the code in this process, call the
function with the same fresh inputs and score it with the same checks, with no isolation at
all. The sandbox grades each candidate in its own isolated process (one per candidate; all 11
tests in it), with bubblewrap; ``--isolation unisolated`` measures the opt-in run without it.
``--previous DIR`` also times the grader of another checkout (``git worktree add DIR REV``) in
the same run, in a child process, so a change to the sandbox is measured against what it
replaced.

It reports the median time to grade one candidate (over ``--repeat`` gradings of the correct
solution, after a warm-up), and the wall time to grade all candidates with 1, 2, 4... worker
threads (each driving its own sandbox processes), each against the baseline. Every candidate's
sandbox score is checked to equal its in-process score.

Usage: PYTHONPATH=. .venv/bin/python bench/bench_grading.py [--repeat 30] [--candidates 100]
    [--workers 1,2,4] [--isolation auto|bwrap|unisolated] [--previous DIR]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from graders import (
    FUNCTION120_TESTS,
    Function120Grader,
    Outcome,
    Sandbox,
    Task,
    extract_code,
    load_task,
)

ROOT = Path(__file__).resolve().parents[1]


def load_candidates() -> ModuleType:
    """The challenge candidates shared with the tests."""
    path = ROOT / "tests" / "graders" / "challenge_candidates.py"
    spec = importlib.util.spec_from_file_location("challenge_candidates", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def candidate_pool(count: int) -> list[str]:
    """``count`` candidates, cycling through every solution of the tests."""
    module = load_candidates()
    base = [module.ORIGINAL, module.DO_NOTHING, module.CLEAN, module.THOROUGH]
    base += [code for code, _ in module.ONE_BUG_VARIANTS.values()]
    return [base[i % len(base)] for i in range(count)]


def grade_in_process(code: str, task: Task) -> float:
    """The unisolated baseline: exec in this process, call, score with the same checks."""
    function_name = task.function_name or "calculate_user_metrics"
    extracted = extract_code(code, function_name)
    assert extracted is not None
    namespace: dict[str, Any] = {}
    exec(compile(extracted, "<candidate>", "exec"), namespace)  # the point of the baseline
    function: Callable[..., Any] = namespace[function_name]
    total = 0.0
    for test in FUNCTION120_TESTS:
        outcomes = []
        for call in test.calls:
            args = copy.deepcopy(call.args)
            try:
                value = function(*args)
            except Exception as error:
                outcomes.append(Outcome(call.name, "raised", error=f"{type(error).__name__}"))
            else:
                outcomes.append(Outcome(call.name, "returned", value, args))
        total += test.score(outcomes)[0]
    return total


_PREVIOUS = """
import statistics, sys, time
import graders
from graders import Function120Grader, Sandbox, load_task
sys.path.insert(0, sys.argv[2])
from challenge_candidates import CLEAN
grader, task = Function120Grader(sandbox=Sandbox()), load_task("challenge")
assert graders.__file__.startswith(sys.argv[3]), graders.__file__
grader.grade(CLEAN, task)
samples = []
for _ in range(int(sys.argv[1])):
    start = time.perf_counter()
    grader.grade(CLEAN, task)
    samples.append(time.perf_counter() - start)
print(statistics.median(samples) * 1000)
"""


def previous_median_ms(checkout: Path, repeat: int) -> float:
    """The median time of the grader in another checkout, measured in a child process."""
    tests = ROOT / "tests" / "graders"
    done = subprocess.run(  # run in the checkout: `python -c` puts the working folder first
        [sys.executable, "-c", _PREVIOUS, str(repeat), str(tests), str(checkout.resolve())],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout)},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and prints a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="gradings of one candidate")
    parser.add_argument("--candidates", type=int, default=100, help="candidates to grade")
    parser.add_argument("--workers", default="1,2,4", help="worker thread counts, comma-separated")
    parser.add_argument("--isolation", choices=("auto", "bwrap", "unisolated"), default="auto")
    parser.add_argument("--previous", type=Path, help="a checkout whose grader is timed too")
    args = parser.parse_args(argv)
    workers = [int(n) for n in args.workers.split(",")]

    task = load_task("challenge")
    sandbox = Sandbox(isolation=args.isolation)
    grader = Function120Grader(sandbox=sandbox)
    module = load_candidates()
    correct = module.CLEAN
    pool = candidate_pool(args.candidates)
    load_before = os.getloadavg()[0]

    grader.grade(correct, task)  # warm-up: imports, the isolation probe, disk caches
    grade_in_process(correct, task)
    one_sandbox = [timed(lambda: grader.grade(correct, task)) for _ in range(args.repeat)]
    one_exec = [timed(lambda: grade_in_process(correct, task)) for _ in range(args.repeat)]
    previous = previous_median_ms(args.previous, args.repeat) if args.previous else None

    expected = [grade_in_process(code, task) for code in pool]
    baseline_total = timed(lambda: [grade_in_process(code, task) for code in pool])
    rows = []
    for count in workers:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=count) as executor:
            results = list(executor.map(lambda code: grader.grade(code, task), pool))
        wall = time.perf_counter() - started
        scores = [r.score for r in results]
        assert scores == expected, "sandbox and in-process scores differ"
        rows.append((count, wall))

    single = median_ms(one_sandbox)
    baseline = median_ms(one_exec)
    flags = shlex.join(sys.argv[1:] if argv is None else argv)
    print(f"Command: PYTHONPATH=. .venv/bin/python bench/bench_grading.py {flags}".rstrip())
    print(
        f"Machine: {os.cpu_count()} CPUs, load average {load_before:.2f} at start; "
        f"Python {sys.version.split()[0]}; isolation {sandbox.isolation} "
        f"({sandbox.isolation_detail})"
    )
    print()
    print("| What | Sandbox | Bare in-process exec | Ratio |")
    print("|---|---:|---:|---:|")
    p90 = statistics.quantiles(one_sandbox, n=10)[-1] * 1000
    best = min(one_sandbox) * 1000
    print(
        f"| One candidate, median of {args.repeat} (p90 {p90:.0f} ms, best {best:.0f} ms) | "
        f"{single:.0f} ms | {baseline:.2f} ms | {single / baseline:.0f}x |"
    )
    if previous is not None:
        print(
            f"| One candidate, median of {args.repeat}, the grader of {args.previous} | "
            f"{previous:.0f} ms | {baseline:.2f} ms | {previous / baseline:.0f}x |"
        )
    for count, wall in rows:
        print(
            f"| {len(pool)} candidates, {count} worker{'s' if count > 1 else ''} | "
            f"{wall:.2f} s ({len(pool) / wall:.1f}/s) | {baseline_total:.3f} s | "
            f"{wall / baseline_total:.0f}x |"
        )
    print()
    print(f"All {len(pool)} sandbox scores equal the in-process scores.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
