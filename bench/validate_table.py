"""Renders a ``moa-opt validate --json`` record as the Markdown table of BENCHMARKS.md.

Usage: .venv/bin/python bench/validate_table.py humaneval-validate.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    record = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    problems = record["problems"]
    print(f"split {record['split']}, {problems} problems, {record['repeats']} repeat(s)")
    print(f"{record['intervals']}\n")
    print("| config | pass@1 | 95% interval | tokens/problem | samples | found - this [95%] |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in record["results"]:
        diff = (
            "—"
            if row["config"] == "found"
            else f"{row['diff']:+.3f} [{row['diff_low']:+.3f}, {row['diff_high']:+.3f}]"
        )
        passed = sum(run["score"] for run in row["runs"]) if "runs" in row else None
        count = f" ({passed:g}/{len(row['runs'])})" if passed is not None else ""
        print(
            f"| {row['config']} | {row['pass_at_1']:.3f}{count} | "
            f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}] | {row['tokens']:,.0f} | "
            f"{row['samples']} | {diff} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
