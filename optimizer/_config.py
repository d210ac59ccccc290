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
from optimizer._taskref import TaskRef, task_location
from optimizer._validation import format_validation_error
from optimizer._yamlfile import dump_yaml, kind_of, read_text, read_yaml

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
    "describe_config",
    "format_validation_error",
    "load_config",
    "load_config_task",
    "placeholder_errors",
    "save_config",
    "task_companion",
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


def describe_config(config: MoAConfig) -> str:
    """One line: ``2 cycles: m1@0.1 + m2@0.5 -> m1@0.4`` (models without their provider)."""

    def agent(spec: AgentSpec) -> str:
        return f"{spec.model.rpartition('/')[2]}@{spec.temperature:g}"

    main = agent(config.main)
    if config.cycles == 0:
        return f"{main} alone"
    layers = " + ".join(agent(a) for a in config.layer_agents)
    cycles = "1 cycle" if config.cycles == 1 else f"{config.cycles} cycles"
    return f"{cycles}: {layers} -> {main}"


def placeholder_errors(config: MoAConfig) -> list[str]:
    """``field: message`` for each prompt that would get earlier answers but has no placeholder.

    Layer agents see earlier answers from the second cycle on, the main agent after the
    first; an agent whose prompt lacks ``{helper_response}`` would never see them.
    """
    missing = []
    if config.cycles >= 2:
        missing += [
            f"layer_agents.{i}.system_prompt"
            for i, agent in enumerate(config.layer_agents)
            if HELPER_RESPONSE not in agent.system_prompt
        ]
    if config.cycles >= 1 and HELPER_RESPONSE not in config.main.system_prompt:
        missing.append("main.system_prompt")
    return [f"{path}: {_NO_PLACEHOLDER}" for path in missing]


_NO_PLACEHOLDER = (
    "has no {helper_response}, so this agent would never see the earlier answers; "
    "add {helper_response} where they belong"
)


def config_from_dict(data: Any, source: str = "<config>") -> MoAConfig:
    """Builds a config from our YAML/dict form.

    Raises:
        ConfigError: The data is invalid; the message names ``source`` and the field.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {kind_of(data)}")
    try:
        config = _CONFIG_ADAPTER.validate_python(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(source, error, MoAConfig, ("task",))) from None
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
        raise ConfigError(f"{source}: expected a JSON object at the top level, got {kind_of(data)}")
    try:
        workshop = _WORKSHOP_ADAPTER.validate_python(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(source, error, _WorkshopFile)) from None
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
        text = format_validation_error(source, error, MoAConfig)
        for ours_name, theirs in _WORKSHOP_NAMES:
            text = text.replace(f": {ours_name}", f": {theirs}").replace(
                f"; {ours_name}", f"; {theirs}"
            )
        raise ConfigError(text.replace(".system_prompt", ".prompt")) from None
    return config


_WORKSHOP_NAMES = (
    ("main.model", "ai_configuration.main_model"),
    ("main.temperature", "ai_configuration.main_temperature"),
    ("main.system_prompt", "ai_configuration.system_prompt"),
    ("cycles", "ai_configuration.cycles"),
    ("layer_agents", "ai_configuration.layer_agents"),
)


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

    A YAML config may also name its task (``task:``, see :func:`load_config_task`).

    Raises:
        ConfigError: The file is missing, unreadable or invalid.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in {".yaml", ".yml"}:
        data = read_yaml(path, ConfigError)
        if isinstance(data, dict):
            data = {key: value for key, value in data.items() if key != "task"}
        config = config_from_dict(data, str(path))
        problems = placeholder_errors(config)
    elif suffix == ".json":
        try:
            data = json.loads(read_text(path, ConfigError))
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: invalid JSON: line {error.lineno}: {error.msg}") from None
        config = config_from_workshop(data, str(path))
        problems = [_workshop_path(problem) for problem in placeholder_errors(config)]
    else:
        raise ConfigError(f"{path}: unknown config format (use .json for workshop files, .yaml)")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return config


def _workshop_path(problem: str) -> str:
    """A field path of our form as the workshop format names it."""
    if problem.startswith("layer_agents."):
        problem = problem.replace(".system_prompt", ".prompt", 1)
    for ours_name, theirs in _WORKSHOP_NAMES:
        if problem.startswith(ours_name):
            return theirs + problem.removeprefix(ours_name)
    return problem


def task_companion(path: str | Path) -> Path:
    """Where the task of a workshop JSON config is kept: ``best.json`` -> ``best.task.yaml``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.task.yaml")


def load_config_task(path: str | Path) -> tuple[TaskRef, Path] | None:
    """The task a config file names, and the file that names it; None if it names none.

    A YAML config names it in its ``task:`` field, a workshop JSON config in the
    :func:`task_companion` file beside it. ``task:`` is what ``export`` writes (name, source,
    fingerprint) or, written by hand, a shipped task's name or a task file's path relative
    to the config file.

    Raises:
        ConfigError: The ``task`` field is neither.
    """
    path = Path(path)
    holder = path if path.suffix.lower() in {".yaml", ".yml"} else task_companion(path)
    if not holder.is_file():
        return None
    data = read_yaml(holder, ConfigError)
    value = data.get("task") if isinstance(data, dict) else None
    if value is None:
        return None
    if isinstance(value, str) and value.strip():
        source = task_location(value, holder.parent)
        return TaskRef(Path(value).stem if source != value else value, source, ""), holder
    ref = TaskRef.from_dict(value)
    if ref is None:
        raise ConfigError(
            f"{holder}: task: expected a task name, a task file or a mapping "
            "{name, source, fingerprint}"
        )
    return ref, holder


def save_config(config: MoAConfig, path: str | Path, task: TaskRef | None = None) -> None:
    """Saves ``config`` in the format its suffix names (``.json`` workshop, else YAML).

    With ``task``, a YAML config names it in its ``task:`` field; a workshop JSON config,
    whose format has no place for it, gets it in the :func:`task_companion` file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    named = {} if task is None else {"task": task.to_dict(parts=False)}
    if path.suffix.lower() == ".json":
        text = json.dumps(config_to_workshop(config), indent=2) + "\n"
        if named:
            companion = yaml.safe_dump(named, sort_keys=False, allow_unicode=True)
            task_companion(path).write_text(companion, encoding="utf-8")
    else:
        data = {**named, **config_to_dict(config)}
        text = dump_yaml(data)
    path.write_text(text, encoding="utf-8")
