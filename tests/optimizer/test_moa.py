"""run_moa against a real OpenAI-compatible server on 127.0.0.1: what each call receives."""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from openai_server import Fault, OpenAIServer, RecordedRequest

from optimizer import AgentSpec, MoAConfig, MoAResult, run_moa
from optimizer.providers import Message, ProviderError, ResponseCache, Router

TASK = "Write add(a, b). Keep {braces} and {{doubled}} as they are."
TEMPLATE = "Earlier answers:\n{responses}\nDo better."
AGENT_PROMPT = "You are agent {0}. Draft in {json: true}. Earlier: {helper_response}|end"
MAIN_PROMPT = "Main {x}. Combine: {helper_response}"


def responder(body: dict[str, Any]) -> str:
    """An answer unique to the model, temperature and system prompt of the request."""
    system = next(m["content"] for m in body["messages"] if m["role"] == "system")
    return f"<{body['model']} t={body['temperature']} s={zlib.crc32(system.encode()):08x}>"


def config(cycles: int, agents: int = 2) -> MoAConfig:
    layer = tuple(
        AgentSpec(
            name=f"agent{i}",
            model=f"cerebras/model-{i}",
            temperature=0.1 * (i + 1),
            system_prompt=AGENT_PROMPT,
            max_tokens=100 + i,
        )
        for i in range(agents)
    )
    main = AgentSpec(
        name="boss", model="model-main", temperature=0.0, system_prompt=MAIN_PROMPT, max_tokens=50
    )
    return MoAConfig(
        main=main,
        cycles=cycles,
        layer_agents=layer if cycles else (),
        aggregation_template=TEMPLATE,
    )


def run(
    server: OpenAIServer,
    cfg: MoAConfig,
    cache: ResponseCache | None = None,
    **kwargs: Any,
) -> MoAResult:
    async def go() -> MoAResult:
        router = Router(base_url=server.base_url, cache=cache, env={}, max_retries=1)
        try:
            return await run_moa(cfg, TASK, router, **kwargs)
        finally:
            await router.aclose()

    return asyncio.run(go())


def numbered(*answers: str) -> str:
    """The aggregated text of a cycle, written out by hand."""
    lines = "\n".join(f"{i}. {a}" for i, a in enumerate(answers))
    return f"Earlier answers:\n{lines}\nDo better."


def sent_messages(request: RecordedRequest) -> tuple[Message, ...]:
    return tuple(Message(m["role"], m["content"]) for m in request.body["messages"])


def test_each_cycle_sees_the_previous_cycles_numbered_answers() -> None:
    with OpenAIServer(responder) as server:
        result = run(server, config(cycles=2))
        requests = server.chat_requests
    calls = result.calls
    assert [(c.cycle, c.agent) for c in calls] == [
        (1, "agent0"),
        (1, "agent1"),
        (2, "agent0"),
        (2, "agent1"),
        (3, "main"),
    ]
    # Cycle 1: {helper_response} is empty; other braces are untouched.
    for call in calls[:2]:
        assert call.messages == (
            Message("system", "You are agent {0}. Draft in {json: true}. Earlier: |end"),
            Message("user", TASK),
        )
    # Cycle 2: the numbered answers of cycle 1, in agent order.
    cycle1 = numbered(calls[0].response, calls[1].response)
    for call in calls[2:4]:
        assert call.messages == (
            Message("system", AGENT_PROMPT.replace("{helper_response}", cycle1)),
            Message("user", TASK),
        )
    # The main agent: the numbered answers of the last cycle.
    cycle2 = numbered(calls[2].response, calls[3].response)
    assert calls[4].messages == (
        Message("system", f"Main {{x}}. Combine: {cycle2}"),
        Message("user", TASK),
    )
    assert result.answer == calls[4].response
    # The server received exactly these conversations, and answered each one differently.
    assert sorted(map(repr, map(sent_messages, requests))) == sorted(
        repr(c.messages) for c in calls
    )
    assert len({c.response for c in calls}) == 5


def test_agents_of_a_cycle_run_concurrently_and_cycles_in_order() -> None:
    with OpenAIServer(responder, latency=0.5) as server:
        run(server, config(cycles=2, agents=3))
        requests = server.chat_requests
    by_cycle: dict[int, list[RecordedRequest]] = {1: [], 2: [], 3: []}
    for request in requests:
        system = request.body["messages"][0]["content"]
        cycle = 3 if system.startswith("Main") else (1 if "Earlier: |end" in system else 2)
        by_cycle[cycle].append(request)
    assert [len(by_cycle[c]) for c in (1, 2, 3)] == [3, 3, 1]
    for cycle in (1, 2):
        group = by_cycle[cycle]
        # Every pair of calls of one cycle was in flight at the same time.
        assert max(r.started for r in group) < min(r.finished for r in group)
    # A cycle starts only after the previous one has answered.
    assert min(r.started for r in by_cycle[2]) >= max(r.finished for r in by_cycle[1])
    assert by_cycle[3][0].started >= max(r.finished for r in by_cycle[2])


def test_zero_cycles_is_the_main_agent_alone() -> None:
    with OpenAIServer(responder) as server:
        result = run(server, config(cycles=0))
        (request,) = server.chat_requests
    (call,) = result.calls
    assert (call.cycle, call.agent, call.model) == (1, "main", "model-main")
    assert call.messages == (Message("system", "Main {x}. Combine: "), Message("user", TASK))
    assert sent_messages(request) == call.messages
    assert result.answer == call.response


def test_call_records_carry_what_each_call_cost() -> None:
    with OpenAIServer(responder) as server:
        server.inject(Fault(500))  # the first call needs one retry
        result = run(server, config(cycles=1), seed=7)
        requests = server.chat_requests
    first, second, main = result.calls
    assert (first.model, first.temperature) == ("cerebras/model-0", 0.1)  # as in the config
    assert (second.model, second.temperature) == ("cerebras/model-1", 0.2)
    assert (main.model, main.temperature) == ("model-main", 0.0)
    bodies = [r.body for r in requests if "seed" in r.body]
    assert {(b["model"], b["max_tokens"], b["seed"]) for b in bodies} == {
        ("model-0", 100, 7),  # the provider prefix is not sent
        ("model-1", 101, 7),
        ("model-main", 50, 7),
    }
    assert sum(c.retries for c in result.calls) == 1
    for call in result.calls:
        words = sum(len(m.content.split()) for m in call.messages)
        assert call.prompt_tokens == words  # the server counts words
        assert call.completion_tokens == len(call.response.split())
        assert call.latency > 0
        assert not call.cached
    assert result.prompt_tokens == sum(c.prompt_tokens for c in result.calls)
    assert result.wall_time >= max(c.latency for c in result.calls)
    record = first.to_dict()
    assert record["messages"][1] == {"role": "user", "content": TASK}
    assert set(record) == {
        "cycle", "agent", "model", "temperature", "messages", "response",
        "prompt_tokens", "completion_tokens", "latency", "retries", "cached",
    }  # fmt: skip


def test_a_rerun_is_answered_from_the_cache(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with OpenAIServer(responder) as server:
        first = run(server, config(cycles=2), cache)
        again = run(server, config(cycles=2), cache)
        other_sample = run(server, config(cycles=2), cache, sample=1)
        assert len(server.chat_requests) == 10
    assert not any(c.cached for c in first.calls)
    assert all(c.cached for c in again.calls)
    assert again.answer == first.answer
    assert (again.prompt_tokens, again.completion_tokens, again.cache_hits) == (0, 0, 5)
    assert other_sample.cache_hits == 0


def test_a_failed_call_raises_provider_error() -> None:
    with OpenAIServer(responder) as server:
        server.inject(Fault(400, body='{"error": {"message": "model not found"}}'))
        with pytest.raises(ProviderError, match="HTTP 400: model not found"):
            run(server, config(cycles=1))


def test_a_failed_main_call_raises_provider_error() -> None:
    with (
        OpenAIServer(responder, api_key="needed") as server,  # we send no key
        pytest.raises(ProviderError, match="HTTP 401: invalid api key"),
    ):
        run(server, config(cycles=0))


def test_identical_agents_of_a_cycle_stay_distinct_samples(tmp_path: Path) -> None:
    """Self-MoA: the same agent three times gives three samples, also when re-run from cache."""
    counter = iter(range(1000))

    def fresh(body: dict[str, Any]) -> str:
        return f"answer {next(counter)} seed={body.get('seed')}"

    twin = AgentSpec("twin", "m", 0.8, "Draft. {helper_response}", 64)
    cfg = MoAConfig(
        main=AgentSpec("main", "m", 0.0, "Pick: {helper_response}", 64),
        cycles=1,
        layer_agents=tuple(replace(twin, name=f"twin{i}") for i in range(3)),
        aggregation_template=TEMPLATE,
    )
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with OpenAIServer(fresh) as server:
        first = run(server, cfg, cache, seed=7)
        second = run(server, cfg, cache, seed=7)
        seeds = [r.body.get("seed") for r in server.chat_requests[:3]]
    layer = [c.response for c in first.calls[:3]]
    assert len(set(layer)) == 3
    assert len(set(seeds)) == 3 and 7 in seeds
    assert [c.response for c in second.calls] == [c.response for c in first.calls]
    assert all(c.cached for c in second.calls)
