"""Per-instance evaluation of a trial on a suite: a seeded sample, scores reported one by one.

Each problem's score (mean over repeats) is reported with ``trial.report(score, step=i)``,
``i`` the problem's index in the dev split, so that a pruner such as Optuna's
``WilcoxonPruner`` pairs the same problem across trials. Problems are evaluated in a shuffled
order, seeded by the search seed and the trial number.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import optuna

from graders._base import Task
from optimizer._evaluate import RunResult
from optimizer._storage import batched_writes

__all__ = ["PRUNERS", "InstanceReporter", "InstanceSampling", "make_pruner"]

PRUNERS = ("none", "wilcoxon")
"""Pruners ``--pruner`` accepts."""


@dataclass(frozen=True)
class InstanceSampling:
    """How a trial on a suite picks its problems.

    Attributes:
        count: Problems per trial (a seeded sample); None: all of them.
        seed: Seeds the sample and order, with the trial number.
    """

    count: int | None = None
    seed: int = 0

    def choose(self, tasks: Sequence[Task], trial_number: int) -> tuple[Task, ...]:
        """The trial's problems, in the shuffled order they are evaluated."""
        order = list(range(len(tasks)))
        random.Random(f"{self.seed}:{trial_number}").shuffle(order)
        if self.count is not None:
            order = order[: self.count]
        return tuple(tasks[i] for i in order)


class InstanceReporter:
    """Reports each problem's score to the trial once its repeats are graded; prunes.

    Args:
        trial: The running trial.
        tasks: All the problems the trial may see (their index is the report step).
        repeats: Runs per problem.
        chosen: How many problems the trial evaluates.
    """

    def __init__(
        self, trial: optuna.Trial, tasks: Sequence[Task], repeats: int, chosen: int
    ) -> None:
        self.trial = trial
        self.steps = {task.name: index for index, task in enumerate(tasks)}
        self.repeats = repeats
        self.chosen = chosen
        self.scores: list[float] = []
        self.pruned = False
        self._runs: dict[str, list[float]] = {}

    def __call__(self, result: RunResult) -> None:
        """Takes one graded run; reports its problem once complete.

        A run that ends after the pruning, while the trial's other runs are being cancelled,
        is reported and counted too, without raising again: the stored attrs always match
        the reported problems.

        Raises:
            optuna.TrialPruned: The study's pruner stops the trial; its partial mean and the
                problems done are stored as the user attrs ``mean`` and ``instances_done``.
        """
        runs = self._runs.setdefault(result.task.name, [])
        runs.append(result.score)
        if len(runs) < self.repeats:
            return
        score = statistics.fmean(runs)
        self.scores.append(score)
        self.trial.report(score, step=self.steps[result.task.name])
        if self.pruned:
            self._store_partial()
        elif len(self.scores) < self.chosen and self.trial.should_prune():
            self.pruned = True
            mean = self._store_partial()
            raise optuna.TrialPruned(
                f"pruner: clearly worse than the best trial after {len(self.scores)} of "
                f"{self.chosen} problems (partial mean {mean:.4g})"
            )

    def _store_partial(self) -> float:
        mean = statistics.fmean(self.scores)
        with batched_writes(self.trial.storage):
            self.trial.set_user_attr("mean", mean)
            self.trial.set_user_attr("instances_done", len(self.scores))
        return mean


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """``none`` (never prunes) or ``wilcoxon`` (Optuna's WilcoxonPruner, p < 0.1)."""
    if name == "wilcoxon":
        import warnings

        # With --instances each trial samples its own problems, so the pruner pairs a trial
        # with the best one on the problems both ran, as meant; Optuna warns at every step.
        warnings.filterwarnings(
            "ignore", message="WilcoxonPruner finds steps existing in the current trial"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=0.1)
    return optuna.pruners.NopPruner()
