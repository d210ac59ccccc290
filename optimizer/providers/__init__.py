"""Model providers: one async ``complete`` method; cache and limits wrap any provider."""

from __future__ import annotations

from optimizer.providers._base import ChatRequest, Completion, Message, Provider, ProviderError
from optimizer.providers._cache import CachedProvider, ResponseCache
from optimizer.providers._limits import LimitedProvider, Limits
from optimizer.providers._openai import OpenAICompatProvider
from optimizer.providers._router import (
    DEFAULT_LOCAL_MODEL,
    LOCAL_MODELS,
    PRESETS,
    Preset,
    Router,
    RoutingError,
    parse_model_map,
)

__all__ = [
    "DEFAULT_LOCAL_MODEL",
    "LOCAL_MODELS",
    "PRESETS",
    "CachedProvider",
    "ChatRequest",
    "Completion",
    "LimitedProvider",
    "Limits",
    "Message",
    "OpenAICompatProvider",
    "Preset",
    "Provider",
    "ProviderError",
    "ResponseCache",
    "Router",
    "RoutingError",
    "parse_model_map",
]
