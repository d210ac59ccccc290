"""MoA configurations: the record, its validation, and its two file formats."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from optimizer._errors import UserError
from optimizer._yamlfile import read_yaml

__all__ = [
    "DEFAULT_AGGREGATION_TEMPLATE",
    "DEFAULT_MAX_TOKENS",
    "HELPER_RESPONSE",
    "AgentSpec",
    "ConfigError",
    "MoAConfig",
    "config_from_dict",
    "config_from_workshop",
    "config_to_dict",
    "config_to_workshop",
    "format_validation_error",
    "load_config",
    "save_config",
]

HELPER_RESPONSE = "{helper_response}"
DEFAULT_MAX_TOKENS = 1024
DEFAULT_AGGREGATION_TEMPLATE = (
    "Other assistants have already answered this task. Their answers, numbered:\n\n"
    "{responses}\n\n"
    "Check each answer critically: keep what is correct, fix what is wrong or missing, "
    "and write one complete, best answer of your own."
)

_STRICT = ConfigDict(extra="forbid")
_Str = Annotated[str, Field(strict=True)]
_Temperature = Annotated[float, Field(strict=True, ge=0.0, le=2.0)]


class ConfigError(UserError):
    """A config file (or flag) is invalid; the message names the file and field path."""


@dataclass(frozen=True, config=_STRICT)
class AgentSpec:
    """One agent: a model, a temperature and a system prompt.

    Attributes:
        name: Agent name, unique within a config.
        model: Model id, optionally ``provider/model``.
        temperature: Sampling temperature in [0, 2].
        system_prompt: System prompt; the literal ``{helper_response}`` is replaced by the
            previous cycle's aggregated answers.
        max_tokens: Upper bound on the agent's completion tokens.
    """

    name: Annotated[str, Field(strict=True, min_length=1)]
    model: Annotated[str, Field(strict=True, min_length=1)]
    temperature: _Temperature
    system_prompt: _Str
    max_tokens: Annotated[int, Field(strict=True, ge=1)] = DEFAULT_MAX_TOKENS


@dataclass(frozen=True, config=_STRICT)
class MoAConfig:
    """A Mixture-of-Agents configuration.

    Attributes:
        main: The main agent, which writes the final answer after the last cycle.
        cycles: Number of layer cycles; 0 means the main agent alone.
        layer_agents: Agents that answer in parallel in every cycle.
        aggregation_template: Text introducing a cycle's numbered answers; holds ``{responses}``.
    """

    main: AgentSpec
    cycles: Annotated[int, Field(strict=True, ge=0)]
    layer_agents: tuple[AgentSpec, ...] = ()
    aggregation_template: _Str = DEFAULT_AGGREGATION_TEMPLATE

    def __post_init__(self) -> None:
        if self.cycles > 0 and not self.layer_agents:
            raise ValueError("layer_agents: must not be empty when cycles > 0")
        if "{responses}" not in self.aggregation_template:
            raise ValueError("aggregation_template: must contain {responses}")
        names = [agent.name for agent in self.layer_agents]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"layer_agents: agent names must be unique; repeated: {duplicates}")

    @property
    def models(self) -> tuple[str, ...]:
        """Every model the config calls, main agent first, without repeats."""
        seen = [self.main.model] + [a.model for a in self.layer_agents] * (self.cycles > 0)
        return tuple(dict.fromkeys(seen))

    def with_models(self, mapping: dict[str, str]) -> MoAConfig:
        """Returns a copy with models renamed by ``mapping`` (others unchanged)."""

        def remap(agent: AgentSpec) -> AgentSpec:
            return replace(agent, model=mapping.get(agent.model, agent.model))

        return replace(
            self,
            main=remap(self.main),
            layer_agents=tuple(remap(a) for a in self.layer_agents),
        )


_CONFIG_ADAPTER = TypeAdapter(MoAConfig)


def format_validation_error(source: str, error: ValidationError) -> str:
    """Formats the first pydantic error as ``source: field.path: message``."""
    first = error.errors()[0]
    path = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] in {"extra_forbidden", "unexpected_keyword_argument"}:
        message = "unknown field"
    elif first["type"] in {"missing", "missing_argument"}:
        message = "required field is missing"
    if not path:  # a cross-field check; its message starts with the field path
        return f"{source}: {message}"
    return f"{source}: {path}: {message}"


def config_from_dict(data: Any, source: str = "<config>") -> MoAConfig:
    """Builds a config from our YAML/dict form.

    Raises:
        ConfigError: The data is invalid; the message names ``source`` and the field.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        config = _CONFIG_ADAPTER.validate_python(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(source, error)) from None
    return config


def config_to_dict(config: MoAConfig) -> dict[str, Any]:
    """Returns our YAML/dict form of ``config``."""
    data = asdict(config)
    data["layer_agents"] = list(data["layer_agents"])
    return data


@dataclass(frozen=True, config=_STRICT)
class _WorkshopAgent:
    name: _Str
    model: _Str
    temperature: Annotated[float, Field(strict=True)]
    prompt: _Str


@dataclass(frozen=True, config=_STRICT)
class _WorkshopConfiguration:
    main_model: _Str
    main_temperature: Annotated[float, Field(strict=True)]
    cycles: Annotated[int, Field(strict=True)]
    system_prompt: _Str
    layer_agents: tuple[_WorkshopAgent, ...]


@dataclass(frozen=True, config=_STRICT)
class _WorkshopFile:
    ai_configuration: _WorkshopConfiguration
    exported_at: _Str = ""
    version: _Str = "2.0"


_WORKSHOP_ADAPTER = TypeAdapter(_WorkshopFile)


def config_from_workshop(data: Any, source: str = "<workshop json>") -> MoAConfig:
    """Builds a config from the workshop's exported JSON.

    Raises:
        ConfigError: The data is invalid; the message names ``source`` and the field.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object at the top level")
    try:
        workshop = _WORKSHOP_ADAPTER.validate_python(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(source, error)) from None
    ai = workshop.ai_configuration
    ours = {
        "main": {
            "name": "main",
            "model": ai.main_model,
            "temperature": ai.main_temperature,
            "system_prompt": ai.system_prompt,
        },
        "cycles": ai.cycles,
        "layer_agents": [
            {
                "name": a.name,
                "model": a.model,
                "temperature": a.temperature,
                "system_prompt": a.prompt,
            }
            for a in ai.layer_agents
        ],
    }
    try:
        config = _CONFIG_ADAPTER.validate_python(ours)
    except ValidationError as error:
        raise ConfigError(
            format_validation_error(source, error)
            .replace(": main.model", ": ai_configuration.main_model")
            .replace(": main.temperature", ": ai_configuration.main_temperature")
            .replace(": main.system_prompt", ": ai_configuration.system_prompt")
            .replace(": cycles", ": ai_configuration.cycles")
            .replace(": layer_agents", ": ai_configuration.layer_agents")
            .replace(".system_prompt", ".prompt")
        ) from None
    return config


def config_to_workshop(config: MoAConfig, exported_at: datetime | None = None) -> dict[str, Any]:
    """Returns the workshop's exported-JSON form of ``config``.

    The workshop format has no max_tokens and no aggregation template; those are dropped.
    """
    when = (exported_at or datetime.now()).strftime("%Y-%m-%d %H:%M:%S")
    return {
        "ai_configuration": {
            "main_model": config.main.model,
            "main_temperature": config.main.temperature,
            "cycles": config.cycles,
            "system_prompt": config.main.system_prompt,
            "layer_agents": [
                {
                    "name": a.name,
                    "model": a.model,
                    "temperature": a.temperature,
                    "prompt": a.system_prompt,
                }
                for a in config.layer_agents
            ],
        },
        "exported_at": when,
        "version": "2.0",
    }


def load_config(path: str | Path) -> MoAConfig:
    """Loads a config: ``.json`` files in the workshop's format, ``.yaml``/``.yml`` in ours.

    Raises:
        ConfigError: The file is missing, unreadable or invalid.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in {".yaml", ".yml"}:
        return config_from_dict(read_yaml(path, ConfigError), str(path))
    if suffix != ".json":
        raise ConfigError(f"{path}: unknown config format (use .json for workshop files, .yaml)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: invalid JSON: line {error.lineno}: {error.msg}") from None
    return config_from_workshop(data, str(path))


def save_config(config: MoAConfig, path: str | Path) -> None:
    """Saves ``config`` in the format its suffix names (``.json`` workshop, else YAML)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        text = json.dumps(config_to_workshop(config), indent=2) + "\n"
    else:
        text = yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
