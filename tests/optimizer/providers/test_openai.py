"""OpenAICompatProvider against a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import socket
import time
from typing import Any

import pytest
from openai_server import Fault, OpenAIServer

from optimizer.providers import ChatRequest, Message, OpenAICompatProvider, ProviderError
from optimizer.providers._openai import (
    parse_retry_after,
    retry_delay,
    should_retry_status,
)

KEY = "sk-planted-openai-key-5f1e2d3c4b5a69788796a5b4"

REQUEST = ChatRequest(
    model="model-a",
    messages=(Message("system", "Be brief."), Message("user", "Say hi.")),
    temperature=0.7,
    max_tokens=64,
)


def provider(server: OpenAIServer, **kwargs: Any) -> OpenAICompatProvider:
    """A provider with fast backoff, so retry tests stay quick."""
    options: dict[str, Any] = {
        "name": "testsrv",
        "base_url": server.base_url,
        "api_key": KEY,
        "max_retries": 2,
        "timeout": 5.0,
        "initial_retry_delay": 0.01,
        "max_retry_delay": 0.05,
    }
    options.update(kwargs)
    return OpenAICompatProvider(**options)


async def call(p: OpenAICompatProvider, request: ChatRequest = REQUEST) -> Any:
    try:
        return await p.complete(request)
    finally:
        await p.aclose()


def complete(p: OpenAICompatProvider, request: ChatRequest = REQUEST) -> Any:
    return asyncio.run(call(p, request))


def failure(p: OpenAICompatProvider, request: ChatRequest = REQUEST) -> str:
    with pytest.raises(ProviderError) as raised:
        complete(p, request)
    return str(raised.value)


def test_sends_the_chat_request_and_returns_text_and_usage() -> None:
    with OpenAIServer(api_key=KEY) as server:
        completion = complete(provider(server), REQUEST)
        (sent,) = server.chat_requests
    assert sent.path == "/v1/chat/completions"
    headers = {name.lower(): value for name, value in sent.headers.items()}
    assert headers["authorization"] == f"Bearer {KEY}"
    assert sent.body == {
        "model": "model-a",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hi."},
        ],
        "temperature": 0.7,
        "max_tokens": 64,
    }
    assert completion.text == "[model-a t=0.7] Be brief."
    assert completion.prompt_tokens == 4  # the server counts words
    assert completion.completion_tokens == 4
    assert completion.retries == 0
    assert not completion.cached
    assert completion.latency > 0


def test_seed_is_sent_only_when_set() -> None:
    with OpenAIServer() as server:
        complete(provider(server), ChatRequest("model-a", REQUEST.messages, 0.0, 8, seed=42))
        complete(provider(server), ChatRequest("model-a", REQUEST.messages, 0.0, 8))
        seeded, unseeded = server.chat_requests
    assert seeded.body["seed"] == 42
    assert "seed" not in unseeded.body


def test_openai_gets_max_completion_tokens_and_other_servers_max_tokens() -> None:
    openai = OpenAICompatProvider(name="openai", base_url="https://api.openai.com/v1")
    cerebras = OpenAICompatProvider(name="cerebras", base_url="https://api.cerebras.ai/v1")
    assert openai.body(REQUEST)["max_completion_tokens"] == 64
    assert "max_tokens" not in openai.body(REQUEST)
    assert cerebras.body(REQUEST)["max_tokens"] == 64
    assert "max_completion_tokens" not in cerebras.body(REQUEST)
    forced = OpenAICompatProvider(
        name="x", base_url="http://h/v1", max_tokens_field="max_completion_tokens"
    )
    assert forced.body(REQUEST)["max_completion_tokens"] == 64


def test_429_with_retry_after_is_retried_after_the_requested_wait() -> None:
    with OpenAIServer() as server:
        server.inject(Fault(429, headers={"retry-after": "0.3"}))
        # Backoff alone would wait ~0 s, so a gap of >= 0.3 s shows retry-after was used.
        completion = complete(provider(server, initial_retry_delay=0.0))
        first, second = server.chat_requests
    assert completion.retries == 1
    assert completion.text.startswith("[model-a")
    assert second.started - first.started >= 0.3
    assert completion.latency >= 0.3


def test_retry_after_ms_wins_over_retry_after() -> None:
    with OpenAIServer() as server:
        server.inject(Fault(429, headers={"retry-after-ms": "250", "retry-after": "30"}))
        completion = complete(provider(server, initial_retry_delay=0.0))
        first, second = server.chat_requests
    assert completion.retries == 1
    assert second.started - first.started >= 0.25


def test_500_then_success_is_retried() -> None:
    with OpenAIServer() as server:
        server.inject(Fault(500), Fault(503))
        completion = complete(provider(server))
        assert len(server.chat_requests) == 3
    assert completion.retries == 2


@pytest.mark.parametrize("status", [408, 409, 502])
def test_other_transient_statuses_are_retried(status: int) -> None:
    with OpenAIServer() as server:
        server.inject(Fault(status))
        assert complete(provider(server)).retries == 1


def test_timeout_then_success_is_retried() -> None:
    with OpenAIServer() as server:
        server.inject(Fault(kind="delay", seconds=1.5))
        completion = complete(provider(server, timeout=0.3))
    assert completion.retries == 1
    assert completion.text.startswith("[model-a")


def test_timeout_every_time_fails_naming_the_timeout() -> None:
    with OpenAIServer() as server:
        server.inject(Fault(kind="delay", seconds=1.0), Fault(kind="delay", seconds=1.0))
        message = failure(provider(server, timeout=0.2, max_retries=1))
    assert "testsrv" in message
    assert "model-a" in message
    assert "timed out" in message
    assert "after 1 retries" in message


def test_dropped_connection_is_retried() -> None:
    with OpenAIServer() as server:
        server.inject(Fault(kind="drop"))
        assert complete(provider(server)).retries == 1


def test_connection_refused_fails_after_retries() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    p = OpenAICompatProvider(
        name="nowhere",
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key=KEY,
        max_retries=1,
        initial_retry_delay=0.01,
    )
    message = failure(p)
    assert "nowhere" in message
    assert "connection error" in message
    assert "after 1 retries" in message
    assert KEY not in message


def test_malformed_body_fails_without_retrying() -> None:
    with OpenAIServer() as server:
        server.inject(Fault(kind="malformed"))
        message = failure(provider(server))
        assert len(server.chat_requests) == 1
    assert "testsrv" in message
    assert "model-a" in message
    assert "malformed" in message


def test_401_fails_at_once_with_the_servers_message() -> None:
    wrong_key = "sk-wrong-key-0000111122223333"
    with OpenAIServer(api_key=KEY) as server:
        message = failure(provider(server, api_key=wrong_key))
        assert len(server.chat_requests) == 1
    assert "HTTP 401" in message
    assert "invalid api key" in message
    assert wrong_key not in message


def test_400_names_provider_model_status_and_message() -> None:
    with OpenAIServer() as server:
        server.inject(Fault(400, body='{"error": {"message": "temperature must be at most 1.5"}}'))
        message = failure(provider(server))
        assert len(server.chat_requests) == 1
    assert message == "testsrv: model 'model-a': HTTP 400: temperature must be at most 1.5"


def test_non_json_error_body_is_shown_as_text() -> None:
    with OpenAIServer() as server:
        server.inject(Fault(404, body="no such route"))
        assert failure(provider(server)).endswith("HTTP 404: no such route")


def test_retries_exhausted_reports_the_last_failure() -> None:
    with OpenAIServer() as server:
        server.inject(*[Fault(500, body='{"error": {"message": "overloaded"}}')] * 3)
        message = failure(provider(server, max_retries=2))
        assert len(server.chat_requests) == 3
    assert message == "testsrv: model 'model-a': HTTP 500: overloaded (after 2 retries)"


def test_max_retries_zero_makes_one_attempt() -> None:
    with OpenAIServer() as server:
        server.inject(Fault(500))
        failure(provider(server, max_retries=0))
        assert len(server.chat_requests) == 1


def test_x_should_retry_header_overrides_the_status() -> None:
    with OpenAIServer() as server:
        server.inject(Fault(500, headers={"x-should-retry": "false"}))
        failure(provider(server))
        assert len(server.chat_requests) == 1
    with OpenAIServer() as server:
        server.inject(Fault(400, headers={"x-should-retry": "true"}))
        assert complete(provider(server)).retries == 1


def test_key_never_appears_in_repr_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with OpenAIServer() as server:
        server.inject(Fault(500), Fault(400))
        p = provider(server)
        message = failure(p)
    assert KEY not in repr(p)
    assert KEY not in p.endpoint
    assert KEY not in message
    assert "HTTP 500" in caplog.text  # the retry was logged...
    assert KEY not in caplog.text  # ...without the key


def test_credentials_in_the_base_url_are_not_in_endpoint_or_name() -> None:
    p = OpenAICompatProvider(name="http://u:secret@h:1/v1", base_url="http://u:secret@h:1/v1/")
    assert p.endpoint == "http://h:1/v1"
    assert p.name == "http://h:1/v1"
    assert "secret" not in repr(p)


def test_list_models() -> None:
    with OpenAIServer(models=("m-1", "m-2", "m-3"), api_key=KEY) as server:
        p = provider(server)

        async def models() -> list[str]:
            try:
                return await p.list_models()
            finally:
                await p.aclose()

        assert asyncio.run(models()) == ["m-1", "m-2", "m-3"]
        assert server.requests[-1].path == "/v1/models"


def test_provider_can_be_reused_across_event_loops() -> None:
    with OpenAIServer() as server:
        p = provider(server)
        asyncio.run(p.complete(REQUEST))
        completion = asyncio.run(call(p))  # a second asyncio.run: a fresh connection pool
    assert completion.text.startswith("[model-a")


# The delay rules themselves, as the OpenAI client computes them.


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "0.25"}) == 0.25
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    now = time.time()
    date = email.utils.formatdate(now + 10, usegmt=True)
    seconds = parse_retry_after({"retry-after": date}, now=now)
    assert seconds is not None
    assert 9 <= seconds <= 10


def test_retry_delay_honours_reasonable_retry_after_else_backs_off() -> None:
    assert retry_delay(0, {"retry-after": "7"}) == 7.0
    assert retry_delay(3, {"retry-after-ms": "60000"}) == 60.0
    # Too long (> 60 s), zero or in the past: exponential backoff with jitter instead.
    for headers in ({"retry-after": "61"}, {"retry-after": "0"}, {"retry-after": "-3"}):
        assert 0.375 <= retry_delay(0, headers) <= 0.5
    for retries, ceiling in ((0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)):
        delays = [retry_delay(retries) for _ in range(50)]
        assert all(0.75 * ceiling <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_retryable_statuses() -> None:
    retried = [
        s for s in (400, 401, 403, 404, 408, 409, 422, 429, 500, 503) if should_retry_status(s, {})
    ]
    assert retried == [408, 409, 429, 500, 503]


def test_an_outage_shorter_than_the_backoff_is_waited_out() -> None:
    with OpenAIServer() as server:
        server.outage(0.6)
        # backoff 0.2, 0.4, 0.8 s: the third retry comes after the outage
        p = provider(server, max_retries=4, initial_retry_delay=0.2, max_retry_delay=1.0)
        completion = complete(p)
        requests = server.chat_requests
        ((_, end),) = server.outages
    assert completion.text.startswith("[model-a")
    assert [r.fault for r in requests] == ["outage"] * (len(requests) - 1) + [""]
    assert completion.retries == len(requests) - 1 >= 2
    assert requests[-1].started >= end


def test_an_outage_longer_than_the_backoff_fails_with_a_countable_transient_cause() -> None:
    with OpenAIServer() as server:
        server.outage(60.0)
        with pytest.raises(ProviderError) as raised:
            complete(provider(server))
        assert [r.fault for r in server.chat_requests] == ["outage"] * 3
    assert str(raised.value).endswith("HTTP 503: service unavailable (outage) (after 2 retries)")
    assert (raised.value.cause, raised.value.transient) == ("HTTP 503", True)


def test_a_connection_cut_mid_answer_is_retried_then_fails_as_transient() -> None:
    with OpenAIServer() as server:
        server.inject(Fault(kind="cut"))
        assert complete(provider(server)).retries == 1
        server.inject(Fault(kind="cut"))
        with pytest.raises(ProviderError) as raised:
            complete(provider(server, max_retries=0))
        assert [r.fault for r in server.chat_requests] == ["cut", "", "cut"]
    assert raised.value.cause == "connection error (RemoteProtocolError)"
    assert raised.value.transient


def test_a_client_error_is_not_transient() -> None:
    with OpenAIServer() as server:
        server.inject(Fault(400))
        with pytest.raises(ProviderError) as raised:
            complete(provider(server))
    assert (raised.value.cause, raised.value.transient) == ("HTTP 400", False)
