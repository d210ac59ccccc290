"""The provider interface: one async method, like an httpx transport."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal

__all__ = ["ChatRequest", "Completion", "Message", "Provider", "ProviderError"]

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        """Returns the OpenAI wire form."""
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class ChatRequest:
    """A chat completion request, independent of any endpoint.

    Attributes:
        model: The model name as the endpoint knows it (no provider prefix).
        messages: The conversation.
        temperature: Sampling temperature in [0, 2].
        max_tokens: Upper bound on completion tokens.
        seed: Sampling seed passed to the endpoint, if any.
        sample: Sample index; distinguishes repeated samples of the same request in the cache.
        replica: Which of several identical agents of one cycle sent this request (0 for the
            first); keeps their answers distinct, as Self-MoA needs.
    """

    model: str
    messages: tuple[Message, ...]
    temperature: float
    max_tokens: int
    seed: int | None = None
    sample: int = 0
    replica: int = 0


@dataclass(frozen=True)
class Completion:
    """What a provider returns for one request.

    Attributes:
        text: The assistant's answer.
        prompt_tokens: Tokens in the prompt (0 for a cache hit).
        completion_tokens: Tokens generated (0 for a cache hit).
        latency: Seconds from request to answer, retries included.
        retries: How many times the request was retried.
        cached: Whether the answer came from the response cache.
        finish_reason: Why generation stopped: ``stop``, or ``length`` when max_tokens cut it.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency: float
    retries: int = 0
    cached: bool = False
    finish_reason: str = "stop"


class ProviderError(Exception):
    """A model call failed for good (after retries, or at once for a client error).

    Args:
        message: What failed, for the user.
        cause: A short cause to count failures by (``HTTP 503``, ``timeout``...), or "".
        transient: Whether the endpoint may answer later: retries of a 5xx, 429, timeout or
            connection error ran out (a search pauses, rather than stops, on these).
    """

    def __init__(self, message: str, *, cause: str = "", transient: bool = False) -> None:
        super().__init__(message)
        self.cause = cause
        self.transient = transient


class Provider(abc.ABC):
    """Something that answers chat requests.

    Attributes:
        name: Short name used in messages (``cerebras``, ``local``, a base URL).
        endpoint: Stable identity of the endpoint, used in cache keys; never holds a key.
    """

    name: str = "provider"
    endpoint: str = ""

    @abc.abstractmethod
    async def complete(self, request: ChatRequest) -> Completion:
        """Answers one chat request.

        Raises:
            ProviderError: The call failed and will not succeed by retrying.
        """

    async def list_models(self) -> list[str]:
        """Returns the model ids the endpoint serves."""
        raise ProviderError(f"{self.name}: listing models is not supported")

    async def aclose(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Releases connections and other resources."""
