"""LimitedProvider: concurrency and rate limits, seen from a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time

from openai_server import OpenAIServer, RecordedRequest

from optimizer.providers import (
    ChatRequest,
    Completion,
    LimitedProvider,
    Limits,
    Message,
    OpenAICompatProvider,
    Provider,
)

# Spacing checks read the moments the limiter let each request go (recorded below it, before
# the HTTP call), not the server's arrival times: on a loaded machine a request can reach the
# server late, which would squeeze the gaps the server sees. A little slack for the clock.
SLACK = 0.03


class Released(Provider):
    """Records when the limiter lets each request go, then makes the real HTTP call."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.name = inner.name
        self.endpoint = inner.endpoint
        self.times: list[float] = []

    async def complete(self, request: ChatRequest) -> Completion:
        if request.messages[0].content != "warm-up":
            self.times.append(time.monotonic())
        return await self.inner.complete(request)

    async def list_models(self) -> list[str]:
        return await self.inner.list_models()

    async def aclose(self) -> None:
        await self.inner.aclose()


def request(max_tokens: int = 16, text: str = "hi") -> ChatRequest:
    return ChatRequest("model-a", (Message("user", text),), 0.0, max_tokens)


def limited(server: OpenAIServer, limits: Limits, period: float = 60.0) -> LimitedProvider:
    inner = OpenAICompatProvider(name="srv", base_url=server.base_url, max_retries=0)
    return LimitedProvider(Released(inner), limits, period=period)


async def warm_up(provider: LimitedProvider) -> None:
    """Opens the HTTP client with one call past the limits, so set-up time is not measured."""
    await provider.inner.complete(request(text="warm-up"))


async def gather(provider: LimitedProvider, requests: list[ChatRequest]) -> list[Completion]:
    try:
        await warm_up(provider)
        return await asyncio.gather(*(provider.complete(r) for r in requests))
    finally:
        await provider.aclose()


async def one_by_one(provider: LimitedProvider, requests: list[ChatRequest]) -> list[Completion]:
    try:
        await warm_up(provider)
        return [await provider.complete(r) for r in requests]
    finally:
        await provider.aclose()


def measured(server: OpenAIServer) -> list[RecordedRequest]:
    """The requests made through the limits (the warm-up call left out)."""
    return [r for r in server.chat_requests if r.body["messages"][0]["content"] != "warm-up"]


def max_overlap(requests: list[RecordedRequest]) -> int:
    """The largest number of requests the server was handling at one moment."""
    return max(sum(o.started <= r.started < o.finished for o in requests) for r in requests)


def start_offsets(provider: LimitedProvider) -> list[float]:
    """When the limiter let the measured requests go, relative to the first."""
    assert isinstance(provider.inner, Released)
    starts = sorted(provider.inner.times)
    return [s - starts[0] for s in starts]


def test_concurrency_limit_is_honoured() -> None:
    with OpenAIServer(latency=0.1) as server:
        asyncio.run(gather(limited(server, Limits(max_concurrency=2)), [request()] * 6))
        assert len(measured(server)) == 6
        assert max_overlap(measured(server)) == 2


def test_without_a_tight_limit_requests_overlap() -> None:
    with OpenAIServer(latency=0.5) as server:  # long enough to overlap on a loaded machine
        asyncio.run(gather(limited(server, Limits(max_concurrency=16)), [request()] * 6))
        assert max_overlap(measured(server)) == 6


def test_requests_per_minute_spreads_starts_as_the_bucket_implies() -> None:
    # 2 requests per 0.2 s window: 2 go at once, then one every 0.1 s.
    limits = Limits(requests_per_minute=2)
    with OpenAIServer() as server:
        provider = limited(server, limits, period=0.2)
        asyncio.run(gather(provider, [request()] * 5))
        offsets = start_offsets(provider)
    assert len(offsets) == 5
    for i, offset in enumerate(offsets[2:], start=1):
        assert offset >= 0.1 * i - SLACK


def test_max_tokens_are_charged_up_front() -> None:
    # A 100-token bucket per 0.3 s and 100 max_tokens per request: one request per 0.3 s.
    limits = Limits(tokens_per_minute=100, count_max_tokens_up_front=True)
    with OpenAIServer() as server:
        provider = limited(server, limits, period=0.3)
        asyncio.run(gather(provider, [request(100)] * 3))
        offsets = start_offsets(provider)
    assert offsets[1] >= 0.3 - SLACK
    assert offsets[2] >= 0.6 - SLACK


def test_up_front_charge_larger_than_the_bucket_is_clamped() -> None:
    limits = Limits(tokens_per_minute=50, count_max_tokens_up_front=True)
    with OpenAIServer() as server:
        provider = limited(server, limits, period=0.2)
        done = asyncio.run(gather(provider, [request(5000)] * 2))
        offsets = start_offsets(provider)
    assert len(done) == 2
    assert offsets[1] >= 0.2 - SLACK  # each request takes the whole bucket


def test_actual_usage_is_charged_after_the_call() -> None:
    # Each call uses more than the 10-token bucket (charged as 10, clamped). Call 1's charge
    # fills the bucket; call 2 is sent at once, but its charge waits for the bucket to drain
    # (0.2 s), and so does call 3's: calls 3 and 4 start 0.2 s and 0.4 s after call 1.
    limits = Limits(tokens_per_minute=10)
    text = "one two three four five six seven eight nine ten"
    with OpenAIServer() as server:
        provider = limited(server, limits, period=0.2)
        done = asyncio.run(one_by_one(provider, [request(text=text)] * 4))
        offsets = start_offsets(provider)
    assert all(c.prompt_tokens + c.completion_tokens > 10 for c in done)
    assert offsets[2] >= 0.2 - SLACK
    assert offsets[3] >= 0.4 - SLACK


def test_wrapper_keeps_name_and_endpoint_and_lists_models() -> None:
    with OpenAIServer(models=("x", "y")) as server:
        provider = limited(server, Limits())

        async def models() -> list[str]:
            try:
                return await provider.list_models()
            finally:
                await provider.aclose()

        assert asyncio.run(models()) == ["x", "y"]
        assert provider.name == "srv"
        assert provider.endpoint == server.base_url


def test_limits_work_across_event_loops() -> None:
    with OpenAIServer(latency=0.05) as server:
        provider = limited(server, Limits(max_concurrency=1))
        asyncio.run(gather(provider, [request()] * 2))
        asyncio.run(gather(provider, [request()] * 3))  # a second asyncio.run
        assert len(measured(server)) == 5
        assert max_overlap(measured(server)) == 1
