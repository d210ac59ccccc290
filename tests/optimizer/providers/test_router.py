"""Router: which provider serves each model id, and how providers are wrapped."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from openai_server import OpenAIServer

from optimizer._errors import UserError
from optimizer.providers import (
    DEFAULT_LOCAL_MODEL,
    ChatRequest,
    Completion,
    Message,
    Provider,
    ResponseCache,
    Router,
    RoutingError,
    parse_model_map,
)

KEY = "sk-planted-router-key-00aa11bb22cc33dd"


class FakeLocal(Provider):
    """Stands in for the embedded model."""

    def __init__(self, model: str) -> None:
        self.name = "local"
        self.endpoint = f"local:{model}"
        self.model = model

    async def complete(self, request: ChatRequest) -> Completion:
        return Completion(f"local {self.model} answers", 1, 1, 0.0)


class FakeFactory:
    def __init__(self) -> None:
        self.built: list[str] = []

    def __call__(self, model: str) -> Provider:
        self.built.append(model)
        return FakeLocal(model)


def ask(router: Router, model: str, times: int = 1) -> list[Completion]:
    async def go() -> list[Completion]:
        provider, name = router.resolve(model)
        request = ChatRequest(name, (Message("user", "hi"),), 0.0, 8)
        try:
            return [await provider.complete(request) for _ in range(times)]
        finally:
            await router.aclose()

    return asyncio.run(go())


def test_base_url_from_env_serves_every_model_with_the_env_key() -> None:
    with OpenAIServer(api_key=KEY) as server:
        router = Router(env={"MOA_BASE_URL": server.base_url, "MOA_API_KEY": KEY})
        assert router.base_url == server.base_url
        for model, sent in [
            ("llama3.1-8b", "llama3.1-8b"),
            ("cerebras/llama3.1-8b", "llama3.1-8b"),  # a known prefix is stripped
            ("local/qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b"),
            ("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B"),  # not a provider: kept
        ]:
            provider, name = router.resolve(model)
            assert (provider.endpoint, name) == (server.base_url, sent)
        (answer,) = ask(router, "cerebras/llama3.1-8b")
        assert answer.text.startswith("[llama3.1-8b")
        assert server.chat_requests[0].body["model"] == "llama3.1-8b"


def test_base_url_argument_wins_over_env() -> None:
    router = Router(base_url="http://127.0.0.1:9/v1", env={"MOA_BASE_URL": "http://other/v1"})
    provider, _ = router.resolve("m")
    assert provider.endpoint == "http://127.0.0.1:9/v1"


def test_provider_prefix_picks_the_preset() -> None:
    env = {"OPENAI_API_KEY": KEY, "GROQ_API_KEY": KEY, "TOGETHER_API_KEY": KEY}
    router = Router(env=env, local_factory=FakeFactory())
    for model, endpoint, sent in [
        ("openai/gpt-4o-mini", "https://api.openai.com/v1", "gpt-4o-mini"),
        ("groq/llama-3.1-8b-instant", "https://api.groq.com/openai/v1", "llama-3.1-8b-instant"),
        ("together/meta-llama/Llama-3-8b", "https://api.together.xyz/v1", "meta-llama/Llama-3-8b"),
    ]:
        provider, name = router.resolve(model)
        assert (provider.name, provider.endpoint, name) == (model.split("/")[0], endpoint, sent)
        assert KEY not in repr(provider)
    first, _ = router.resolve("openai/a")
    second, _ = router.resolve("openai/b")
    assert first is second  # one provider (and connection pool, and limits) per endpoint


def test_unprefixed_model_goes_to_cerebras_when_its_key_is_set() -> None:
    factory = FakeFactory()
    router = Router(env={"CEREBRAS_API_KEY": KEY}, local_factory=factory)
    provider, name = router.resolve("llama3.1-8b")
    assert (provider.name, provider.endpoint, name) == (
        "cerebras",
        "https://api.cerebras.ai/v1",
        "llama3.1-8b",
    )
    assert factory.built == []
    assert router.notices == []


@pytest.mark.parametrize(
    ("model", "env_var"),
    [("cerebras/llama3.1-8b", "CEREBRAS_API_KEY"), ("groq/x", "GROQ_API_KEY")],
)
def test_missing_key_names_the_env_var(model: str, env_var: str) -> None:
    router = Router(env={}, local_factory=FakeFactory())
    with pytest.raises(RoutingError) as raised:
        router.check([model])
    assert env_var in str(raised.value)
    assert "\n" not in str(raised.value)
    assert isinstance(raised.value, UserError)


def test_no_key_and_no_base_url_serves_everything_locally_with_one_notice() -> None:
    factory = FakeFactory()
    router = Router(env={}, local_factory=factory)
    for model in ("llama3.1-8b", "gpt-oss-120b", "qwen-3-32b"):
        _, name = router.resolve(model)
        assert name == DEFAULT_LOCAL_MODEL
    assert factory.built == [DEFAULT_LOCAL_MODEL]  # built once, then reused
    assert len(router.notices) == 1
    assert f"local/{DEFAULT_LOCAL_MODEL}" in router.notices[0]
    assert "--model-map" in router.notices[0]
    (answer,) = ask(router, "llama3.1-8b")
    assert answer.text == f"local {DEFAULT_LOCAL_MODEL} answers"


def test_model_map_renames_before_routing() -> None:
    factory = FakeFactory()
    router = Router(
        env={"CEREBRAS_API_KEY": KEY},
        model_map={"llama3.1-8b": "local/qwen2.5-coder-1.5b"},
        local_factory=factory,
    )
    provider, name = router.resolve("llama3.1-8b")
    assert (provider.name, name) == ("local", "qwen2.5-coder-1.5b")
    assert factory.built == ["qwen2.5-coder-1.5b"]
    other, name = router.resolve("qwen-3-32b")  # unmapped: still Cerebras
    assert (other.name, name) == ("cerebras", "qwen-3-32b")
    assert router.notices == []


def test_unknown_local_model_is_refused() -> None:
    router = Router(env={}, local_factory=FakeFactory())
    with pytest.raises(RoutingError, match=r"local/qwen2\.5-coder-0\.5b"):
        router.resolve("local/gpt-9")


def test_parse_model_map() -> None:
    assert parse_model_map(["a=local/qwen2.5-coder-1.5b", " b = groq/x "]) == {
        "a": "local/qwen2.5-coder-1.5b",
        "b": "groq/x",
    }
    for bad in ("nothing", "=x", "a="):
        with pytest.raises(RoutingError, match="NAME=provider/model"):
            parse_model_map([bad])


def test_cache_wraps_routed_providers(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with OpenAIServer() as server:
        router = Router(base_url=server.base_url, cache=cache, env={})
        first, second = ask(router, "model-a", times=2)
        assert len(server.chat_requests) == 1
    assert (first.cached, second.cached) == (False, True)
    assert cache.stats.hits == 1


def test_base_url_limits_are_applied() -> None:
    async def burst(router: Router) -> None:
        provider, name = router.resolve("model-a")
        request = ChatRequest(name, (Message("user", "hi"),), 0.0, 8)
        try:
            await asyncio.gather(*(provider.complete(request) for _ in range(4)))
        finally:
            await router.aclose()

    with OpenAIServer(latency=0.05) as server:
        asyncio.run(burst(Router(base_url=server.base_url, limits={"max_concurrency": 1}, env={})))
        requests = server.chat_requests
    assert len(requests) == 4
    ordered = sorted(requests, key=lambda r: r.started)
    assert all(a.finished <= b.started for a, b in itertools.pairwise(ordered))


def test_list_models_of_the_base_url() -> None:
    async def models(router: Router) -> list[str]:
        try:
            return await router.list_models()
        finally:
            await router.aclose()

    with OpenAIServer(models=("m-1", "m-2")) as server:
        assert asyncio.run(models(Router(base_url=server.base_url, env={}))) == ["m-1", "m-2"]
    assert asyncio.run(models(Router(env={}))) == [
        "local/qwen2.5-coder-0.5b",
        "local/qwen2.5-coder-1.5b",
    ]
