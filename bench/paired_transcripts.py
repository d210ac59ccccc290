"""The paired difference of two validations' transcripts on the same problems.

Reads two ``<split>-<config>.jsonl`` transcripts that ``moa-opt validate`` wrote (say, a
transferred config and a study's own found config, on the same test split) and prints each
one's pass@1 and the mean per-problem difference A - B with the 95% percentile bootstrap
interval ``validate`` uses.

Usage: .venv/bin/python bench/paired_transcripts.py A.jsonl B.jsonl [B2.jsonl ...]
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from optimizer._validate import paired_interval


def pass_rates(path: Path) -> dict[str, float]:
    """Each problem's pass rate over its repeats, from a transcript's ``grade`` lines."""
    scores: dict[str, list[float]] = defaultdict(list)
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["type"] == "grade":
            scores[record["task"]].append(record["score"] / (record.get("max_score") or 1.0))
    return {task: statistics.fmean(values) for task, values in scores.items()}


def main() -> int:
    first, *others = (Path(arg) for arg in sys.argv[1:])
    a = pass_rates(first)
    print(f"A = {first}: pass@1 {statistics.fmean(a.values()):.3f} on {len(a)} problems")
    for other in others:
        b = pass_rates(other)
        if set(a) != set(b):
            print(f"{other}: not the same problems as A", file=sys.stderr)
            return 1
        differences = [a[task] - b[task] for task in sorted(a)]
        low, high = paired_interval(differences)
        print(
            f"B = {other}: pass@1 {statistics.fmean(b.values()):.3f}; "
            f"A - B {statistics.fmean(differences):+.3f} [{low:+.3f}, {high:+.3f}]"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
