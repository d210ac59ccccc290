"""Search spaces: which MoA configs a study may try, read from YAML, sampled define-by-run.

A space fixes or searches every field of an :class:`~optimizer.MoAConfig`. In YAML a scalar
fixes a field and a range (``{low, high, step}``) or a list searches it::

    task: challenge
    grader: function120
    repeats: 2
    cycles: {low: 0, high: 2}          # 0 = the main agent alone
    same_model: search                 # false | true | search: one model for every agent
    layer_agents:
      count: {low: 1, high: 3}
      models: [local/qwen2.5-coder-0.5b, local/qwen2.5-coder-1.5b]
      temperature: {low: 0.0, high: 1.2, step: 0.1}
      max_tokens: 256
      prompts: ["Help with the coding task. {helper_response}"]
    main:
      models: [local/qwen2.5-coder-0.5b, local/qwen2.5-coder-1.5b]
      temperature: 0.7
      max_tokens: [256, 384]
      prompts: ["You are a helpful assistant. {helper_response}"]
    aggregation_template: "Answers so far:\\n{responses}"
    mutation: {every: 10}

With ``same_model`` (Self-MoA) one model, chosen from ``main.models``, serves every agent.
Parameters of agents that do not exist in a trial (``cycles`` = 0, fewer agents) are not
suggested, so TPE's ``group=True`` models them as conditional.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import optuna
from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from graders._base import BaseGrader, Task
from optimizer._config import (
    DEFAULT_AGGREGATION_TEMPLATE,
    DEFAULT_MAX_TOKENS,
    HELPER_RESPONSE,
    AgentSpec,
    MoAConfig,
    format_validation_error,
)
from optimizer._errors import UserError
from optimizer._taskref import task_location
from optimizer._yamlfile import kind_of, read_yaml

__all__ = [
    "LAYER",
    "MAIN",
    "FloatRange",
    "IntRange",
    "LayerSpace",
    "MutationSpace",
    "PromptChooser",
    "RacingSpace",
    "RoleSpace",
    "SearchSpace",
    "SpaceError",
    "check_model_id",
    "load_space",
    "space_from_dict",
    "space_task_location",
    "task_and_grader",
]

MAIN = "main"
"""Prompt-pool role of the main agent."""
LAYER = "layer"
"""Prompt-pool role of the layer agents."""

_STRICT = ConfigDict(extra="forbid")
_LOCAL_MODELS = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")  # optimizer.providers.LOCAL_MODELS


class SpaceError(UserError):
    """A search space is invalid; the message names the file and the field path."""


class PromptChooser(Protocol):
    """Chooses a role's system prompt for a trial (the study's prompt pool)."""

    def suggest(self, trial: optuna.Trial, role: str, index: int = 0) -> str:
        """Returns the prompt for agent ``index`` of ``role``, suggesting its parameters."""
        ...


def check_model_id(model: str) -> str:
    """Checks the syntax of a model id (``model`` or ``provider/model``).

    Raises:
        ValueError: Empty, holds whitespace, an empty part around ``/``, or an unknown
            embedded model.
    """
    if not model or any(c.isspace() for c in model):
        raise ValueError(f"invalid model id {model!r}: must be non-empty without spaces")
    prefix, sep, rest = model.partition("/")
    if sep and (not prefix or not rest or rest.endswith("/")):
        raise ValueError(f"invalid model id {model!r}: expected provider/model")
    if prefix == "local" and rest not in _LOCAL_MODELS:
        known = ", ".join(f"local/{m}" for m in _LOCAL_MODELS)
        raise ValueError(f"unknown embedded model {model!r}; choose one of {known}")
    return model


def _int_range(value: Any) -> Any:
    if isinstance(value, IntRange):
        return value
    if isinstance(value, bool) or not isinstance(value, int | dict):
        raise ValueError("expected an integer or a mapping {low, high, step}")
    return {"low": value, "high": value} if isinstance(value, int) else value


def _agent_count(value: Any) -> Any:
    value = _int_range(value)
    low = value.get("low") if isinstance(value, dict) else value.low
    if isinstance(low, int) and low < 1:
        raise ValueError("low must be at least 1 (use cycles: 0 for no layer agents)")
    return value


def _same_model(value: Any) -> Any:
    if not (isinstance(value, bool) or value == "search"):
        raise ValueError("expected true, false or search")
    return value


def _float_range(value: Any) -> Any:
    if isinstance(value, FloatRange):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | dict):
        raise ValueError("expected a number or a mapping {low, high, step}")
    return {"low": value, "high": value} if isinstance(value, int | float) else value


def _choices(value: Any) -> Any:
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("the list of choices must not be empty")
        return tuple(value)
    return (value,)


def _model_id(value: Any) -> Any:
    return check_model_id(value) if isinstance(value, str) else value


def _template(value: Any) -> Any:
    if isinstance(value, str) and "{responses}" not in value:
        raise ValueError("an aggregation template must contain {responses}")
    return value


_PositiveInt = Annotated[int, Field(strict=True, ge=1)]
_ModelId = Annotated[str, Field(strict=True), BeforeValidator(_model_id)]
_Prompt = Annotated[str, Field(strict=True)]
_Template = Annotated[str, Field(strict=True), BeforeValidator(_template)]


@dataclass(frozen=True, config=_STRICT)
class IntRange:
    """An integer field: fixed when ``low == high``.

    Attributes:
        low: Smallest value.
        high: Largest value.
        step: Spacing of the values tried.
    """

    low: Annotated[int, Field(strict=True, ge=0)]
    high: Annotated[int, Field(strict=True, ge=0)]
    step: _PositiveInt = 1

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) > high ({self.high})")
        if (self.high - self.low) % self.step:
            raise ValueError(f"high - low ({self.high - self.low}) is not a multiple of step")

    @property
    def fixed(self) -> bool:
        """Whether the field has one value."""
        return self.low == self.high

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        """Returns the fixed value, or suggests ``name``."""
        if self.fixed:
            return self.low
        return int(trial.suggest_int(name, self.low, self.high, step=self.step))

    def nearest(self, value: int) -> int:
        """The allowed value closest to ``value``."""
        clipped = min(max(value, self.low), self.high)
        return self.low + round((clipped - self.low) / self.step) * self.step


@dataclass(frozen=True, config=_STRICT)
class FloatRange:
    """A float field: fixed when ``low == high``.

    Attributes:
        low: Smallest value.
        high: Largest value.
        step: Spacing of the values tried, or None for a continuous range.
    """

    low: Annotated[float, Field(strict=True, ge=0.0, le=2.0)]
    high: Annotated[float, Field(strict=True, ge=0.0, le=2.0)]
    step: Annotated[float, Field(strict=True, gt=0.0)] | None = None

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) > high ({self.high})")
        if self.step is not None:
            steps = (self.high - self.low) / self.step
            if abs(steps - round(steps)) > 1e-6:
                raise ValueError(f"high - low ({self.high - self.low:g}) is not a multiple of step")

    @property
    def fixed(self) -> bool:
        """Whether the field has one value."""
        return self.low == self.high

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        """Returns the fixed value, or suggests ``name``."""
        if self.fixed:
            return self.low
        value = trial.suggest_float(name, self.low, self.high, step=self.step)
        return round(float(value), 6)

    def nearest(self, value: float) -> float:
        """The allowed value closest to ``value``."""
        clipped = min(max(value, self.low), self.high)
        if self.step is None:
            return clipped
        return round(self.low + round((clipped - self.low) / self.step) * self.step, 6)


_IntField = Annotated[IntRange, BeforeValidator(_int_range)]
_FloatField = Annotated[FloatRange, BeforeValidator(_float_range)]


@dataclass(frozen=True, config=_STRICT)
class RoleSpace:
    """The main agent's fields.

    Attributes:
        models: Model choices.
        prompts: Seed system prompts (generation 0 of the role's prompt pool).
        temperature: Temperature range.
        max_tokens: max_tokens choices.
    """

    models: Annotated[tuple[_ModelId, ...], BeforeValidator(_choices)]
    prompts: Annotated[tuple[_Prompt, ...], BeforeValidator(_choices)]
    temperature: _FloatField = FloatRange(0.7, 0.7)
    max_tokens: Annotated[tuple[_PositiveInt, ...], BeforeValidator(_choices)] = (
        DEFAULT_MAX_TOKENS,
    )


@dataclass(frozen=True, config=_STRICT)
class LayerSpace:
    """The layer agents' fields; each agent draws its own model, temperature and prompt.

    Attributes:
        models: Model choices.
        prompts: Seed system prompts (generation 0 of the role's prompt pool).
        count: Number of layer agents.
        temperature: Temperature range.
        max_tokens: max_tokens choices (one value shared by the layer agents of a trial).
    """

    models: Annotated[tuple[_ModelId, ...], BeforeValidator(_choices)]
    prompts: Annotated[tuple[_Prompt, ...], BeforeValidator(_choices)]
    count: Annotated[IntRange, BeforeValidator(_agent_count)] = IntRange(1, 1)
    temperature: _FloatField = FloatRange(0.7, 0.7)
    max_tokens: Annotated[tuple[_PositiveInt, ...], BeforeValidator(_choices)] = (
        DEFAULT_MAX_TOKENS,
    )


@dataclass(frozen=True, config=_STRICT)
class MutationSpace:
    """How the prompt pools grow.

    Attributes:
        every: Run a mutation round every this many finished trials; 0 turns mutation off.
        model: The mutator model; None means the space's first main model.
        variants: New prompts per role and round (the size of a generation).
        temperature: The mutator's sampling temperature.
        max_tokens: The mutator's max_tokens.
        allow_code: Keep variants that define the task's function or are mostly code
            (by default they are rejected: a prompt holding an answer is memorization).
    """

    every: Annotated[int, Field(strict=True, ge=0)] = 10
    model: _ModelId | None = None
    variants: _PositiveInt = 4
    temperature: Annotated[float, Field(strict=True, ge=0.0, le=2.0)] = 0.9
    max_tokens: _PositiveInt = 512
    allow_code: Annotated[bool, Field(strict=True)] = False


@dataclass(frozen=True, config=_STRICT)
class RacingSpace:
    """How repeats are spent (see :mod:`optimizer._racing`).

    Attributes:
        incumbent_runs: Runs the incumbent (the best config so far) always has.
        max_runs: Most runs a challenger gets within one trial's race.
    """

    incumbent_runs: _PositiveInt = 3
    max_runs: _PositiveInt = 8

    def __post_init__(self) -> None:
        if self.max_runs < self.incumbent_runs:
            raise ValueError("racing.max_runs: must be at least racing.incumbent_runs")


@dataclass(frozen=True, config=_STRICT)
class SearchSpace:
    """A search space over MoA configs.

    Attributes:
        task: Task name (its instances are loaded by the graders package).
        main: The main agent's fields.
        grader: Grader name; None means the task's own grader.
        repeats: Runs per trial (distinct sample indexes and seeds).
        cycles: Number of layer cycles (0 = the main agent alone).
        layer_agents: The layer agents' fields; required when ``cycles`` can exceed 0.
        same_model: One model for every agent: ``true``, ``false`` or ``search``.
        aggregation_template: Template choices; each holds ``{responses}``.
        mutation: How the prompt pools grow.
        racing: How repeats are spent on challengers and the incumbent.
    """

    task: Annotated[str, Field(strict=True, min_length=1)]
    main: RoleSpace
    grader: Annotated[str, Field(strict=True, min_length=1)] | None = None
    repeats: _PositiveInt = 1
    cycles: _IntField = IntRange(0, 0)
    layer_agents: LayerSpace | None = None
    same_model: Annotated[bool | Literal["search"], BeforeValidator(_same_model)] = False
    aggregation_template: Annotated[tuple[_Template, ...], BeforeValidator(_choices)] = (
        DEFAULT_AGGREGATION_TEMPLATE,
    )
    mutation: MutationSpace = MutationSpace()
    racing: RacingSpace = RacingSpace()

    def __post_init__(self) -> None:
        if self.cycles.high > 0 and self.layer_agents is None:
            raise ValueError("layer_agents: required when cycles can be above 0")

    @property
    def models(self) -> tuple[str, ...]:
        """Every model the space can call, main models first, without repeats."""
        layer = self.layer_agents.models if self.layer_agents and self.cycles.high else ()
        return tuple(dict.fromkeys((*self.main.models, *layer)))

    @property
    def mutator_model(self) -> str:
        """The model that writes prompt variants."""
        return self.mutation.model or self.main.models[0]

    def seed_prompts(self) -> dict[str, tuple[str, ...]]:
        """Generation 0 of every role's prompt pool."""
        prompts = {MAIN: self.main.prompts}
        if self.layer_agents is not None:
            prompts[LAYER] = self.layer_agents.prompts
        return prompts

    def with_max_tokens(self, max_tokens: int) -> SearchSpace:
        """Returns a copy where every agent's max_tokens is fixed to ``max_tokens``."""
        layer = self.layer_agents
        return replace(
            self,
            main=replace(self.main, max_tokens=(max_tokens,)),
            layer_agents=None if layer is None else replace(layer, max_tokens=(max_tokens,)),
        )

    def with_repeats(self, repeats: int) -> SearchSpace:
        """Returns a copy with ``repeats`` runs per trial."""
        return replace(self, repeats=repeats)

    def with_incumbent_runs(self, runs: int) -> SearchSpace:
        """Returns a copy whose incumbent always has ``runs`` runs (max_runs raised to fit)."""
        racing = RacingSpace(runs, max(runs, self.racing.max_runs))
        return replace(self, racing=racing)

    def suggest(self, trial: optuna.Trial, pool: PromptChooser) -> MoAConfig:
        """Builds a trial's config, suggesting only the parameters it uses.

        Parameter names: ``cycles``, ``same_model``, ``model`` (Self-MoA) or ``main_model``
        and ``layer_{i}_model``, ``main_temperature``, ``layer_{i}_temperature``,
        ``main_max_tokens``, ``layer_max_tokens``, ``layer_agents``, ``aggregation_template``
        (an index), and the prompt pool's own names.
        """
        cycles = self.cycles.suggest(trial, "cycles")
        same = self.same_model
        if same == "search":
            same = cycles > 0 and bool(trial.suggest_categorical("same_model", [False, True]))
        shared = _pick(trial, "model", self.main.models) if same else None
        main = AgentSpec(
            name=MAIN,
            model=shared or _pick(trial, "main_model", self.main.models),
            temperature=self.main.temperature.suggest(trial, "main_temperature"),
            max_tokens=_pick(trial, "main_max_tokens", self.main.max_tokens),
            system_prompt=pool.suggest(trial, MAIN),
        )
        if cycles == 0 or self.layer_agents is None:
            return MoAConfig(main=main, cycles=0, aggregation_template=self.aggregation_template[0])
        layer = self.layer_agents
        count = layer.count.suggest(trial, "layer_agents")
        max_tokens = _pick(trial, "layer_max_tokens", layer.max_tokens)
        agents = tuple(
            AgentSpec(
                name=f"agent_{i + 1}",
                model=shared or _pick(trial, f"layer_{i}_model", layer.models),
                temperature=layer.temperature.suggest(trial, f"layer_{i}_temperature"),
                max_tokens=max_tokens,
                system_prompt=pool.suggest(trial, LAYER, i),
            )
            for i in range(count)
        )
        template = _pick(
            trial, "aggregation_template", tuple(range(len(self.aggregation_template)))
        )
        return MoAConfig(
            main=main,
            cycles=cycles,
            layer_agents=agents,
            aggregation_template=self.aggregation_template[template],
        )

    def map_models(self, config: MoAConfig) -> MoAConfig:
        """Maps a config's models onto the space's model choices.

        A model the space offers is kept; the others, in order of first appearance (main
        agent first), take the space's models in turn, so distinct models stay distinct
        where the space has enough of them.
        """
        offered = self.models
        mapping: dict[str, str] = {}
        for model in config.models:
            if model not in offered:
                mapping[model] = offered[len(mapping) % len(offered)]
        return config.with_models(mapping)

    def baseline_params(
        self, config: MoAConfig, prompt_params: PromptParams
    ) -> tuple[dict[str, Any], MoAConfig]:
        """Returns trial params reproducing ``config`` as closely as the space allows.

        Models are mapped with :meth:`map_models`; numbers are clipped and snapped to the
        space's ranges; prompts and templates the space lacks fall back to its first ones.

        Args:
            config: The baseline config.
            prompt_params: Gives the pool's params for a role's prompt text.

        Returns:
            The params to enqueue and the mapped config they aim at.
        """
        target = self.map_models(config)
        params: dict[str, Any] = {}
        cycles = self.cycles.nearest(target.cycles)
        if not self.cycles.fixed:
            params["cycles"] = cycles
        layer = self.layer_agents if cycles > 0 else None
        agents = list(target.layer_agents)
        everyone = [target.main, *agents] if layer is not None else [target.main]
        one_model = len({a.model for a in everyone}) == 1 and target.main.model in self.main.models
        same = self.same_model
        if same == "search":
            same = layer is not None and one_model
            if layer is not None:
                params["same_model"] = same
        if same:
            _put(params, "model", target.main.model, self.main.models)
        else:
            _put(params, "main_model", target.main.model, self.main.models)
        _put(params, "main_max_tokens", target.main.max_tokens, self.main.max_tokens)
        if not self.main.temperature.fixed:
            params["main_temperature"] = self.main.temperature.nearest(target.main.temperature)
        params.update(prompt_params(MAIN, 0, target.main.system_prompt))
        if layer is None:
            return params, target
        count = layer.count.nearest(len(agents))
        if not layer.count.fixed:
            params["layer_agents"] = count
        agents = (agents + [agents[-1]] * count)[:count] if agents else []
        if agents:
            _put(params, "layer_max_tokens", agents[0].max_tokens, layer.max_tokens)
        for i, agent in enumerate(agents):
            if not same:
                _put(params, f"layer_{i}_model", agent.model, layer.models)
            if not layer.temperature.fixed:
                params[f"layer_{i}_temperature"] = layer.temperature.nearest(agent.temperature)
            params.update(prompt_params(LAYER, i, agent.system_prompt))
        templates = self.aggregation_template
        if len(templates) > 1:
            wanted = target.aggregation_template
            params["aggregation_template"] = templates.index(wanted) if wanted in templates else 0
        return params, target


class PromptParams(Protocol):
    """Gives the pool's trial params that select ``text`` for agent ``index`` of ``role``."""

    def __call__(self, role: str, index: int, text: str) -> dict[str, Any]: ...


def _pick(trial: optuna.Trial, name: str, choices: Sequence[Any]) -> Any:
    if len(choices) == 1:
        return choices[0]
    return trial.suggest_categorical(name, list(choices))


def _put(params: dict[str, Any], name: str, value: Any, choices: Sequence[Any]) -> None:
    if len(choices) == 1:
        return
    if value in choices:
        params[name] = value
    elif isinstance(value, int | float) and all(isinstance(c, int | float) for c in choices):
        params[name] = min(choices, key=lambda c: (abs(c - value), c))
    else:
        params[name] = choices[0]


_SPACE_ADAPTER = TypeAdapter(SearchSpace)


def space_from_dict(data: Any, source: str = "<space>") -> SearchSpace:
    """Builds a space from its YAML form.

    Raises:
        SpaceError: The data is invalid; the message names ``source`` and the field path.
    """
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: expected a mapping at the top level, got {kind_of(data)}")
    try:
        space = _SPACE_ADAPTER.validate_python(data)
    except ValidationError as error:
        raise SpaceError(format_validation_error(source, error, SearchSpace)) from None
    problems = _placeholder_errors(space)
    if problems:
        raise SpaceError(f"{source}: " + "; ".join(problems))
    return space


def _placeholder_errors(space: SearchSpace) -> list[str]:
    """Seed prompts that would get earlier answers but have no ``{helper_response}``.

    The main agent gets them when ``cycles`` can be 1 or more, layer agents when it can be
    2 or more.
    """
    roles = [("main", space.main.prompts)] if space.cycles.high >= 1 else []
    if space.cycles.high >= 2 and space.layer_agents is not None:
        roles.append(("layer_agents", space.layer_agents.prompts))
    return [
        f"{role}.prompts.{i}: has no {HELPER_RESPONSE}, so this agent would never see the "
        f"earlier answers; add {HELPER_RESPONSE} where they belong"
        for role, prompts in roles
        for i, prompt in enumerate(prompts)
        if HELPER_RESPONSE not in prompt
    ]


def task_and_grader(space: SearchSpace, source: str = "<space>") -> tuple[list[Task], BaseGrader]:
    """Loads the space's task instances and its grader (the task's own if none is named).

    A task file's path is taken relative to the space file (``source``), if it is a file.

    Raises:
        SpaceError: Unknown task or grader; the message names ``source`` and the field.
    """
    from graders import GraderError, get_grader, load_tasks

    try:
        tasks = list(load_tasks(space_task_location(space, source)))
    except GraderError as error:
        raise SpaceError(f"{source}: task: {error}") from None
    if not tasks:
        raise SpaceError(f"{source}: task: {space.task!r} has no instances")
    try:
        grader = get_grader(space.grader or tasks[0].grader)
    except GraderError as error:
        raise SpaceError(f"{source}: grader: {error}") from None
    return tasks, grader


def space_task_location(space: SearchSpace, source: str = "<space>") -> str:
    """The space's task: a shipped name, or its file's absolute path (relative to ``source``)."""
    base = Path(source).parent if Path(source).is_file() else None
    return task_location(space.task, base)


def load_space(path: str | Path, *, check_task: bool = True) -> SearchSpace:
    """Loads and validates a YAML search space.

    Args:
        path: The YAML file.
        check_task: Also check that the task and grader exist.

    Raises:
        SpaceError: The file is missing, not YAML, or invalid.
    """
    path = Path(path)
    data = read_yaml(path, SpaceError)
    space = space_from_dict(data, str(path))
    if check_task:
        task_and_grader(space, str(path))
    return space
