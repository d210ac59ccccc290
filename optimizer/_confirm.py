"""The confirm stage: choose among the top configs, then run the chosen one on fresh seeds.

Once a budget stops the search (:meth:`ConfirmStage._confirm`):

1. **Choose.** The ``confirm_top`` configs with the best pooled means are topped up to
   ``confirm_repeats`` runs each (stored as ``runs:<key>:<first>`` study attrs, pooled like
   every search run) and the one with the highest lower bound is chosen (the ``best`` attr).
2. **Confirm.** The chosen config runs ``confirm_repeats`` fresh times
   (:meth:`ConfirmStage._fresh`), stored apart as ``fresh:<key>:<first>``; what they mean
   is in :mod:`optimizer._best`.

It runs once for a study's finished trials: the first worker to claim it (``confirm_claim``
study attr, under the storage's cross-process lock) runs it, the others skip it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from graders._base import Task
from optimizer._best import BEST_ATTR, FRESH_ATTR, FRESH_FIRST_REPEAT, fresh_runs
from optimizer._budget import _number
from optimizer._catalog import Catalog
from optimizer._config import config_from_dict
from optimizer._evaluate import Evaluation, evaluate, write_transcript
from optimizer._objective import Objective, transcript_path, worker_id
from optimizer._racing import RUNS_ATTR, ConfigRuns, rank_key, study_runs
from optimizer._space import SearchSpace
from optimizer._storage import storage_lock
from optimizer.providers import Router

__all__ = ["CLAIM_ATTR", "ConfirmStage", "Confirmation"]

CLAIM_ATTR = "confirm_claim"
"""Study user attr: the worker running the confirm stage, and for how many finished trials."""


@dataclass(frozen=True)
class Confirmation:
    """A top config after the confirm stage topped its pooled runs up.

    Attributes:
        number: The first trial that ran the config.
        repeats: Runs of the config (every trial's, racing's and the confirm stage's).
        scores: Score of each run.
        mean: Mean score.
        std: Sample standard deviation.
        lcb: One-sided 95% lower confidence bound of the mean (Student's t).
        max_rate: Share of runs that earned every point.
        max_score: Points a run can earn.
        tokens: Tokens the confirm stage spent on this config (every session).
        cost: Its estimated US dollars.
        config_key: The config's key (see :func:`optimizer._racing.config_key`).
        ucb: One-sided 95% upper confidence bound (with ``lcb``, a 90% interval).
    """

    number: int
    repeats: int
    scores: tuple[float, ...]
    mean: float
    std: float
    lcb: float
    max_rate: float
    max_score: float
    tokens: int
    cost: float
    config_key: str = ""
    ucb: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Returns the JSON form."""
        return {
            "config_key": self.config_key,
            "ucb": self.ucb,
            "number": self.number,
            "repeats": self.repeats,
            "scores": list(self.scores),
            "mean": self.mean,
            "std": self.std,
            "lcb": self.lcb,
            "max_rate": self.max_rate,
            "max_score": self.max_score,
            "tokens": self.tokens,
            "cost": self.cost,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Confirmation:
        """Builds it from the stored JSON form."""
        return cls(
            number=int(data["number"]),
            repeats=int(data["repeats"]),
            scores=tuple(float(s) for s in data["scores"]),
            mean=float(data["mean"]),
            std=float(data["std"]),
            lcb=float(data["lcb"]),
            max_rate=float(data["max_rate"]),
            max_score=float(data["max_score"]),
            tokens=int(data["tokens"]),
            cost=float(data["cost"]),
            config_key=str(data.get("config_key", "")),
            ucb=float(data.get("ucb", 0.0)),
        )


class ConfirmStage:
    """The confirm stage of a :class:`optimizer._study.Search` (its base class)."""

    space: SearchSpace
    tasks: tuple[Task, ...]
    router: Router
    catalog: Catalog
    workers: int
    objectives: tuple[str, ...]
    objective: Objective
    study_dir: Path
    confirm_repeats: int
    confirm_top: int
    _interrupt: str | None
    _tasks: set[asyncio.Task[Any]]

    def _notify(self, study: optuna.Study, running: int, message: str) -> None:
        raise NotImplementedError  # the search's progress report (optimizer/_loop.py)

    def _candidates(self, study: optuna.Study) -> list[ConfigRuns]:
        """The configs the confirm stage tops up: the ``confirm_top`` best pooled means.

        In a multi-objective study, only configs of trials on the Pareto front.
        """
        pools = list(study_runs(study).values())
        if len(self.objectives) > 1:
            front = {t.number for t in study.best_trials}
            pools = [p for p in pools if front.intersection(p.trials)]
        # optimistic: the best means get the runs that tell them apart (racing already gave
        # a config that came close to the incumbent its runs, so a lone lucky run is rare here)
        ranked = sorted(pools, key=lambda p: (-p.mean, -p.n, min(p.trials)))
        return ranked[: self.confirm_top]

    async def _confirm(self, study: optuna.Study) -> list[Confirmation]:
        other = await asyncio.to_thread(_claim, study)
        if other is not None:
            self._notify(study, 0, f"confirm stage left to the worker that claimed it ({other})")
            return []
        gate = asyncio.Semaphore(self.workers)

        async def one(runs: ConfigRuns) -> None:
            missing = self.confirm_repeats - runs.n
            if missing <= 0:
                return
            async with gate:
                self._notify(study, 0, f"confirming the config of trial {min(runs.trials)}")
                first = self.objective.reserve(runs, missing)
                await self._more_runs(study, runs, missing, first, RUNS_ATTR)

        candidates = self._candidates(study)
        tasks = [asyncio.create_task(one(c)) for c in candidates]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)
        pools = study_runs(study)
        spend = _confirm_spend(study)
        found = [
            _confirmation(pools[c.key], spend.get(c.key, (0, 0.0)))
            for c in candidates
            if c.key in pools
        ]
        runs = self.space.racing.incumbent_runs
        found.sort(key=lambda c: rank_key(pools[c.config_key], runs), reverse=True)
        if found and len(self.objectives) == 1 and not self._interrupt:
            chosen = pools[found[0].config_key]
            await asyncio.to_thread(study.set_user_attr, BEST_ATTR, {"config_key": chosen.key})
            await self._fresh(study, chosen)
        return found

    def _keep(self, study: optuna.Study, path: Path, evaluation: Evaluation) -> None:
        """Writes a transcript; a failure is reported and the runs still count."""
        try:
            write_transcript(path, evaluation)
        except OSError as error:
            self._notify(study, 0, f"cannot write {path}: {error.strerror or error}")

    async def _fresh(self, study: optuna.Study, chosen: ConfigRuns) -> None:
        """Runs the chosen config ``confirm_repeats`` fresh times (see optimizer/_confirm.py)."""
        known = fresh_runs(study, chosen)
        first = max(FRESH_FIRST_REPEAT, known.next_repeat() if known else 0)
        self._notify(study, 0, f"confirming trial {min(chosen.trials)}'s config on fresh runs")
        await self._more_runs(study, chosen, self.confirm_repeats, first, FRESH_ATTR)

    async def _more_runs(
        self, study: optuna.Study, runs: ConfigRuns, count: int, first: int, kind: str
    ) -> None:
        """Runs ``runs``' config ``count`` times from repeat ``first``, stored as the study
        attr ``<kind>:<key>:<first>`` (``runs`` pool with the search's runs, ``fresh`` not).
        """
        number = min(runs.trials)
        try:
            evaluation = await evaluate(
                config_from_dict(runs.config, f"trial {number}"),
                self.tasks,
                self.router,
                self.objective.grader,
                repeats=count,
                seed=self.objective.seed,
                first=first,
                catalog=self.catalog,
            )
        except Exception as error:  # the others go on; without fresh runs, not confirmed
            self._notify(study, 0, f"confirming trial {number} ({kind} runs) failed: {error}")
            return
        label = "confirm" if kind == RUNS_ATTR else kind
        path = transcript_path(self.study_dir, number)
        self._keep(study, path.with_name(f"{number}-{label}-{first}.jsonl"), evaluation)
        record = {
            "config": runs.config,
            "repeats": list(evaluation.repeat_indices),
            "scores": list(evaluation.scores),
            "max_score": evaluation.max_score,
            "tokens": evaluation.prompt_tokens + evaluation.completion_tokens,
            "cost": evaluation.cost,
        }
        await asyncio.to_thread(study.set_user_attr, f"{kind}:{runs.key}:{first}", record)


def _confirm_spend(study: optuna.Study) -> dict[str, tuple[int, float]]:
    """Tokens and cost of the confirm stage's runs, by config key."""
    spend: dict[str, tuple[int, float]] = {}
    for name, value in study.user_attrs.items():
        parts = name.split(":")
        if len(parts) == 3 and parts[0] == RUNS_ATTR and isinstance(value, dict):
            tokens, cost = spend.get(parts[1], (0, 0.0))
            spend[parts[1]] = (
                tokens + int(_number(value.get("tokens"))),
                cost + _number(value.get("cost")),
            )
    return spend


def _claim(study: optuna.Study) -> str | None:
    """Claims the confirm stage of ``study``'s finished trials for this worker.

    Returns:
        None if this worker runs it, else the worker (``host:pid``) that claimed it first.
        Workers stopped by one budget finish together; only the first confirms. A study
        resumed with more finished trials is confirmed again.
    """
    me = worker_id()
    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    with storage_lock(getattr(study, "_storage", None))():
        claim = study.user_attrs.get(CLAIM_ATTR)
        if isinstance(claim, dict) and claim.get("trials") == finished:
            worker = claim.get("worker")
            if isinstance(worker, dict) and worker != me:
                return f"{worker.get('host')}:{worker.get('pid')}"
        study.set_user_attr(CLAIM_ATTR, {"trials": finished, "worker": me})
    return None


def _confirmation(runs: ConfigRuns, spend: tuple[int, float]) -> Confirmation:
    return Confirmation(
        number=min(runs.trials),
        repeats=runs.n,
        scores=runs.scores,
        mean=runs.mean,
        std=runs.std,
        lcb=runs.lcb,
        max_rate=runs.max_rate,
        max_score=runs.max_score,
        tokens=spend[0],
        cost=spend[1],
        config_key=runs.key,
        ucb=runs.ucb,
    )
