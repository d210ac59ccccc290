"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks.

It answers ``POST /v1/chat/completions`` and ``GET /v1/models`` from a thread pool, so calls
really overlap. Answers come from a ``responder`` function; faults can be queued to be served
to the next requests, or come in bursts (:class:`Bursts`: an outage of all 503s, 429 with
``Retry-After`` on every n-th call, connections cut mid-response); every request is recorded
with its start and end times and the fault it got.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Bursts", "Fault", "OpenAIServer", "RecordedRequest", "default_responder"]

Responder = Callable[[dict[str, Any]], "str | tuple[str, str]"]
"""Builds the answer text, or ``(text, finish_reason)`` (e.g. ``length``), from the body."""


def default_responder(body: dict[str, Any]) -> str:
    """Answers with the model, the temperature and the system prompt's first 40 chars."""
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    return f"[{body['model']} t={body.get('temperature')}] {system[:40]}"


class _QuietServer(ThreadingHTTPServer):
    """Ignores clients that hang up early (a client timeout leaves a delayed answer unread)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass(frozen=True)
class Fault:
    """A fault served to one request instead of a normal answer.

    Attributes:
        status: HTTP status to answer with (ignored for ``kind`` other than ``status``).
        kind: ``status`` (an error status with ``body``), ``delay`` (sleep ``seconds`` then answer
            normally), ``malformed`` (200 with a body that is not a completion), ``drop`` (close
            the connection without answering), ``cut`` (send the headers and half the answer,
            then close the connection).
        headers: Extra response headers (``retry-after``...).
        body: Response body for ``status``.
        seconds: Sleep for ``delay``.
    """

    status: int = 500
    kind: str = "status"
    headers: dict[str, str] = field(default_factory=dict)
    body: str = '{"error": {"message": "injected failure"}}'
    seconds: float = 0.0


@dataclass(frozen=True)
class Bursts:
    """Faults that come by themselves, as from a struggling endpoint.

    Calls are the chat requests in the order they arrive, counted from 1.

    Attributes:
        outage_after: Calls answered before the outage starts (None: no outage).
        outage_seconds: How long every chat request then gets ``outage_status``.
        outage_status: The status served during the outage.
        throttle_every: Every n-th call gets 429 with ``Retry-After: retry_after`` (0: never).
        retry_after: Seconds the 429s ask the client to wait.
        cut_every: Every n-th call gets half an answer and a closed connection (0: never).
    """

    outage_after: int | None = None
    outage_seconds: float = 30.0
    outage_status: int = 503
    throttle_every: int = 0
    retry_after: float = 1.0
    cut_every: int = 0


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received.

    Attributes:
        fault: The fault it got: ``""`` (answered), a :class:`Fault` kind, ``outage``,
            ``throttle`` or ``cut``.
    """

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    started: float
    finished: float
    fault: str = ""


class OpenAIServer:
    """Context manager running the server on a free loopback port.

    Args:
        responder: Builds the answer text from the request body.
        latency: Seconds every chat completion takes.
        models: Model ids listed by ``GET /v1/models``.
        api_key: If set, requests without ``Authorization: Bearer <api_key>`` get 401.
        bursts: Faults served by themselves (after any queued with :meth:`inject`).
    """

    def __init__(
        self,
        responder: Responder = default_responder,
        *,
        latency: float = 0.0,
        models: tuple[str, ...] = ("model-a", "model-b"),
        api_key: str | None = None,
        bursts: Bursts = Bursts(),
    ) -> None:
        self.responder = responder
        self.latency = latency
        self.models = models
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self.bursts = bursts
        self.outages: list[tuple[float, float]] = []
        """Outages served so far, as ``(start, end)`` in ``time.perf_counter()`` seconds."""
        self._faults: list[Fault] = []
        self._calls = 0
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )  # a short poll interval: shutdown() returns within 20 ms, not 0.5 s

    @property
    def base_url(self) -> str:
        """The ``/v1`` base URL."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """Recorded chat completion requests, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def inject(self, *faults: Fault) -> None:
        """Queues faults; each is served to one upcoming chat request."""
        with self._lock:
            self._faults.extend(faults)

    def outage(self, seconds: float) -> None:
        """Starts an outage now: every chat request gets the outage status for ``seconds``."""
        now = time.perf_counter()
        with self._lock:
            self.outages.append((now, now + seconds))

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_fault(self) -> tuple[Fault | None, str]:
        """The fault for the next chat request and its name (see ``RecordedRequest.fault``)."""
        bursts = self.bursts
        with self._lock:
            if self._faults:
                fault = self._faults.pop(0)
                return fault, fault.kind
            self._calls += 1
            now = time.perf_counter()
            if bursts.outage_after is not None and self._calls == bursts.outage_after + 1:
                self.outages.append((now, now + bursts.outage_seconds))
            if any(start <= now < end for start, end in self.outages):
                body = '{"error": {"message": "service unavailable (outage)"}}'
                return Fault(bursts.outage_status, body=body), "outage"
            if bursts.throttle_every and self._calls % bursts.throttle_every == 0:
                headers = {"retry-after": f"{bursts.retry_after:g}"}
                body = '{"error": {"message": "rate limited"}}'
                return Fault(429, headers=headers, body=body), "throttle"
            if bursts.cut_every and self._calls % bursts.cut_every == 0:
                return Fault(kind="cut"), "cut"
            return None, ""

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY: headers and body go out in two writes, and Nagle's algorithm would
            # hold the second until the client's delayed ACK (~40 ms on Linux) on every call.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return

            # Each request is recorded just before its answer is written (or when it ends
            # without one), so a client that has its answer always finds the request recorded.
            _started = 0.0
            _body: dict[str, Any] | None = None
            _recorded = False
            _fault = ""

            def _record_once(self) -> None:
                if not self._recorded:
                    self._recorded = True
                    server._record(
                        RecordedRequest(
                            self.path,
                            dict(self.headers),
                            self._body or {},
                            self._started,
                            time.perf_counter(),
                            self._fault,
                        )
                    )

            def _send(
                self,
                status: int,
                body: str,
                headers: dict[str, str] | None = None,
                *,
                cut: bool = False,
            ) -> None:
                data = body.encode()
                self._record_once()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if not cut:
                    self.wfile.write(data)
                    return
                self.wfile.write(data[: len(data) // 2])  # then hang up mid-answer
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def _authorized(self) -> bool:
                if server.api_key is None:
                    return True
                return self.headers.get("authorization") == f"Bearer {server.api_key}"

            def do_GET(self) -> None:
                self._started, self._body, self._recorded = time.perf_counter(), None, False
                self._fault = ""
                try:
                    if not self._authorized():
                        self._send(401, '{"error": {"message": "invalid api key"}}')
                        return
                    if self.path.rstrip("/").endswith("/models"):
                        data = [{"id": m, "object": "model"} for m in server.models]
                        self._send(200, json.dumps({"object": "list", "data": data}))
                    else:
                        self._send(404, '{"error": {"message": "not found"}}')
                finally:
                    self._record_once()

            def do_POST(self) -> None:
                self._started, self._body, self._recorded = time.perf_counter(), None, False
                self._fault = ""
                length = int(self.headers.get("content-length", "0"))
                self._body = body = json.loads(self.rfile.read(length) or b"{}")
                try:
                    self._answer(body)
                finally:
                    self._record_once()

            def _answer(self, body: dict[str, Any]) -> None:
                if not self._authorized():
                    self._send(401, '{"error": {"message": "invalid api key"}}')
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, '{"error": {"message": "not found"}}')
                    return
                fault, self._fault = server._next_fault()
                if fault is not None and fault.kind == "drop":
                    self.close_connection = True
                    self._record_once()
                    self.connection.close()
                    return
                if fault is not None and fault.kind == "status":
                    self._send(fault.status, fault.body, fault.headers)
                    return
                if fault is not None and fault.kind == "malformed":
                    self._send(200, '{"choices": "not a list"}')
                    return
                delay = server.latency + (fault.seconds if fault is not None else 0.0)
                if delay:
                    time.sleep(delay)
                reply = server.responder(body)
                text, finish = reply if isinstance(reply, tuple) else (reply, "stop")
                prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
                completion_tokens = len(text.split())
                answer = {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": finish,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                }
                self._send(200, json.dumps(answer), cut=fault is not None and fault.kind == "cut")

        return Handler


if __name__ == "__main__":  # pragma: no cover - manual use: python tests/openai_server.py 0.2
    with OpenAIServer(latency=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0) as srv:
        print(srv.base_url, flush=True)
        threading.Event().wait()
