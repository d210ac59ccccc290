"""The per-model table (prices, context windows) and the context guard built on it."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from optimizer._config import HELPER_RESPONSE, AgentSpec, MoAConfig
from optimizer._errors import UserError
from optimizer._yamlfile import read_yaml

__all__ = [
    "CHARS_PER_TOKEN",
    "MESSAGE_OVERHEAD_TOKENS",
    "MODELS_FILE_ENV",
    "Catalog",
    "CatalogError",
    "ModelInfo",
    "check_context",
    "estimate_tokens",
]

MODELS_FILE_ENV = "MOA_MODELS_FILE"
CHARS_PER_TOKEN = 3.5
"""Rough characters per token for English prose and code; errs towards more tokens."""
MESSAGE_OVERHEAD_TOKENS = 8
"""Tokens a chat template adds around each message (role markers, separators)."""
_NUMBERING_TOKENS = 3  # "0. " and the newline before each numbered answer


class CatalogError(UserError):
    """The model table is invalid; the message names the file and field."""


@dataclass(frozen=True)
class ModelInfo:
    """Prices and context window of one model.

    Attributes:
        input_per_million: US dollars per million prompt tokens.
        output_per_million: US dollars per million completion tokens.
        context_window: Tokens the model accepts, prompt and completion together.
    """

    input_per_million: float
    output_per_million: float
    context_window: int


@dataclass(frozen=True)
class Catalog:
    """The model table.

    Attributes:
        models: Known models by id as configs write them.
        default: Used for models not in ``models``.
        source: The file the table came from.
    """

    models: Mapping[str, ModelInfo]
    default: ModelInfo
    source: str = "<catalog>"

    @classmethod
    def load(cls, path: str | Path | None = None) -> Catalog:
        """Loads ``path``, else ``$MOA_MODELS_FILE``, else the packaged ``models.yaml``.

        Raises:
            CatalogError: The file is missing or invalid.
        """
        chosen = path or os.environ.get(MODELS_FILE_ENV) or None
        if chosen is None:
            packaged = resources.files("optimizer").joinpath("data", "models.yaml")
            return cls.from_dict(yaml.safe_load(packaged.read_text("utf-8")), "models.yaml")
        file = Path(chosen)
        data = read_yaml(file, CatalogError)
        return cls.from_dict(data, str(file))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<catalog>") -> Catalog:
        """Builds a table from its YAML form (``default`` and ``models``).

        Raises:
            CatalogError: A field is missing or has the wrong type.
        """
        if not isinstance(data, dict):
            raise CatalogError(f"{source}: expected a mapping with 'default' and 'models'")
        unknown = sorted(set(data) - {"default", "models"})
        if unknown:
            raise CatalogError(f"{source}: {unknown[0]}: unknown field")
        default = _model_info(data.get("default"), f"{source}: default")
        models = data.get("models") or {}
        if not isinstance(models, dict):
            raise CatalogError(f"{source}: models: expected a mapping of model id to fields")
        infos = {str(k): _model_info(v, f"{source}: models.{k}") for k, v in models.items()}
        return cls(models=infos, default=default, source=source)

    def info(self, model: str) -> ModelInfo:
        """Returns the entry for ``model``: exact id, then without a ``provider/`` prefix."""
        if model in self.models:
            return self.models[model]
        _, sep, rest = model.partition("/")
        if sep and rest in self.models:
            return self.models[rest]
        return self.default

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """Estimated US dollars for one call's usage."""
        info = self.info(model)
        return (
            prompt_tokens * info.input_per_million + completion_tokens * info.output_per_million
        ) / 1_000_000

    def context_window(self, model: str) -> int:
        """Tokens ``model`` accepts, prompt and completion together."""
        return self.info(model).context_window


def _model_info(data: Any, where: str) -> ModelInfo:
    if not isinstance(data, dict):
        raise CatalogError(f"{where}: expected a mapping")
    fields = ("input_per_million", "output_per_million", "context_window")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise CatalogError(f"{where}.{unknown[0]}: unknown field")
    for name in fields:
        if name not in data:
            raise CatalogError(f"{where}.{name}: required field is missing")
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise CatalogError(f"{where}.{name}: expected a non-negative number")
    window = data["context_window"]
    if not isinstance(window, int) or window < 1:
        raise CatalogError(f"{where}.context_window: expected a positive integer")
    return ModelInfo(
        input_per_million=float(data["input_per_million"]),
        output_per_million=float(data["output_per_million"]),
        context_window=window,
    )


def estimate_tokens(text: str) -> int:
    """A rough token count: ``ceil(len(text) / 3.5)``.

    Real tokenizers give about 3.5-4.5 characters per token on English and code, so this
    errs on the side of more tokens, which is the safe side for a context guard.
    """
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _aggregated_tokens(config: MoAConfig) -> int:
    """Tokens of a cycle's aggregated text when every layer agent writes its max_tokens."""
    template = estimate_tokens(config.aggregation_template.replace("{responses}", ""))
    answers = sum(a.max_tokens + _NUMBERING_TOKENS for a in config.layer_agents)
    return template + answers


def _needed(agent: AgentSpec, task_tokens: int, helper_tokens: int) -> tuple[int, int]:
    """Returns (prompt tokens, prompt + max_tokens) for one call of ``agent``."""
    system = estimate_tokens(agent.system_prompt.replace(HELPER_RESPONSE, ""))
    helper = helper_tokens * agent.system_prompt.count(HELPER_RESPONSE)
    prompt = system + helper + task_tokens + 2 * MESSAGE_OVERHEAD_TOKENS
    return prompt, prompt + agent.max_tokens


def check_context(config: MoAConfig, task_prompt: str, catalog: Catalog) -> str | None:
    """Checks that every call of ``config`` fits its model's context window.

    Each agent's context is estimated as its system prompt, the task, the previous cycle's
    aggregated answers (every layer agent at its max_tokens; only where the prompt holds
    ``{helper_response}``) and its own max_tokens, with tokens estimated by
    :func:`estimate_tokens` plus a small per-message overhead.

    Returns:
        None if everything fits, else a one-line reason naming the agent, model and sizes.
    """
    task_tokens = estimate_tokens(task_prompt)
    aggregated = _aggregated_tokens(config) if config.cycles > 0 else 0
    calls: list[tuple[str, int, AgentSpec, int]] = []
    for cycle in range(1, min(config.cycles, 2) + 1):  # cycles >= 2 all look like cycle 2
        helper = 0 if cycle == 1 else aggregated
        calls += [(a.name, cycle, a, helper) for a in config.layer_agents]
    calls.append(("main", config.cycles + 1, config.main, aggregated))
    for name, cycle, agent, helper in calls:
        prompt, total = _needed(agent, task_tokens, helper)
        window = catalog.context_window(agent.model)
        if total > window:
            where = "main agent" if name == "main" else f"agent {name!r} in cycle {cycle}"
            return (
                f"{where} ({agent.model}) needs about {total:,} tokens "
                f"(prompt ~{prompt:,} + max_tokens {agent.max_tokens:,}) "
                f"but the model's context window is {window:,}"
            )
    return None
