"""Benchmark: run_moa's concurrency against the workshop's one-call-after-another runtime.

A 3-agent, 2-cycle config runs against the loopback OpenAI-compatible server of the tests,
which takes ``--latency`` seconds per call (in a child process by default, so the server's
threads do not compete with the client for this process's GIL, as a remote endpoint would not;
``--server thread`` runs it in this process). ``run_moa`` runs the agents of a cycle at once,
so its ideal wall time is (cycles + 1) x latency; the workshop's runtime makes one call after
another, ideally (agents x cycles + 1) x latency. Both run the same config on the same server
(no cache); the table gives median and best wall times over ``--runs`` runs after one
warm-up run each, and their ratios.

Usage: PYTHONPATH=. .venv/bin/python bench/bench_moa.py [--latency 0.2] [--runs 5]
    [--server process|thread]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import shlex
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from openai_server import OpenAIServer

from optimizer import AgentSpec, MoAConfig, run_moa
from optimizer._moa import aggregate, fill_helper_response
from optimizer.providers import ChatRequest, Message, Router

TASK = "Write a Python function add(a, b) that returns a + b."


def bench_config(agents: int, cycles: int) -> MoAConfig:
    """A workshop-style config: distinct layer agents, then a main agent."""
    layer = tuple(
        AgentSpec(
            name=f"agent{i}",
            model=f"model-{i}",
            temperature=0.5,
            system_prompt=f"You are helper {i}. {{helper_response}}",
        )
        for i in range(agents)
    )
    main = AgentSpec(
        name="main",
        model="model-main",
        temperature=0.7,
        system_prompt="Implement the requested function. {helper_response}",
    )
    return MoAConfig(main=main, cycles=cycles, layer_agents=layer)


async def run_sequential(config: MoAConfig, task: str, router: Router) -> str:
    """The workshop's runtime: the same messages as run_moa, one call after another."""
    helper_response = ""

    async def call(agent: AgentSpec) -> str:
        provider, model = router.resolve(agent.model)
        messages = (
            Message("system", fill_helper_response(agent.system_prompt, helper_response)),
            Message("user", task),
        )
        request = ChatRequest(model, messages, agent.temperature, agent.max_tokens)
        return (await provider.complete(request)).text

    for _ in range(config.cycles):
        responses = [await call(agent) for agent in config.layer_agents]
        helper_response = aggregate(config.aggregation_template, responses)
    return await call(config.main)


async def run_concurrent(config: MoAConfig, task: str, router: Router) -> str:
    """This project's runtime."""
    return (await run_moa(config, task, router)).answer


async def measure(
    runner: Callable[[MoAConfig, str, Router], Awaitable[str]],
    config: MoAConfig,
    base_url: str,
    runs: int,
) -> tuple[list[float], str]:
    """Returns the wall times of ``runs`` runs (after one warm-up run) and the answer."""
    router = Router(base_url=base_url, env={})
    try:
        answer = await runner(config, TASK, router)  # warm-up: opens the connection pool
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            assert await runner(config, TASK, router) == answer
            times.append(time.perf_counter() - start)
        return times, answer
    finally:
        await router.aclose()


def _serve(latency: float, connection: Connection) -> None:
    """Child process: runs the server until the parent says stop."""
    with OpenAIServer(latency=latency) as server:
        connection.send(server.base_url)
        connection.recv()


@contextlib.contextmanager
def loopback_server(latency: float, where: str) -> Iterator[str]:
    """Runs the test server in a child process or a thread; yields its base URL."""
    if where == "thread":
        with OpenAIServer(latency=latency) as server:
            yield server.base_url
        return
    parent, child = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(latency, child), daemon=True
    )
    process.start()
    try:
        yield str(parent.recv())
    finally:
        parent.send("stop")
        process.join(timeout=10)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per call")
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--server", choices=("process", "thread"), default="process")
    args = parser.parse_args(argv)
    config = bench_config(args.agents, args.cycles)
    calls = args.agents * args.cycles + 1

    with loopback_server(args.latency, args.server) as base_url:
        concurrent, answer = asyncio.run(measure(run_concurrent, config, base_url, args.runs))
        sequential, sequential_answer = asyncio.run(
            measure(run_sequential, config, base_url, args.runs)
        )
    if sequential_answer != answer:
        print("error: the sequential baseline gave a different answer", file=sys.stderr)
        return 1

    ideal_concurrent = (args.cycles + 1) * args.latency
    ideal_sequential = calls * args.latency
    rows = [
        ("run_moa (agents of a cycle concurrent)", concurrent, ideal_concurrent),
        ("one call after another (workshop)", sequential, ideal_sequential),
    ]
    command = "PYTHONPATH=. .venv/bin/python bench/bench_moa.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    print(f"`{command.strip()}`\n")
    print(
        f"{args.agents} agents, {args.cycles} cycles ({calls} calls), {args.latency * 1000:.0f} ms"
        f" per call, loopback server in a {args.server}, no cache; {args.runs} runs after one"
        " warm-up\n"
    )
    print("| runtime | ideal (s) | median (s) | best (s) | median / ideal |")
    print("|---|---:|---:|---:|---:|")
    for name, times, ideal in rows:
        median = statistics.median(times)
        print(f"| {name} | {ideal:.3f} | {median:.3f} | {min(times):.3f} | {median / ideal:.3f}x |")
    speedup = statistics.median(sequential) / statistics.median(concurrent)
    print(f"\nsequential median / run_moa median: {speedup:.2f}x")
    ratio = statistics.median(concurrent) / ideal_concurrent
    verdict = "within" if ratio <= 1.1 else "NOT within"
    print(f"run_moa is {verdict} 1.1x of the ideal (cycles + 1) x latency ({ratio:.3f}x)")
    return 0 if ratio <= 1.1 else 1


if __name__ == "__main__":
    sys.exit(main())
