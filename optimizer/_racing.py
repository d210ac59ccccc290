"""Racing: the runs of one config pool across trials, and extra runs go where they decide.

A config is identified by its content (:func:`config_key`: models, temperatures, prompt
texts, cycles, template, max_tokens; not agent names nor parameter names, since prompts are
drawn through per-generation parameters). Run ``r`` of a config is repeat index ``r`` (sample
index ``r``, seed ``base + r``), so every run of a config is a new draw and the runs made by
different trials, the racing and the confirm stage pool together (:func:`study_runs`):

- a trial's runs are its user attrs ``config_key``, ``repeat_indices`` and ``scores``;
- runs made outside trials (the confirm stage) are study user attrs ``runs:<key>:<first>``.

Racing, as in irace and SMAC's intensification: a trial's config runs ``repeats`` times
(once by default). The *incumbent* is the config with the highest 95% lower confidence bound
among those with at least ``incumbent_runs`` runs (:func:`rank_key`), so it always has that
many. A challenger that comes close to it (pooled mean at least the incumbent's mean minus its
standard error) or has no incumbent to face gets more runs, doubling, up to the incumbent's
count (at least ``incumbent_runs``, at most ``max_runs``), on up to ``max_runs`` while its
mean is ahead but its bound is not, and stops as soon as it falls behind (:func:`more_runs`).
It replaces the incumbent only once its own bound is higher. Bounds borrow strength from
the whole study: each config's sample variance is shrunk toward the pooled within-config
variance (weight :data:`PRIOR_RUNS` runs), so three runs that happen to agree do not make a
tight bound.

What the sampler sees: Optuna cannot re-tell a finished trial, so each trial is told its
config's pooled mean at tell time (its own runs, its racing runs and every earlier run of the
same config). TPE therefore models means, not single lucky draws; an earlier trial of the
config keeps the mean as it stood then, and a config sampled again is told the newer mean.
The best config is never read from trial values: it is the incumbent of the pooled runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.trial import TrialState
from scipy.stats import t as student_t  # type: ignore[import-untyped]

__all__ = [
    "PRIOR_RUNS",
    "REPRODUCE_RUNS",
    "RUNS_ATTR",
    "ConfigRuns",
    "best_config",
    "confidence_interval",
    "config_key",
    "incumbent",
    "lower_confidence_bound",
    "more_runs",
    "pooled_std",
    "prediction_interval",
    "rank_key",
    "study_runs",
    "upper_confidence_bound",
]

RUNS_ATTR = "runs"
"""Study user attrs ``runs:<config key>:<first repeat>``: runs made outside trials."""

PRIOR_RUNS = 4
"""Weight, in runs, of the study's pooled within-config spread in every config's bounds."""

REPRODUCE_RUNS = 10
"""The reproduction the reported prediction is for: ``reproduce --repeats 10``."""


def _spread(scores: Sequence[float], prior: float) -> tuple[float, int]:
    """The standard deviation the bounds use and its degrees of freedom.

    With a prior (the study's pooled within-config std), the sample variance is shrunk
    toward it as if the prior came from :data:`PRIOR_RUNS` more runs: a config whose few
    runs happened to agree does not get a tight bound.
    """
    n = len(scores)
    variance = statistics.variance(scores) if n > 1 else 0.0
    if prior <= 0:
        return math.sqrt(variance), n - 1
    df = n - 1 + PRIOR_RUNS
    return math.sqrt((PRIOR_RUNS * prior**2 + (n - 1) * variance) / df), df


def _margin(scores: Sequence[float], prior: float, level: float) -> float:
    std, df = _spread(scores, prior)
    if df < 1 or std == 0:
        return 0.0
    return float(student_t.ppf(level, df)) * std / math.sqrt(len(scores))


def lower_confidence_bound(scores: Sequence[float], prior: float = 0.0) -> float:
    """One-sided 95% lower confidence bound of the mean: ``mean - t * std / sqrt(n)``.

    Args:
        scores: The runs' scores.
        prior: The study's pooled within-config std (0: none; then one score is its own
            bound, since no spread is known).
    """
    if not scores:
        return 0.0
    return statistics.fmean(scores) - _margin(scores, prior, 0.95)


def upper_confidence_bound(scores: Sequence[float], prior: float = 0.0) -> float:
    """One-sided 95% upper bound; with the lower bound, a two-sided 90% interval."""
    if not scores:
        return 0.0
    return statistics.fmean(scores) + _margin(scores, prior, 0.95)


def confidence_interval(scores: Sequence[float], prior: float = 0.0) -> tuple[float, float]:
    """Two-sided 95% confidence interval of the mean (Student's t)."""
    if not scores:
        return (0.0, 0.0)
    mean, margin = statistics.fmean(scores), _margin(scores, prior, 0.975)
    return (mean - margin, mean + margin)


def prediction_interval(
    scores: Sequence[float], runs: int, prior: float = 0.0
) -> tuple[float, float]:
    """Two-sided 95% prediction interval for the mean of ``runs`` new runs of the config.

    Wider than the interval of the mean: ``mean +- t * std * sqrt(1/n + 1/runs)``, since the
    new runs' mean has noise of its own. It is what a ``reproduce --repeats runs`` should
    land in, if the runs of ``scores`` were not chosen for being high.
    """
    if not scores:
        return (0.0, 0.0)
    std, df = _spread(scores, prior)
    mean = statistics.fmean(scores)
    if df < 1 or std == 0:
        return (mean, mean)
    margin = float(student_t.ppf(0.975, df)) * std * math.sqrt(1 / len(scores) + 1 / runs)
    return (mean - margin, mean + margin)


def pooled_std(pools: Mapping[str, ConfigRuns]) -> float:
    """The within-config standard deviation pooled over every config with two runs or more.

    0 while fewer than two degrees of freedom are known.
    """
    sums = [((r.n - 1) * r.std**2, r.n - 1) for r in pools.values() if r.n > 1]
    df = sum(d for _, d in sums)
    return math.sqrt(sum(s for s, _ in sums) / df) if df >= 2 else 0.0


def config_key(config_dict: Mapping[str, Any]) -> str:
    """A config's identity from its dict form (``config_to_dict``), without agent names."""
    data = json.loads(json.dumps(config_dict))
    data.get("main", {}).pop("name", None)
    for agent in data.get("layer_agents", []):
        agent.pop("name", None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ConfigRuns:
    """Every run of one config in a study.

    Attributes:
        key: The config's :func:`config_key`.
        config: The config's dict form.
        trials: Trials that ran it, in order.
        repeats: Repeat index of each run, ascending.
        scores: Score of each run, in the order of ``repeats``.
        max_score: Points a run can earn.
        prior: The study's pooled within-config std the bounds shrink toward (0: none).
    """

    key: str
    config: dict[str, Any]
    trials: tuple[int, ...]
    repeats: tuple[int, ...]
    scores: tuple[float, ...]
    max_score: float
    prior: float = 0.0

    @property
    def n(self) -> int:
        """Runs."""
        return len(self.scores)

    @property
    def mean(self) -> float:
        """Mean score."""
        return statistics.fmean(self.scores) if self.scores else 0.0

    @property
    def std(self) -> float:
        """Sample standard deviation (0 with one run)."""
        return statistics.stdev(self.scores) if self.n > 1 else 0.0

    @property
    def sem(self) -> float:
        """Standard error of the mean."""
        return self.std / math.sqrt(self.n) if self.n else 0.0

    @property
    def lcb(self) -> float:
        """One-sided 95% lower confidence bound of the mean (shrunk toward ``prior``)."""
        return lower_confidence_bound(self.scores, self.prior)

    @property
    def ucb(self) -> float:
        """One-sided 95% upper confidence bound of the mean (shrunk toward ``prior``)."""
        return upper_confidence_bound(self.scores, self.prior)

    @property
    def interval(self) -> tuple[float, float]:
        """Two-sided 95% confidence interval of the mean (shrunk toward ``prior``).

        Cut to the scores a run can get, 0 to ``max_score`` (when known): a mean outside
        them is impossible, however few and spread the runs.
        """
        return self._possible(*confidence_interval(self.scores, self.prior))

    def predicted(self, runs: int) -> tuple[float, float]:
        """Where the mean of ``runs`` new runs should land: a 95% prediction interval.

        Shrunk toward ``prior`` and cut to 0 to ``max_score``, as :attr:`interval`.
        """
        return self._possible(*prediction_interval(self.scores, runs, self.prior))

    def _possible(self, low: float, high: float) -> tuple[float, float]:
        """Cut to the means a run can get: 0 to ``max_score`` (when known)."""
        return max(0.0, low), min(self.max_score, high) if self.max_score > 0 else high

    @property
    def best(self) -> float:
        """The best single run."""
        return max(self.scores, default=0.0)

    @property
    def max_rate(self) -> float:
        """Share of runs that earned every point."""
        if not self.scores or self.max_score <= 0:
            return 0.0
        return sum(s >= self.max_score for s in self.scores) / self.n

    def next_repeat(self) -> int:
        """The first repeat index no run has used."""
        return max(self.repeats, default=-1) + 1

    def with_runs(self, repeats: Sequence[int], scores: Sequence[float]) -> ConfigRuns:
        """A copy with more runs (a repeat index already present keeps its first score)."""
        merged = dict(zip(self.repeats, self.scores, strict=True))
        for repeat, score in zip(repeats, scores, strict=True):
            merged.setdefault(repeat, score)
        order = sorted(merged)
        return replace(self, repeats=tuple(order), scores=tuple(merged[r] for r in order))

    def stats(self) -> dict[str, Any]:
        """Returns the statistics as JSON-ready data."""
        low, high = self.interval
        predicted = self.predicted(REPRODUCE_RUNS)
        return {
            "config_key": self.key,
            "trials": list(self.trials),
            "n": self.n,
            "mean": self.mean,
            "std": self.std,
            "lcb": self.lcb,
            "ucb": self.ucb,
            "ci_low": low,
            "ci_high": high,
            "reproduce_interval": {
                "repeats": REPRODUCE_RUNS,
                "low": predicted[0],
                "high": predicted[1],
            },
            "prior_std": self.prior,
            "best_single_run": self.best,
            "max_rate": self.max_rate,
            "max_score": self.max_score,
            "scores": list(self.scores),
            "repeats": list(self.repeats),
        }


def _number(value: Any, default: float = 0.0) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return default


def study_runs(study: optuna.Study) -> dict[str, ConfigRuns]:
    """Pools the runs of every config of ``study``: complete trials, then ``runs:`` attrs.

    A repeat index recorded twice (two workers ran it at once) keeps its first score. Every
    config's bounds shrink toward the study's :func:`pooled_std`. The confirm stage's fresh
    runs are not pooled here (see :func:`study_best`).
    """
    found: dict[str, ConfigRuns] = {}

    def add(
        key: str, config: Any, trial: int | None, repeats: list[int], scores: list[float], top: Any
    ) -> None:
        runs = found.get(key)
        if runs is None:
            runs = ConfigRuns(key, dict(config), (), (), (), _number(top))
        if trial is not None and trial not in runs.trials:
            runs = replace(runs, trials=(*runs.trials, trial))
        found[key] = runs.with_runs(repeats, scores)

    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        config, scores = attrs.get("config"), attrs.get("scores")
        if not isinstance(config, dict) or not isinstance(scores, list) or not scores:
            continue
        key = str(attrs.get("config_key") or config_key(config))
        repeats = attrs.get("repeat_indices")
        if not isinstance(repeats, list) or len(repeats) != len(scores):
            repeats = list(range(len(scores)))
        add(key, config, trial.number, repeats, scores, attrs.get("max_score"))
    for name, value in sorted(study.user_attrs.items()):
        parts = name.split(":")
        if len(parts) != 3 or parts[0] != RUNS_ATTR or not isinstance(value, dict):
            continue
        if parts[1] in found or isinstance(value.get("config"), dict):
            config = value.get("config") or found[parts[1]].config
            add(parts[1], config, None, value["repeats"], value["scores"], value.get("max_score"))
    prior = pooled_std(found)
    return {key: replace(runs, prior=prior) for key, runs in found.items()}


def rank_key(runs: ConfigRuns, incumbent_runs: int) -> tuple[int, float, float, int]:
    """Orders configs for the title of best: enough runs first, then the lower bound, mean.

    A config with fewer than ``incumbent_runs`` runs never outranks one with that many, so
    one lucky run cannot take the title.
    """
    first = min(runs.trials, default=10**9)
    return (min(runs.n, incumbent_runs), runs.lcb, runs.mean, -first)


def incumbent(pools: Mapping[str, ConfigRuns], incumbent_runs: int) -> ConfigRuns | None:
    """The best config with at least ``incumbent_runs`` runs (highest lower bound), or None."""
    ready = [r for r in pools.values() if r.n >= incumbent_runs]
    return max(ready, key=lambda r: rank_key(r, incumbent_runs), default=None)


def best_config(pools: Mapping[str, ConfigRuns], incumbent_runs: int) -> ConfigRuns | None:
    """The incumbent, or while none has enough runs the config with most runs and bound."""
    return max(pools.values(), key=lambda r: rank_key(r, incumbent_runs), default=None)


def more_runs(
    challenger: ConfigRuns,
    leader: ConfigRuns | None,
    *,
    incumbent_runs: int,
    max_runs: int,
) -> int:
    """How many more runs ``challenger`` gets now (0: the race is over for this trial).

    With no incumbent yet, a config runs until it has ``incumbent_runs`` runs (it becomes
    one). Against an incumbent, a challenger whose mean is at least the incumbent's mean
    minus its standard error doubles its runs up to the incumbent's count (between
    ``incumbent_runs`` and ``max_runs``), and on up to ``max_runs`` while its mean is ahead
    but its bound not (it has not replaced the incumbent yet); one that falls behind stops.
    The incumbent itself gets no extra runs here.
    """
    if leader is None or leader.key == challenger.key:
        target = incumbent_runs
    elif challenger.mean < leader.mean - leader.sem:
        return 0
    else:
        target = max(incumbent_runs, leader.n)
        ahead = challenger.mean > leader.mean and challenger.lcb <= leader.lcb
        if challenger.n >= target and ahead:
            target = max_runs  # ahead on the mean, behind on the bound: more runs decide
    wanted = min(target, max_runs) - challenger.n
    if wanted <= 0:
        return 0
    return min(wanted, max(1, challenger.n))
