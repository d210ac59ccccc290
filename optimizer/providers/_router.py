"""Routes each model id of a config to the provider that serves it."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from optimizer._errors import UserError
from optimizer.providers._base import Provider, ProviderError
from optimizer.providers._cache import CachedProvider, ResponseCache
from optimizer.providers._limits import LimitedProvider, Limits
from optimizer.providers._openai import OpenAICompatProvider

__all__ = [
    "DEFAULT_LOCAL_MODEL",
    "LOCAL_MODELS",
    "PRESETS",
    "Preset",
    "Router",
    "RoutingError",
    "parse_model_map",
]


@dataclass(frozen=True)
class Preset:
    """A known OpenAI-compatible cloud endpoint.

    Attributes:
        name: Provider name, used as the ``provider/`` prefix of model ids.
        base_url: The endpoint's ``/v1`` base URL.
        key_env: Environment variable holding the API key.
        limits: Default concurrency and rate limits for the endpoint.
    """

    name: str
    base_url: str
    key_env: str
    limits: Limits = field(default_factory=Limits)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "cerebras",
            "https://api.cerebras.ai/v1",
            "CEREBRAS_API_KEY",
            Limits(max_concurrency=8, count_max_tokens_up_front=True),
        ),
        Preset("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
        Preset("together", "https://api.together.xyz/v1", "TOGETHER_API_KEY"),
        Preset("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    )
}
LOCAL = "local"
LOCAL_MODELS = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
DEFAULT_LOCAL_MODEL = LOCAL_MODELS[0]
BASE_URL_ENV = "MOA_BASE_URL"
BASE_URL_KEY_ENV = "MOA_API_KEY"


class RoutingError(UserError):
    """A model id cannot be served (unknown provider or model, or a missing API key)."""


def parse_model_map(items: list[str], flag: str = "--model-map") -> dict[str, str]:
    """Parses ``NAME=provider/model`` items.

    Raises:
        RoutingError: An item is not of that form.
    """
    mapping = {}
    for item in items:
        name, sep, target = item.partition("=")
        if not sep or not name.strip() or not target.strip():
            raise RoutingError(f"{flag}: expected NAME=provider/model, got {item!r}")
        mapping[name.strip()] = target.strip()
    return mapping


class Router:
    """Resolves model ids (``model`` or ``provider/model``) to providers.

    Rules, in order: ``model_map`` renames a model first; with a base URL every call goes to
    that one endpoint; a ``provider/`` prefix names a preset or ``local``; an unprefixed id
    goes to Cerebras when ``CEREBRAS_API_KEY`` is set, else to the embedded default model.

    Args:
        base_url: One OpenAI-compatible endpoint for every call (``--base-url``).
        api_key: Key for ``base_url``; defaults to ``MOA_API_KEY``.
        model_map: Explicit renames, ``{name: provider/model}``.
        cache: Response cache wrapped around every provider, or None.
        max_retries: Retries per call on transient failures.
        timeout: Seconds per HTTP attempt.
        limits: Overrides of the endpoints' default limits: the fields of ``Limits`` to change
            (``max_concurrency``, ``requests_per_minute``, ``tokens_per_minute``).
        env: Environment to read keys from.
        local_factory: Builds the embedded provider for a local model name.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model_map: Mapping[str, str] | None = None,
        cache: ResponseCache | None = None,
        max_retries: int = 4,
        timeout: float = 120.0,
        limits: Mapping[str, float | None] | None = None,
        env: Mapping[str, str] | None = None,
        local_factory: Callable[[str], Provider] | None = None,
    ) -> None:
        self._env = os.environ if env is None else env
        self._base_url = base_url or self._env.get(BASE_URL_ENV) or None
        self._api_key = api_key or self._env.get(BASE_URL_KEY_ENV) or None
        self._model_map = dict(model_map or {})
        self._cache = cache
        self._max_retries = max_retries
        self._timeout = timeout
        self._limit_overrides = dict(limits or {})
        self._local_factory = local_factory or _default_local_factory
        self._providers: dict[str, Provider] = {}
        self.notices: list[str] = []

    @property
    def base_url(self) -> str | None:
        """The single endpoint every call goes to, if any."""
        return self._base_url

    def resolve(self, model: str) -> tuple[Provider, str]:
        """Returns the provider for ``model`` and the model name to send it.

        Raises:
            RoutingError: Unknown provider or local model, or a missing API key.
        """
        model = self._model_map.get(model, model)
        prefix, _, rest = model.partition("/")
        has_prefix = bool(rest) and (prefix in PRESETS or prefix == LOCAL)
        if self._base_url:
            return self._provider_for_base_url(), rest if has_prefix else model
        if has_prefix and prefix == LOCAL:
            if rest not in LOCAL_MODELS:
                raise RoutingError(
                    f"unknown local model {model!r}; choose one of "
                    + ", ".join(f"local/{m}" for m in LOCAL_MODELS)
                )
            return self._local(rest), rest
        if has_prefix:
            return self._preset(PRESETS[prefix]), rest
        if self._env.get(PRESETS["cerebras"].key_env):
            return self._preset(PRESETS["cerebras"]), model
        self._notice(
            f"no cloud API key or --base-url: the embedded model local/{DEFAULT_LOCAL_MODEL} "
            "serves every model the config names (map them with --model-map NAME=provider/model)"
        )
        return self._local(DEFAULT_LOCAL_MODEL), DEFAULT_LOCAL_MODEL

    def check(self, models: list[str] | tuple[str, ...]) -> None:
        """Resolves every model once, so a bad id or missing key fails before any call.

        Raises:
            RoutingError: As ``resolve``.
        """
        for model in models:
            self.resolve(model)

    async def unknown_models(self, models: list[str] | tuple[str, ...]) -> list[str]:
        """Warnings for the models an endpoint does not list at ``GET /models``.

        Each warning names the model and the closest one the endpoint lists. Endpoints that
        do not answer the listing, and the embedded models, are not checked.
        """
        groups: dict[str, tuple[Provider, list[str]]] = {}
        for model in models:
            provider, name = self.resolve(model)
            key = next(k for k, p in self._providers.items() if p is provider)
            if not key.startswith("local:"):
                groups.setdefault(key, (provider, []))[1].append(name)
        warnings = []
        for key, (provider, names) in groups.items():
            try:
                known = await provider.list_models()
            except ProviderError:
                continue
            where = key.partition(":")[2]
            for name in dict.fromkeys(names):
                if known and name not in known:
                    close = difflib.get_close_matches(name, known, n=1, cutoff=0.0)
                    warnings.append(
                        f"model {name!r} is not among the {len(known)} models {where} lists"
                        + (f"; the closest is {close[0]!r}" if close else "")
                    )
        return warnings

    async def list_models(self, provider: str | None = None) -> list[str]:
        """Lists the models of ``provider`` (a preset or ``local``), or of the base URL."""
        if provider is None and self._base_url:
            return await self._provider_for_base_url().list_models()
        if provider == LOCAL or (provider is None and not self._env.get("CEREBRAS_API_KEY")):
            return [f"{LOCAL}/{m}" for m in LOCAL_MODELS]
        name = provider or "cerebras"
        if name not in PRESETS:
            raise RoutingError(
                f"--provider: unknown provider {name!r}; choose one of "
                + ", ".join([*PRESETS, LOCAL])
            )
        return await self._preset(PRESETS[name]).list_models()

    async def aclose(self) -> None:
        """Closes every provider that was opened."""
        for provider in self._providers.values():
            await provider.aclose()
        self._providers.clear()

    def _notice(self, text: str) -> None:
        if text not in self.notices:
            self.notices.append(text)

    def _wrap(self, provider: Provider, limits: Limits) -> Provider:
        limits = replace(limits, **self._limit_overrides)  # type: ignore[arg-type]
        limited: Provider = LimitedProvider(provider, limits)
        return CachedProvider(limited, self._cache) if self._cache is not None else limited

    def _provider_for_base_url(self) -> Provider:
        assert self._base_url is not None
        key = f"url:{self._base_url}"
        if key not in self._providers:
            inner = OpenAICompatProvider(
                name=self._base_url,
                base_url=self._base_url,
                api_key=self._api_key,
                max_retries=self._max_retries,
                timeout=self._timeout,
            )
            self._providers[key] = self._wrap(inner, Limits())
        return self._providers[key]

    def _preset(self, preset: Preset) -> Provider:
        key = f"preset:{preset.name}"
        if key not in self._providers:
            api_key = self._env.get(preset.key_env)
            if not api_key:
                raise RoutingError(
                    f"{preset.name}: no API key; set {preset.key_env} "
                    f"(or use --base-url for a self-hosted endpoint)"
                )
            inner = OpenAICompatProvider(
                name=preset.name,
                base_url=preset.base_url,
                api_key=api_key,
                max_retries=self._max_retries,
                timeout=self._timeout,
            )
            self._providers[key] = self._wrap(inner, preset.limits)
        return self._providers[key]

    def _local(self, model: str) -> Provider:
        key = f"local:{model}"
        if key not in self._providers:
            # The embedded model serialises its own calls; one at a time is its only limit.
            self._providers[key] = self._wrap(self._local_factory(model), Limits(1))
        return self._providers[key]


def _default_local_factory(model: str) -> Provider:
    from optimizer.providers._local import LocalProvider

    return LocalProvider(model)
