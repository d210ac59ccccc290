"""Opening a search's study: the sampler, the checks that a resumed study is the same search
(objectives, space, task), and the baselines enqueued first."""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from pydantic import TypeAdapter

from optimizer._best import CALL_SEED_ATTR, RACING_ATTR, study_call_seed
from optimizer._budget import Budget
from optimizer._config import MoAConfig, config_to_dict
from optimizer._errors import UserError
from optimizer._instances import make_pruner
from optimizer._objective import DIRECTIONS, Objective
from optimizer._prompts import PromptPool
from optimizer._space import SearchSpace
from optimizer._split import Split, store_split
from optimizer._storage import storage_lock
from optimizer._taskref import TASK_ATTR, TaskRef, changed_parts

__all__ = [
    "CALL_SEED_ATTR",
    "RACING_ATTR",
    "SAMPLERS",
    "SEED_STRIDE",
    "SPACE_ATTR",
    "SearchError",
    "SearchSetup",
    "make_sampler",
]

SAMPLERS = ("tpe", "random", "gp", "nsga2")
SPACE_ATTR = "space"
"""Study user attr: the search space the study was created with."""
SEED_STRIDE = 10_000_000
"""A new study's call seeds start at ``--seed`` times this, so studies with different seeds
draw different answers (with base ``seed`` itself, seeds 2 and 3 shared all but one seed)."""


class SearchError(UserError):
    """A search cannot start as asked (another space for this study, an unusable sampler)."""


def make_sampler(
    name: str, *, seed: int | None, multi_objective: bool, startup_trials: int = 10
) -> BaseSampler:
    """Builds a sampler: ``tpe`` (multivariate, grouped), ``random``, ``gp`` or ``nsga2``.

    Raises:
        SearchError: Unknown name, ``gp`` without its dependencies, or ``gp`` for several
            objectives.
    """
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                multivariate=True,
                group=True,
                constant_liar=True,
                n_startup_trials=startup_trials,
                seed=seed,
            )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "gp":
        if multi_objective:
            raise SearchError("--sampler gp: supports one objective; use tpe or nsga2")
        if not all(importlib.util.find_spec(m) for m in ("torch", "scipy")):
            raise SearchError("--sampler gp: needs torch and scipy (pip install torch scipy)")
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials)
    raise SearchError(f"--sampler: unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def _changed_fields(old: Any, new: Any, path: str = "") -> list[str]:
    """The dotted paths where two stored spaces differ (``main.prompts``, ``cycles.high``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        return [
            changed
            for key in keys
            for changed in _changed_fields(
                old.get(key), new.get(key), f"{path}.{key}" if path else str(key)
            )
        ]
    return [] if old == new else [path or "(the whole space)"]


def _space_key(space: SearchSpace) -> dict[str, Any]:
    data: dict[str, Any] = TypeAdapter(SearchSpace).dump_python(space, mode="json")
    data.pop("repeats", None)
    data.pop("mutation", None)
    data.pop("racing", None)
    return data


class SearchSetup:
    """Opens the study of a :class:`optimizer._study.Search` (its base class)."""

    space: SearchSpace
    study_name: str
    storage: BaseStorage
    budget: Budget
    sampler_name: str
    seed: int | None
    objective: Objective
    objectives: tuple[str, ...]
    baselines: tuple[tuple[str, MoAConfig], ...]
    task: TaskRef | None
    split: Split | None
    pruner: str

    def open_study(self) -> optuna.Study:
        """Creates or loads the study; checks it was made with this space, objectives and task.

        Sets the objective's call seed to the study's (see :data:`CALL_SEED_ATTR`).

        Raises:
            SearchError: The study exists with other objectives, another search space or a
                task whose content changed; the message names what differs.
        """
        directions = [DIRECTIONS[name] for name in self.objectives]
        done = 0
        try:
            existing = optuna.load_study(study_name=self.study_name, storage=self.storage)
        except KeyError:
            existing = None
        if existing is not None:
            done = len(existing.get_trials(deepcopy=False))
            names = existing.user_attrs.get("objectives", ["score"])
            if list(names) != list(self.objectives):
                raise SearchError(
                    f"--objectives: study {self.study_name!r} optimises {','.join(names)}; "
                    "use the same objectives or a new --study name"
                )
        sampler = make_sampler(
            self.sampler_name,
            seed=None if self.seed is None else self.seed + done,
            multi_objective=len(self.objectives) > 1,
            startup_trials=self._startup_trials(),
        )
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=sampler,
            directions=directions,
            load_if_exists=True,
            pruner=make_pruner(self.pruner),
        )
        key = _space_key(self.space)
        with storage_lock(self.storage)():
            attrs = study.user_attrs
            if SPACE_ATTR not in attrs:
                study.set_user_attr(SPACE_ATTR, key)
                study.set_user_attr("objectives", list(self.objectives))
            elif attrs[SPACE_ATTR] != key:
                fields = ", ".join(_changed_fields(attrs[SPACE_ATTR], key))
                raise SearchError(
                    f"--space: study {self.study_name!r} was created with another search space "
                    f"(changed: {fields}); use a new --study name"
                )
            if self.task is not None:
                self._check_task(study, attrs.get(TASK_ATTR))
            if self.split is not None:
                store_split(study, self.split)
            racing = {
                "incumbent_runs": self.space.racing.incumbent_runs,
                "max_runs": self.space.racing.max_runs,
            }
            if attrs.get(RACING_ATTR) != racing:
                study.set_user_attr(RACING_ATTR, racing)
            if existing is None and CALL_SEED_ATTR not in attrs:
                study.set_user_attr(CALL_SEED_ATTR, (self.seed or 0) * SEED_STRIDE)
            # a resumed study keeps its seeds; one made before they were stored used ``seed``
            stored = study_call_seed(study)
        self.objective.seed = (self.seed or 0) if stored is None else stored
        return study

    def _check_task(self, study: optuna.Study, stored: Any) -> None:
        """Stores the task in a new study; refuses a resumed study whose task changed."""
        assert self.task is not None
        before = TaskRef.from_dict(stored)
        if before is None:  # a new study, or one made before tasks were remembered
            study.set_user_attr(TASK_ATTR, self.task.to_dict())
            return
        if before.fingerprint == self.task.fingerprint:
            return
        changed = ", ".join(changed_parts(before.parts, self.task.parts)) or "its content"
        raise SearchError(
            f"{self.task.source}: the task of study {self.study_name!r} changed since the study "
            f"started (changed: {changed}); its trials were scored on the old task: undo the "
            "change or use a new --study name"
        )

    def _startup_trials(self) -> int:
        if self.budget.trials is None:
            return 10
        return max(2, min(10, self.budget.trials // 3))

    def enqueue_baselines(self, study: optuna.Study, pool: PromptPool) -> list[str]:
        """Enqueues each baseline the study has not run (or queued) yet.

        Returns:
            The names enqueued.
        """
        enqueued = []
        with storage_lock(self.storage)():
            trials = study.get_trials(deepcopy=False)
            for name, config in self.baselines:
                taken = any(
                    t.user_attrs.get("baseline") == name and t.state != TrialState.FAIL
                    for t in trials
                )
                if taken:
                    continue
                params, target = self.space.baseline_params(config, pool.params_for)
                study.enqueue_trial(
                    params,
                    user_attrs={"baseline": name, "baseline_config": config_to_dict(target)},
                )
                enqueued.append(name)
        return enqueued
