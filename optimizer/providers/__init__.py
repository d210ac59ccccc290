"""Model providers: one async ``complete`` method; cache and limits wrap any provider."""

from __future__ import annotations

from optimizer.providers._base import ChatRequest, Completion, Message, Provider, ProviderError
from optimizer.providers._cache import CachedProvider, CacheStats, ResponseCache
from optimizer.providers._limits import LimitedProvider, Limits
from optimizer.providers._local import DEFAULT_N_CTX, LlamaMissingError, LocalProvider
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
from optimizer.providers._weights import WeightsError, model_path

__all__ = [
    "DEFAULT_LOCAL_MODEL",
    "DEFAULT_N_CTX",
    "LOCAL_MODELS",
    "PRESETS",
    "CacheStats",
    "CachedProvider",
    "ChatRequest",
    "Completion",
    "LimitedProvider",
    "Limits",
    "LlamaMissingError",
    "LocalProvider",
    "Message",
    "OpenAICompatProvider",
    "Preset",
    "Provider",
    "ProviderError",
    "ResponseCache",
    "Router",
    "RoutingError",
    "WeightsError",
    "model_path",
    "parse_model_map",
]
