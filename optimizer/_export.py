"""Exports a study's best config (or its Pareto front) as workshop JSON or our YAML.

The best config of a single-objective study is the one the search reports: the best
confirmed trial when the confirm stage ran (study attrs ``confirm:<n>``), else the completed
trial with the highest score. A multi-objective study exports its whole Pareto front, one
file per config (``-o front.json`` writes ``front-trial12.json``, ``front-trial30.json``...),
so every file imports into the workshop app on its own; on stdout the front is a JSON list
(workshop) or a YAML stream of documents.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from optimizer._config import (
    DEFAULT_AGGREGATION_TEMPLATE,
    DEFAULT_MAX_TOKENS,
    MoAConfig,
    config_from_dict,
    config_to_dict,
    config_to_workshop,
    task_companion,
)
from optimizer._errors import UserError
from optimizer._taskref import TASK_ATTR, TaskRef
from optimizer._yamlfile import dump_yaml

__all__ = [
    "CONFIRM_ATTR_PREFIX",
    "ExportError",
    "ExportFormat",
    "ExportedConfig",
    "best_configs",
    "export_configs",
    "format_for_path",
    "render_configs",
    "study_task",
    "trial_config",
    "workshop_losses",
]

ExportFormat = Literal["workshop", "yaml"]
CONFIRM_ATTR_PREFIX = "confirm:"
"""Study user attrs ``confirm:<trial number>`` written by the search's confirm stage."""


class ExportError(UserError):
    """Nothing to export, or an unusable output path."""


@dataclass(frozen=True)
class ExportedConfig:
    """A trial's config chosen for export.

    Attributes:
        trial: Trial number.
        config: The config.
        values: The trial's objective values.
        mean: Its mean score (the confirm stage's, when it ran).
        repeats: Repeats behind ``mean``, if known.
        confirmed: Whether ``mean`` comes from the confirm stage.
    """

    trial: int
    config: MoAConfig
    values: tuple[float, ...]
    mean: float | None
    repeats: int | None
    confirmed: bool


def trial_config(trial: FrozenTrial) -> MoAConfig:
    """The config a trial ran (its ``config`` user attr, our dict form or its JSON).

    Raises:
        ExportError: The trial has no config attr.
    """
    data = trial.user_attrs.get("config")
    if data is None:
        raise ExportError(f"trial {trial.number} has no 'config' user attr")
    if isinstance(data, str):
        data = json.loads(data)
    return config_from_dict(data, f"trial {trial.number} config")


def _confirmations(study: optuna.Study) -> dict[int, dict[str, Any]]:
    found = {}
    for key, value in study.user_attrs.items():
        if key.startswith(CONFIRM_ATTR_PREFIX) and isinstance(value, dict):
            number = key.removeprefix(CONFIRM_ATTR_PREFIX)
            if number.isdigit():
                found[int(number)] = value
    return found


def _exported(trial: FrozenTrial, confirmation: dict[str, Any] | None) -> ExportedConfig:
    mean = trial.user_attrs.get("mean")
    repeats = trial.user_attrs.get("repeats")
    if confirmation is not None:
        mean, repeats = confirmation.get("mean"), confirmation.get("repeats")
    return ExportedConfig(
        trial=trial.number,
        config=trial_config(trial),
        values=tuple(trial.values or ()),
        mean=float(mean) if isinstance(mean, int | float) else None,
        repeats=int(repeats) if isinstance(repeats, int) else None,
        confirmed=confirmation is not None,
    )


def best_configs(study: optuna.Study) -> list[ExportedConfig]:
    """The best config of ``study``, or its Pareto front (by trial number) if multi-objective.

    Raises:
        ExportError: The study has no completed trial with a config.
    """
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "config" in t.user_attrs
    ]
    if not complete:
        raise ExportError(f"study {study.study_name!r} has no completed trial to export yet")
    confirmations = _confirmations(study)
    if len(study.directions) > 1:
        numbers = {t.number for t in study.best_trials}
        front = sorted((t for t in complete if t.number in numbers), key=lambda t: t.number)
        return [_exported(t, confirmations.get(t.number)) for t in front]
    by_number = {t.number: t for t in complete}
    confirmed = [
        (float(c.get("mean", 0.0)), float(c.get("lcb", 0.0)), -n)
        for n, c in confirmations.items()
        if n in by_number
    ]
    if confirmed:
        number = -max(confirmed)[2]
        return [_exported(by_number[number], confirmations[number])]
    best = max(complete, key=lambda t: (t.values[0], -t.number))
    return [_exported(best, None)]


def study_task(study: optuna.Study) -> TaskRef | None:
    """The task the study searches (stored by the search), or None for an older study."""
    return TaskRef.from_dict(study.user_attrs.get(TASK_ATTR))


def workshop_losses(config: MoAConfig) -> list[str]:
    """What the workshop format cannot hold and an export to it drops.

    Loading a workshop file gives every agent the default max_tokens and template.
    """
    lost = []
    agents = [config.main, *config.layer_agents]
    tokens = sorted({a.max_tokens for a in agents})
    if tokens != [DEFAULT_MAX_TOKENS]:
        lost.append(f"max_tokens ({', '.join(map(str, tokens))})")
    if config.aggregation_template != DEFAULT_AGGREGATION_TEMPLATE:
        lost.append("the aggregation template")
    return lost


def format_for_path(path: Path | None, fmt: str | None) -> ExportFormat:
    """The format: ``fmt`` if given, else from the suffix (``.yaml``/``.yml`` is ours)."""
    if fmt is not None:
        if fmt not in ("workshop", "yaml"):
            raise ExportError(f"--format: expected workshop or yaml, got {fmt!r}")
        return "workshop" if fmt == "workshop" else "yaml"
    if path is not None and path.suffix.lower() in {".yaml", ".yml"}:
        return "yaml"
    return "workshop"


def _ours(config: MoAConfig, task: TaskRef | None) -> dict[str, Any]:
    named = {} if task is None else {"task": task.to_dict(parts=False)}
    return {**named, **config_to_dict(config)}


def _render_one(config: MoAConfig, fmt: ExportFormat, task: TaskRef | None) -> str:
    if fmt == "workshop":
        return json.dumps(config_to_workshop(config), indent=2) + "\n"
    return dump_yaml(_ours(config, task))


def render_configs(
    configs: Sequence[ExportedConfig], fmt: ExportFormat, task: TaskRef | None = None
) -> str:
    """The text printed on stdout: one config, or a JSON list / YAML stream for several.

    Our YAML names ``task`` (the workshop's JSON has no place for it).
    """
    if len(configs) == 1:
        return _render_one(configs[0].config, fmt, task)
    if fmt == "workshop":
        return json.dumps([config_to_workshop(c.config) for c in configs], indent=2) + "\n"
    return "---\n".join(dump_yaml(_ours(c.config, task)) for c in configs)


def export_configs(
    configs: Sequence[ExportedConfig], output: Path, fmt: ExportFormat, task: TaskRef | None = None
) -> list[Path]:
    """Writes one file per config: ``output`` itself for one, ``<stem>-trial<N><suffix>`` else.

    With ``task``, our YAML names it in its ``task:`` field; a workshop JSON file gets it in
    a companion ``<stem>.task.yaml`` beside it (see :func:`optimizer.task_companion`).

    Returns:
        The files written.

    Raises:
        ExportError: ``output`` is a directory or cannot be written.
    """
    if output.is_dir():
        raise ExportError(f"-o: {output} is a directory; give a file name")
    if len(configs) == 1:
        targets = [output]
    else:
        targets = [
            output.with_name(f"{output.stem}-trial{c.trial}{output.suffix}") for c in configs
        ]
    for exported, target in zip(configs, targets, strict=True):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_render_one(exported.config, fmt, task), encoding="utf-8")
            if task is not None and fmt == "workshop":
                named = yaml.safe_dump({"task": task.to_dict(parts=False)}, sort_keys=False)
                task_companion(target).write_text(named, encoding="utf-8")
        except OSError as error:
            raise ExportError(f"-o: cannot write {target}: {error.strerror or error}") from None
    return targets
