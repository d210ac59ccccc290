"""Benchmark: load time, prompt and generation speed of the embedded models.

Each model is loaded through ``LocalProvider`` (weights already assembled: the load is the
stamp check plus llama.cpp's load), then answers the same task twice at temperature 0: once
with ``max_tokens=1`` (prompt evaluation, as every call resets the model state) and once with
``--max-tokens``. Generation speed is the extra tokens over the extra time, so prompt
evaluation does not dilute it. RSS is the process total after that model (models stay
loaded). Figures depend on what else runs on the machine's cores.

Usage: PYTHONPATH=. .venv/bin/python bench/bench_local.py [--models qwen2.5-coder-0.5b ...]
    [--max-tokens 128] [--threads N] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass

from optimizer.providers._base import ChatRequest, Message
from optimizer.providers._local import DEFAULT_N_CTX, LocalProvider
from optimizer.providers._weights import MODELS

TASK = (
    "Write a Python function calculate_user_metrics(users, start_date, end_date) that returns "
    "a dict with average_engagement, top_performers and active_count. Engagement is "
    "(posts * 2 + comments * 1.5 + likes * 0.1) / days_active. Return only the code."
)
SYSTEM = "You are a helpful assistant. Please implement the requested function."


@dataclass(frozen=True)
class Result:
    """Figures for one model."""

    model: str
    load_seconds: float
    prompt_tokens: int
    prompt_tokens_per_s: float
    completion_tokens: int
    generation_tokens_per_s: float
    rss_mib: int


def _rss_mib() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return -1


def _request(model: str, max_tokens: int) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=(Message("system", SYSTEM), Message("user", TASK)),
        temperature=0.0,
        max_tokens=max_tokens,
    )


async def bench(model: str, max_tokens: int, threads: int | None, runs: int) -> Result:
    """Loads ``model`` and measures it; medians over ``runs`` runs."""
    provider = LocalProvider(model, n_threads=threads)
    start = time.perf_counter()
    await provider.load()
    load_seconds = time.perf_counter() - start
    prompt_rates: list[float] = []
    gen_rates: list[float] = []
    prompt_tokens = completion_tokens = 0
    for _ in range(runs):
        first = await provider.complete(_request(model, 1))
        full = await provider.complete(_request(model, max_tokens))
        prompt_tokens, completion_tokens = first.prompt_tokens, full.completion_tokens
        prompt_rates.append(first.prompt_tokens / first.latency)
        extra = full.latency - first.latency
        if full.completion_tokens > 1 and extra > 0:
            gen_rates.append((full.completion_tokens - 1) / extra)
    return Result(
        model=model,
        load_seconds=load_seconds,
        prompt_tokens=prompt_tokens,
        prompt_tokens_per_s=statistics.median(prompt_rates),
        completion_tokens=completion_tokens,
        generation_tokens_per_s=statistics.median(gen_rates) if gen_rates else float("nan"),
        rss_mib=_rss_mib(),
    )


def main() -> None:
    """Runs the benchmark and prints a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    print(
        f"n_ctx={DEFAULT_N_CTX} threads={args.threads or 'all'} cpus={os.cpu_count()} "
        f"max_tokens={args.max_tokens} runs={args.runs} (medians)"
    )
    header = f"{'model':<20} {'load s':>7} {'prompt':>7} {'prompt t/s':>11} {'gen':>5}"
    print(f"{header} {'gen t/s':>8} {'RSS MiB':>8}")
    for model in args.models:
        r = asyncio.run(bench(model, args.max_tokens, args.threads, args.runs))
        print(
            f"{r.model:<20} {r.load_seconds:>7.2f} {r.prompt_tokens:>7} "
            f"{r.prompt_tokens_per_s:>11.1f} {r.completion_tokens:>5} "
            f"{r.generation_tokens_per_s:>8.1f} {r.rss_mib:>8}"
        )


if __name__ == "__main__":
    main()
