"""ResponseCache and CachedProvider, with a real server on 127.0.0.1 behind the cache."""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest
from openai_server import Fault, OpenAIServer

from optimizer.providers import (
    CachedProvider,
    ChatRequest,
    Completion,
    Message,
    OpenAICompatProvider,
    ProviderError,
    ResponseCache,
)
from optimizer.providers._cache import CachedAnswer, cache_key

KEY = "sk-planted-cache-key-9a8b7c6d5e4f30211203"

BASE = ChatRequest(
    model="model-a",
    messages=(Message("system", "You help."), Message("user", "Write a function.")),
    temperature=0.7,
    max_tokens=128,
)


def cached(server: OpenAIServer, cache: ResponseCache) -> CachedProvider:
    inner = OpenAICompatProvider(name="srv", base_url=server.base_url, api_key=KEY, max_retries=0)
    return CachedProvider(inner, cache)


def run_all(provider: CachedProvider, requests: list[ChatRequest]) -> list[Completion]:
    async def go() -> list[Completion]:
        try:
            return [await provider.complete(r) for r in requests]
        finally:
            await provider.aclose()

    return asyncio.run(go())


def test_miss_then_hit(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with OpenAIServer(api_key=KEY) as server:
        first, second = run_all(cached(server, cache), [BASE, BASE])
        assert len(server.chat_requests) == 1  # the hit never reached the server
    assert not first.cached
    assert first.prompt_tokens > 0
    assert first.completion_tokens > 0
    assert second.cached
    assert second.text == first.text
    assert (second.prompt_tokens, second.completion_tokens, second.retries) == (0, 0, 0)
    assert second.latency >= 0
    assert cache.stats.hits == 1
    assert cache.stats.misses == 1


def test_a_hit_keeps_the_finish_reason_and_an_old_cache_gains_its_column(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with sqlite3.connect(path) as old:  # the schema before finish_reason was stored
        old.execute(
            "CREATE TABLE responses (key TEXT PRIMARY KEY, endpoint TEXT NOT NULL, model TEXT "
            "NOT NULL, text TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens "
            "INTEGER NOT NULL, created REAL NOT NULL)"
        )
        old.execute("INSERT INTO responses VALUES ('k', 'e', 'm', 'old answer', 1, 2, 0.0)")
    old.close()
    cache = ResponseCache(path)
    assert cache.get("k") == CachedAnswer("old answer", 1, 2, "stop")
    with OpenAIServer(lambda body: ("cut sho", "length"), api_key=KEY) as server:
        first, second = run_all(cached(server, cache), [BASE, BASE])
    assert (first.finish_reason, first.cached) == ("length", False)
    assert (second.finish_reason, second.cached) == ("length", True)


def test_every_key_field_makes_a_distinct_entry(tmp_path: Path) -> None:
    variants = [
        BASE,
        dataclasses.replace(BASE, sample=1),
        dataclasses.replace(BASE, temperature=0.8),
        dataclasses.replace(BASE, model="model-b"),
        dataclasses.replace(BASE, max_tokens=64),
        dataclasses.replace(BASE, seed=7),
        dataclasses.replace(BASE, messages=(*BASE.messages[:1], Message("user", "Other task."))),
        dataclasses.replace(BASE, messages=(Message("user", "You help."), BASE.messages[1])),
    ]
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with OpenAIServer() as server:
        results = run_all(cached(server, cache), variants)
        assert len(server.chat_requests) == len(variants)
        again = run_all(cached(server, cache), variants)
        assert len(server.chat_requests) == len(variants)
    assert not any(c.cached for c in results)
    assert all(c.cached for c in again)
    assert [c.text for c in again] == [c.text for c in results]
    assert len(cache) == len(variants)
    assert cache.stats.hits == len(variants)
    assert cache.stats.misses == len(variants)


def test_distinct_sample_index_gets_its_own_answer(tmp_path: Path) -> None:
    counter = iter(range(100))

    def responder(body: dict[str, object]) -> str:
        return f"answer {next(counter)}"

    cache = ResponseCache(tmp_path / "cache.sqlite")
    samples = [dataclasses.replace(BASE, sample=i) for i in range(3)]
    with OpenAIServer(responder) as server:
        first = run_all(cached(server, cache), samples)
        second = run_all(cached(server, cache), samples)
    assert [c.text for c in first] == ["answer 0", "answer 1", "answer 2"]
    assert [c.text for c in second] == ["answer 0", "answer 1", "answer 2"]
    assert all(c.cached for c in second)


def test_the_endpoint_is_part_of_the_key(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with OpenAIServer() as one, OpenAIServer() as two:
        run_all(cached(one, cache), [BASE])
        (answer,) = run_all(cached(two, cache), [BASE])
        assert len(two.chat_requests) == 1
    assert not answer.cached


def test_int_and_float_temperature_share_a_key() -> None:
    assert cache_key("e", dataclasses.replace(BASE, temperature=1)) == cache_key(
        "e", dataclasses.replace(BASE, temperature=1.0)
    )


def test_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "cache.sqlite"  # parent folders are created
    with OpenAIServer() as server:
        (first,) = run_all(cached(server, ResponseCache(path)), [BASE])
        reopened = ResponseCache(path)
        (second,) = run_all(cached(server, reopened), [BASE])
        assert len(server.chat_requests) == 1
    assert second.cached
    assert second.text == first.text


def test_failures_are_not_cached(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with OpenAIServer() as server:
        server.inject(Fault(400))
        with pytest.raises(ProviderError):
            run_all(cached(server, cache), [BASE])
        (answer,) = run_all(cached(server, cache), [BASE])
    assert not answer.cached
    assert len(cache) == 1


def test_api_key_is_never_stored(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with OpenAIServer(api_key=KEY) as server:
        run_all(cached(server, cache), [BASE, dataclasses.replace(BASE, sample=1)])
        assert len(server.chat_requests) == 2
    # Look at every byte on disk: the database, its WAL and shared-memory files.
    files = list(tmp_path.iterdir())
    assert any(f.name.endswith("-wal") for f in files)
    stored = b"".join(f.read_bytes() for f in files)
    assert b"Write a function" not in stored  # messages are hashed, not stored...
    assert KEY.encode() not in stored  # ...and the key is nowhere
    assert b"[model-a t=0.7]" in stored  # while the answers are there
    cache.close()
    stored = (tmp_path / "cache.sqlite").read_bytes()  # checkpointed into the main file
    assert KEY.encode() not in stored
    assert b"[model-a t=0.7]" in stored


def test_uses_wal_journaling(tmp_path: Path) -> None:
    ResponseCache(tmp_path / "cache.sqlite")
    with sqlite3.connect(tmp_path / "cache.sqlite") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_threads_share_one_cache(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(50):
                key = f"{worker}-{i}"
                cache.put(key, "e", "m", CachedAnswer(key, i, i))
                assert cache.get(key) == CachedAnswer(key, i, i)
        except BaseException as error:  # surfaced by the assert below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache) == 200
    assert cache.stats.hits == 200


def _process_worker(path: str, worker: int) -> None:
    cache = ResponseCache(path)
    for i in range(40):
        key = f"{worker}-{i}"
        cache.put(key, "e", "m", CachedAnswer(f"text {key}", i, 2 * i))
        found = cache.get(f"{1 - worker}-{i}")  # the other process's entry, if written yet
        assert found is None or found.text == f"text {1 - worker}-{i}"
    cache.close()


def test_processes_share_one_cache(tmp_path: Path) -> None:
    path = str(tmp_path / "cache.sqlite")
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_process_worker, args=(path, w)) for w in (0, 1)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0, 0]
    cache = ResponseCache(path)
    assert len(cache) == 80
    assert cache.get("1-39") == CachedAnswer("text 1-39", 39, 78)


def test_wrapper_keeps_name_and_endpoint(tmp_path: Path) -> None:
    with OpenAIServer() as server:
        provider = cached(server, ResponseCache(tmp_path / "c.sqlite"))
        assert provider.name == "srv"
        assert provider.endpoint == server.base_url
        assert KEY not in repr(provider)
