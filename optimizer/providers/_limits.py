"""Concurrency and rate limits, as a wrapper around any provider."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from optimizer.providers._base import ChatRequest, Completion, Provider

__all__ = ["LimitedProvider", "Limits"]


@dataclass(frozen=True)
class Limits:
    """Limits for one endpoint.

    Attributes:
        max_concurrency: Requests in flight at once.
        requests_per_minute: Request rate cap, or None.
        tokens_per_minute: Token rate cap, or None.
        count_max_tokens_up_front: Charge a request's max_tokens (as Cerebras does) against the
            token bucket before sending it, instead of its actual usage afterwards.
    """

    max_concurrency: int = 16
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    count_max_tokens_up_front: bool = False


class _LoopState:
    """The semaphore and buckets of one event loop (asyncio primitives bind to a loop)."""

    def __init__(self, limits: Limits, period: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.semaphore = asyncio.Semaphore(limits.max_concurrency)
        self.requests = (
            AsyncLimiter(limits.requests_per_minute, period) if limits.requests_per_minute else None
        )
        self.tokens = (
            AsyncLimiter(limits.tokens_per_minute, period) if limits.tokens_per_minute else None
        )


class LimitedProvider(Provider):
    """Wraps a provider with a concurrency limit and optional request and token rate limits.

    Rates are leaky buckets (aiolimiter): up to a minute's worth may go at once, then the
    bucket drains at the per-minute rate. Concurrency is taken first, then rate capacity, so
    the buckets see the moment a request is really sent. With ``count_max_tokens_up_front``
    a request's ``max_tokens`` is charged before sending and its prompt tokens afterwards;
    otherwise its prompt + completion tokens are charged after it returns, and the caller
    waits until the bucket has room for them (so it is slowed before sending again).
    Charges larger than the bucket are clamped to its size. Cache hits never get here.

    Args:
        inner: The provider to limit.
        limits: The limits.
        period: Length in seconds of the rate window the ``*_per_minute`` values refer to
            (60; smaller in tests).
    """

    def __init__(self, inner: Provider, limits: Limits, *, period: float = 60.0) -> None:
        if limits.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.inner = inner
        self.limits = limits
        self.period = period
        self.name = inner.name
        self.endpoint = inner.endpoint
        self._state: _LoopState | None = None

    def __repr__(self) -> str:
        return f"LimitedProvider({self.inner!r}, {self.limits!r})"

    def _loop_state(self) -> _LoopState:
        if self._state is None or self._state.loop is not asyncio.get_running_loop():
            self._state = _LoopState(self.limits, self.period)
        return self._state

    async def complete(self, request: ChatRequest) -> Completion:
        """Waits for a concurrency slot and rate capacity, then calls the inner provider."""
        state = self._loop_state()
        up_front = self.limits.count_max_tokens_up_front
        async with state.semaphore:
            if state.requests is not None:
                await state.requests.acquire()
            if state.tokens is not None and up_front:
                await _charge(state.tokens, request.max_tokens)
            completion = await self.inner.complete(request)
        if state.tokens is not None and not completion.cached:
            used = completion.prompt_tokens
            if not up_front:
                used += completion.completion_tokens
            await _charge(state.tokens, used)
        return completion

    async def list_models(self) -> list[str]:
        """Returns the inner provider's models."""
        return await self.inner.list_models()

    async def aclose(self) -> None:
        """Closes the inner provider."""
        await self.inner.aclose()


async def _charge(bucket: AsyncLimiter, amount: float) -> None:
    """Takes ``amount`` from ``bucket``, clamped to its size (aiolimiter rejects more)."""
    amount = min(max(amount, 0.0), bucket.max_rate)
    if amount > 0:
        await bucket.acquire(amount)
