"""Exports a study's best config (or its Pareto front) as workshop JSON or our YAML.

The best config of a single-objective study is the one the search reports: the config the
last confirm stage chose, else the one with the highest 95% lower confidence bound over its
pooled runs among those with at least the study's ``incumbent_runs`` runs (see
:mod:`optimizer._best`), never the luckiest single run. Its statistics (the mean, std, n
and interval of its fresh runs, its search runs, its best single run) go beside it: a
comment header in our YAML, and a ``<stem>.stats.json`` companion file, since the
workshop's JSON has no place for them and must stay importable. A multi-objective study
exports its whole Pareto front, one file per config (``-o front.json`` writes
``front-trial12.json``, ``front-trial30.json``...), so every file imports into the workshop
app on its own; on stdout the front is a JSON list
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

from optimizer._best import RACING_ATTR, BestRuns, study_best, study_incumbent_runs
from optimizer._config import (
    DEFAULT_AGGREGATION_TEMPLATE,
    DEFAULT_MAX_TOKENS,
    MoAConfig,
    config_from_dict,
    config_to_dict,
    config_to_workshop,
    save_config,
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
    "stats_header",
    "stats_path",
    "study_task",
    "trial_config",
    "workshop_losses",
    "write_best",
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
        confirmed: Whether ``mean`` comes from the confirm stage (for a study with racing,
            from the fresh runs it made after choosing the config).
        runs: Every run of the config in the study, if known.
    """

    trial: int
    config: MoAConfig
    values: tuple[float, ...]
    mean: float | None
    repeats: int | None
    confirmed: bool
    runs: BestRuns | None = None


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
    if isinstance(study.user_attrs.get(RACING_ATTR), dict):  # made with racing: pooled runs decide
        chosen = study_best(study, study_incumbent_runs(study))
        if chosen is not None and chosen.trial in by_number:
            trial = by_number[chosen.trial]
            return [
                ExportedConfig(
                    trial=trial.number,
                    config=trial_config(trial),
                    values=tuple(trial.values or ()),
                    mean=chosen.runs.mean,
                    repeats=chosen.runs.n,
                    confirmed=chosen.confirmed,
                    runs=chosen,
                )
            ]
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
        one = configs[0]
        header = "" if one.runs is None or fmt != "yaml" else stats_header(one.runs)
        return header + _render_one(one.config, fmt, task)
    if fmt == "workshop":
        return json.dumps([config_to_workshop(c.config) for c in configs], indent=2) + "\n"
    return "---\n".join(dump_yaml(_ours(c.config, task)) for c in configs)


def export_configs(
    configs: Sequence[ExportedConfig], output: Path, fmt: ExportFormat, task: TaskRef | None = None
) -> list[Path]:
    """Writes one file per config: ``output`` itself for one, ``<stem>-trial<N><suffix>`` else.

    With ``task``, our YAML names it in its ``task:`` field; a workshop JSON file gets it in
    a companion ``<stem>.task.yaml`` beside it (see :func:`optimizer.task_companion`). A
    config whose pooled runs are known also gets ``<stem>.stats.json`` beside it (and a
    statistics header in YAML).

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
    written = []
    for exported, target in zip(configs, targets, strict=True):
        runs = exported.runs
        header = "" if runs is None or fmt != "yaml" else stats_header(runs)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(header + _render_one(exported.config, fmt, task), encoding="utf-8")
            written.append(target)
            if task is not None and fmt == "workshop":
                named = yaml.safe_dump({"task": task.to_dict(parts=False)}, sort_keys=False)
                task_companion(target).write_text(named, encoding="utf-8")
            if runs is not None:
                companion = stats_path(target)
                companion.write_text(json.dumps(runs.stats(), indent=2) + "\n", encoding="utf-8")
                written.append(companion)
        except OSError as error:
            raise ExportError(f"-o: cannot write {target}: {error.strerror or error}") from None
    return written


def stats_path(path: Path) -> Path:
    """The statistics file beside an exported config: ``best.json`` -> ``best.stats.json``."""
    return path.with_name(f"{path.stem}.stats.json")


def stats_header(best: BestRuns) -> str:
    """YAML comment lines stating what to expect of the best config, and from which runs."""
    return "".join(f"# {line}\n" for line in best.lines())


def write_best(
    config: MoAConfig,
    runs: BestRuns | None,
    json_path: Path,
    trial: int,
    task: TaskRef | None = None,
) -> tuple[Path, ...]:
    """Writes the best config as workshop JSON (its task in ``<stem>.task.yaml``), our YAML
    (naming its task, with a statistics header) and, when its runs are known,
    ``<stem>.stats.json``.

    Returns:
        The files written: the JSON, the YAML, then the statistics if any.
    """
    yaml_path = json_path.with_suffix(".yaml")
    save_config(config, json_path, task)
    header = "" if runs is None else stats_header(runs)
    yaml_path.write_text(header + _render_one(config, "yaml", task), encoding="utf-8")
    if runs is None:
        return (json_path, yaml_path)
    stats = stats_path(json_path)
    stats.write_text(json.dumps(runs.stats(), indent=2) + "\n", "utf-8")
    return (json_path, yaml_path, stats)
