"""Worker slots: how many trials of one process call models at once."""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Slots"]


class Slots:
    """Worker slots, granted in the order they were claimed."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._queue: deque[asyncio.Future[None]] = deque()
        self._held: set[asyncio.Future[None]] = set()
        self._closed = False

    @property
    def in_use(self) -> int:
        """Slots held."""
        return len(self._held)

    def claim(self) -> asyncio.Future[None]:
        """Queues a claim, done once it holds a slot (cancelled once the slots are closed)."""
        claim = asyncio.get_running_loop().create_future()
        if self._closed:
            claim.cancel()
            return claim
        self._queue.append(claim)
        self._grant()
        return claim

    def release(self, claim: asyncio.Future[None]) -> None:
        """Frees the slot ``claim`` holds, or withdraws it; again, it does nothing."""
        if claim in self._held:
            self._held.discard(claim)
            self._free += 1
        elif not claim.done():
            claim.cancel()
        self._grant()

    def close(self) -> None:
        """Grants no more slots: cancels the claims waiting and every later one."""
        self._closed = True
        for claim in self._queue:
            claim.cancel()
        self._queue.clear()

    def _grant(self) -> None:
        while self._free > 0 and self._queue:
            claim = self._queue.popleft()
            if not claim.done():
                self._free -= 1
                self._held.add(claim)
                claim.set_result(None)
