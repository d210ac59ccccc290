"""Benchmark and check: every HumanEval canonical solution graded by the humaneval grader.

Loads the built-in ``humaneval`` suite, grades each problem's prompt plus canonical solution in
the sandbox (``check(candidate)`` in its own process) with ``--workers`` threads, and reports
how many pass (all 164 must: the search's pre-flight skips this check for the built-in suite)
and the wall time. Problems that do not pass are listed with the grader's feedback.

Usage: PYTHONPATH=. .venv/bin/python bench/bench_suite.py [--workers 2] [--limit N]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from graders import HumanEvalGrader, Task, load_tasks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="only the first N problems")
    args = parser.parse_args()
    tasks = load_tasks("humaneval")[: args.limit]
    grader = HumanEvalGrader()

    def grade(task: Task) -> tuple[str, float, str]:
        assert task.reference is not None
        result = grader.grade(task.reference, task)
        return task.name, result.score, result.feedback

    start = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        results = list(pool.map(grade, tasks))
    wall = time.perf_counter() - start
    failed = [(name, feedback) for name, score, feedback in results if score < 1]
    print(
        f"{len(results) - len(failed)}/{len(results)} canonical solutions pass; wall "
        f"{wall:.1f} s ({wall / len(results):.2f} s per problem, {args.workers} workers, "
        f"isolation {grader.sandbox.isolation})"
    )
    for name, feedback in failed:
        print(f"  {name}: {feedback}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
