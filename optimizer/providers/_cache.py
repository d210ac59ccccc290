"""An on-disk SQLite response cache, and a provider wrapper that uses it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from optimizer.providers._base import ChatRequest, Completion, Provider

__all__ = ["CacheStats", "CachedAnswer", "CachedProvider", "ResponseCache", "cache_key"]

_KEY_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL,
    finish_reason TEXT
)
"""


def cache_key(endpoint: str, request: ChatRequest) -> str:
    """Returns the sha256 of the canonical JSON of everything that shapes an answer.

    The key covers endpoint, model, messages, temperature, max_tokens, seed, the sample
    index and the replica, so repeated samples stay distinct while a re-run finds the same entries.
    """
    canonical = {
        "v": _KEY_VERSION,
        "endpoint": endpoint,
        "model": request.model,
        "messages": [[m.role, m.content] for m in request.messages],
        "temperature": float(request.temperature),
        "max_tokens": request.max_tokens,
        "seed": request.seed,
        "sample": request.sample,
        "replica": request.replica,
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    """A stored answer with the usage it cost when it was made."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"


@dataclass(frozen=True)
class CacheStats:
    """Lookups made through one ``ResponseCache`` object in this process."""

    hits: int
    misses: int


class ResponseCache:
    """A SQLite cache of chat answers, safe to share between threads and processes.

    The database uses WAL journaling and a busy timeout; each thread gets its own
    connection. Only the key, endpoint, model, answer text and token counts are stored:
    never request headers or API keys.

    Args:
        path: Database file (e.g. ``runs/cache.sqlite``); parent folders are created.
        busy_timeout: Seconds to wait for another writer's lock.
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._hits = 0
        self._misses = 0
        with self._lock:
            self._connect()  # create the schema now, so a bad path fails early

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"

    @property
    def stats(self) -> CacheStats:
        """Hits and misses of ``get`` so far."""
        with self._lock:
            return CacheStats(self._hits, self._misses)

    def get(self, key: str) -> CachedAnswer | None:
        """Returns the answer stored under ``key``, counting a hit or a miss."""
        row = (
            self._connection()
            .execute(
                "SELECT text, prompt_tokens, completion_tokens, finish_reason FROM responses "
                "WHERE key = ?",
                (key,),
            )
            .fetchone()
        )
        with self._lock:
            if row is None:
                self._misses += 1
            else:
                self._hits += 1
        if row is None:
            return None
        return CachedAnswer(str(row[0]), int(row[1]), int(row[2]), str(row[3] or "stop"))

    def put(self, key: str, endpoint: str, model: str, answer: CachedAnswer) -> None:
        """Stores ``answer`` under ``key`` (replacing an earlier one)."""
        connection = self._connection()
        with connection:
            connection.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    endpoint,
                    model,
                    answer.text,
                    answer.prompt_tokens,
                    answer.completion_tokens,
                    time.time(),
                    answer.finish_reason,
                ),
            )

    def __len__(self) -> int:
        row = self._connection().execute("SELECT COUNT(*) FROM responses").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Closes every connection this object opened (in this process)."""
        with self._lock:
            connections, self._connections = self._connections, []
            self._local = threading.local()
            if self._pid != os.getpid():
                return  # the parent's connections are not ours to close
            for connection in connections:
                connection.close()

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None or self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():  # forked: start afresh, leave the parent's alone
                    self._pid = os.getpid()
                    self._connections = []
                    self._local = threading.local()
                connection = self._connect()
        return connection

    def _connect(self) -> sqlite3.Connection:
        """Opens a connection for the calling thread (caller holds ``_lock``)."""
        connection = sqlite3.connect(self.path, timeout=self._busy_timeout, check_same_thread=False)
        connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        _use_wal(connection, self._busy_timeout)
        connection.execute("PRAGMA synchronous = NORMAL")
        with connection:
            connection.execute(_SCHEMA)
            columns = {row[1] for row in connection.execute("PRAGMA table_info(responses)")}
            if "finish_reason" not in columns:  # a cache made before it was stored
                with contextlib.suppress(sqlite3.OperationalError):  # another process did it
                    connection.execute("ALTER TABLE responses ADD COLUMN finish_reason TEXT")
        self._local.connection = connection
        self._connections.append(connection)
        return connection


def _use_wal(connection: sqlite3.Connection, timeout: float) -> None:
    """Switches the database to WAL, waiting out other processes that hold it.

    SQLite answers a journal-mode change that meets another connection with "database is
    locked" at once, without its busy handler, so the wait is here.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class CachedProvider(Provider):
    """Answers from a ``ResponseCache`` when it can, else from the inner provider.

    A hit costs no tokens and is reported with ``cached=True`` and the lookup time as its
    latency; a miss calls the inner provider and stores its answer. Failures are not
    stored. The cache is shared, so ``aclose`` leaves it open.

    Args:
        inner: The provider asked on a miss.
        cache: The cache.
    """

    def __init__(self, inner: Provider, cache: ResponseCache) -> None:
        self.inner = inner
        self.cache = cache
        self.name = inner.name
        self.endpoint = inner.endpoint

    def __repr__(self) -> str:
        return f"CachedProvider({self.inner!r}, {self.cache!r})"

    async def complete(self, request: ChatRequest) -> Completion:
        """Returns the cached answer, or calls the inner provider and stores its answer."""
        start = time.perf_counter()
        key = cache_key(self.endpoint, request)
        # SQLite calls block; run them off the event loop (another process may hold a lock).
        found = await asyncio.to_thread(self.cache.get, key)
        if found is not None:
            return Completion(
                text=found.text,
                prompt_tokens=0,
                completion_tokens=0,
                latency=time.perf_counter() - start,
                cached=True,
                finish_reason=found.finish_reason,
            )
        completion = await self.inner.complete(request)
        answer = CachedAnswer(
            completion.text,
            completion.prompt_tokens,
            completion.completion_tokens,
            completion.finish_reason,
        )
        await asyncio.to_thread(self.cache.put, key, self.endpoint, request.model, answer)
        return completion

    async def list_models(self) -> list[str]:
        """Returns the inner provider's models."""
        return await self.inner.list_models()

    async def aclose(self) -> None:
        """Closes the inner provider (not the shared cache)."""
        await self.inner.aclose()
