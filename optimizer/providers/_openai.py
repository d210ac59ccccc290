"""One async client for any OpenAI-compatible chat endpoint, on httpx (no vendor SDK).

Retries follow the official OpenAI Python client (``openai/_base_client.py``): connection
errors, timeouts, 408, 409, 429 and 5xx are retried; ``x-should-retry: true|false`` overrides
the status; the wait is the server's ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP
date) when it lies in (0, 60] s, else ``min(initial * 2**retries, max)`` times a jitter factor
in (0.75, 1]. A 200 whose body is not a chat completion is not retried (the SDK does not
retry parse errors either).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from optimizer.providers._base import ChatRequest, Completion, Provider, ProviderError

__all__ = [
    "INITIAL_RETRY_DELAY",
    "MAX_RETRY_AFTER",
    "MAX_RETRY_DELAY",
    "OpenAICompatProvider",
    "backoff_delay",
    "parse_retry_after",
    "retry_delay",
    "should_retry_status",
]

log = logging.getLogger(__name__)

INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 60.0
_RETRY_STATUSES = frozenset({408, 409, 429})
_MAX_MESSAGE = 300


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Returns the server's requested wait in seconds, or None if it gave none.

    ``retry-after-ms`` wins over ``retry-after``; the latter may be seconds (floats allowed)
    or an HTTP date. A date in the past gives a negative number.
    """
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            continue
        if math.isfinite(seconds):
            return seconds / divisor
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        when = email.utils.mktime_tz(parsed)
    except (TypeError, ValueError, OverflowError):
        return None
    return float(when - (time.time() if now is None else now))


def backoff_delay(
    retries_taken: int,
    initial: float = INITIAL_RETRY_DELAY,
    maximum: float = MAX_RETRY_DELAY,
) -> float:
    """Returns the exponential backoff with jitter before retry number ``retries_taken + 1``."""
    base = min(initial * 2.0 ** min(retries_taken, 1000), maximum)
    return max(base * (1.0 - 0.25 * random.random()), 0.0)


def retry_delay(
    retries_taken: int,
    headers: Mapping[str, str] | None = None,
    initial: float = INITIAL_RETRY_DELAY,
    maximum: float = MAX_RETRY_DELAY,
) -> float:
    """Returns the wait before the next attempt: the server's, if reasonable, else backoff."""
    requested = parse_retry_after(headers) if headers is not None else None
    if requested is not None and 0 < requested <= MAX_RETRY_AFTER:
        return requested
    return backoff_delay(retries_taken, initial, maximum)


def should_retry_status(status: int, headers: Mapping[str, str]) -> bool:
    """Tells whether an error status is worth retrying (``x-should-retry`` overrides)."""
    explicit = headers.get("x-should-retry")
    if explicit == "true":
        return True
    if explicit == "false":
        return False
    return status in _RETRY_STATUSES or status >= 500


def _server_message(response: httpx.Response) -> str:
    """Extracts the error message an OpenAI-compatible server put in its body."""
    text = response.text
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    message: Any = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message")
        elif isinstance(error, str):
            message = error
        if message is None:
            message = body.get("message") or body.get("detail")
    if message is None:
        message = text.strip() or response.reason_phrase or "no message"
    shown = str(message)
    return shown if len(shown) <= _MAX_MESSAGE else shown[:_MAX_MESSAGE] + "..."


def _parse_completion(data: Any) -> tuple[str, int, int, str]:
    """Returns (text, prompt_tokens, completion_tokens, finish_reason) from a completion body.

    Raises:
        ValueError: The body is not a chat completion.
    """
    if not isinstance(data, dict):
        raise ValueError("body is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise ValueError("choice has no message")
    content = message.get("content")
    if content is None:  # e.g. a refusal or only reasoning output: an empty answer
        content = ""
    if not isinstance(content, str):
        raise ValueError("message content is not a string")
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    prompt_tokens = usage.get("prompt_tokens", 0)
    completion_tokens = usage.get("completion_tokens", 0)
    if not isinstance(prompt_tokens, int) or not isinstance(completion_tokens, int):
        raise ValueError("usage token counts are not integers")
    reason = choices[0].get("finish_reason")
    return content, prompt_tokens, completion_tokens, reason if isinstance(reason, str) else "stop"


def _default_max_tokens_field(base_url: str) -> str:
    # The completion-length field: ``max_tokens`` is the one every OpenAI-compatible server
    # understands (vLLM, llama.cpp server, Ollama, Together, Groq, and Cerebras, which also
    # takes ``max_completion_tokens``). OpenAI itself deprecated ``max_tokens`` and rejects it
    # for its reasoning models, while all its chat models accept ``max_completion_tokens``; so
    # api.openai.com gets that one. We never send both: OpenAI's reasoning models reject a
    # request that carries ``max_tokens`` at all, and older self-hosted servers ignore
    # ``max_completion_tokens``, which would leave the length unbounded.
    host = urlsplit(base_url).hostname or ""
    return "max_completion_tokens" if host == "api.openai.com" else "max_tokens"


def _without_userinfo(url: str) -> str:
    """Drops ``user:password@`` from a URL, so a credential in it is never shown or stored."""
    parts = urlsplit(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


class OpenAICompatProvider(Provider):
    """Chat completions from one OpenAI-compatible endpoint.

    The API key is sent only in the ``Authorization`` header; it is kept out of ``repr``,
    exception messages and logs.

    Args:
        name: Short name used in messages (a preset name or the base URL).
        base_url: The endpoint's ``/v1`` base URL, e.g. ``https://api.cerebras.ai/v1``.
        api_key: Bearer token, or None for endpoints without auth.
        max_retries: Retries after the first attempt on transient failures.
        timeout: Seconds per HTTP attempt.
        initial_retry_delay: First backoff delay in seconds (doubles per retry).
        max_retry_delay: Cap on the backoff delay in seconds.
        max_tokens_field: Body field for the completion length; by default
            ``max_completion_tokens`` for api.openai.com and ``max_tokens`` elsewhere.
    """

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        api_key: str | None = None,
        max_retries: int = 2,
        timeout: float = 120.0,
        initial_retry_delay: float = INITIAL_RETRY_DELAY,
        max_retry_delay: float = MAX_RETRY_DELAY,
        max_tokens_field: str | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.name = _without_userinfo(name)
        self._base_url = base_url.rstrip("/")
        self.endpoint = _without_userinfo(self._base_url)
        self.max_retries = max_retries
        self.timeout = timeout
        self.initial_retry_delay = initial_retry_delay
        self.max_retry_delay = max_retry_delay
        self.max_tokens_field = max_tokens_field or _default_max_tokens_field(self.endpoint)
        self._headers = {"accept": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        # httpx pools connections per event loop; a new loop (a new asyncio.run) gets a
        # new client, so the provider may be reused across runs.
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"OpenAICompatProvider(name={self.name!r}, endpoint={self.endpoint!r})"

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop or self._client.is_closed:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout))
            self._client_loop = loop
        return self._client

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """Returns the JSON body sent for ``request``."""
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [m.to_dict() for m in request.messages],
            "temperature": request.temperature,
            self.max_tokens_field: request.max_tokens,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        return body

    async def complete(self, request: ChatRequest) -> Completion:
        """Sends one chat completion, retrying transient failures.

        Raises:
            ProviderError: A client error, retries exhausted, or a malformed answer.
        """
        start = time.perf_counter()
        response, retries = await self._send(
            "POST", "/chat/completions", request.model, json_body=self.body(request)
        )
        try:
            text, prompt_tokens, completion_tokens, reason = _parse_completion(response.json())
        except ValueError as error:  # JSONDecodeError is a ValueError
            raise ProviderError(
                f"{self.name}: model {request.model!r}: malformed chat completion "
                f"(HTTP {response.status_code}): {error}",
                cause="malformed answer",
            ) from None
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency=time.perf_counter() - start,
            retries=retries,
            finish_reason=reason,
        )

    async def list_models(self) -> list[str]:
        """Returns the model ids from ``GET {base_url}/models``.

        Raises:
            ProviderError: The call failed or the answer is not a model list.
        """
        response, _ = await self._send("GET", "/models", None)
        try:
            data = response.json()["data"]
            return [str(item["id"]) for item in data]
        except (ValueError, KeyError, TypeError):
            raise ProviderError(f"{self.name}: malformed model list from /models") from None

    async def aclose(self) -> None:
        """Closes the connection pool."""
        client, self._client = self._client, None
        if client is not None and not client.is_closed:
            await client.aclose()

    async def _send(
        self, method: str, path: str, model: str | None, json_body: Any = None
    ) -> tuple[httpx.Response, int]:
        """Sends with retries; returns the successful response and the retries it took."""
        url = self._base_url + path
        what = f"{self.name}: model {model!r}" if model is not None else f"{self.name}: {path}"
        retries = 0
        # ASCII JSON: text with lone surrogates (a model can send them) still encodes.
        body = None if json_body is None else json.dumps(json_body).encode("ascii")
        sent_headers = self._headers
        if body is not None:
            sent_headers = {**self._headers, "Content-Type": "application/json"}
        while True:
            remaining = self.max_retries - retries
            try:
                response = await self._http().request(
                    method, url, content=body, headers=sent_headers
                )
            except httpx.TimeoutException as error:
                failure = f"timed out after {self.timeout:g} s ({type(error).__name__})"
                cause, headers = "timeout", None
            except httpx.TransportError as error:
                failure = f"connection error ({type(error).__name__}: {error})"
                cause, headers = f"connection error ({type(error).__name__})", None
            else:
                if response.is_success:
                    return response, retries
                status = response.status_code
                failure = f"HTTP {status}: {_server_message(response)}"
                cause = f"HTTP {status}"
                if not should_retry_status(status, response.headers):
                    raise ProviderError(f"{what}: {failure}", cause=cause)
                headers = response.headers
            if remaining <= 0:
                suffix = f" (after {retries} retries)" if retries else ""
                raise ProviderError(f"{what}: {failure}{suffix}", cause=cause, transient=True)
            delay = retry_delay(retries, headers, self.initial_retry_delay, self.max_retry_delay)
            log.info("%s: %s; retrying in %.2f s (%d left)", what, failure, delay, remaining)
            await asyncio.sleep(delay)
            retries += 1
