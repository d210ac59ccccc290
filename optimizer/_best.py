"""The best config of a study, and the fresh runs that say what to expect of it.

Whatever chooses the best config from its runs also flatters it: of many noisy configs, the
one whose runs came out highest wins, so those same runs overstate it (the winner's curse).
The confirm stage therefore works in two steps:

1. **Choose.** The top configs by pooled mean are topped up to ``--confirm-repeats`` runs and
   the one with the highest lower bound is chosen (study user attr ``best``).
2. **Confirm.** The chosen config runs ``--confirm-repeats`` *fresh* runs, with repeat indices
   (and so seeds) from :data:`FRESH_FIRST_REPEAT` on. They are stored apart, as study user
   attrs ``fresh:<config key>:<first repeat>``, are never pooled with the search's runs and
   never choose anything, so their mean is an unbiased estimate of what the config scores.

The interval reported for the best config comes from its fresh runs only: a two-sided 95%
Student's t interval, its spread shrunk toward the study's pooled within-config spread. Beside
it, the 95% prediction interval of a ``reproduce --repeats 10``: where the mean of ten new
runs should land, wider since those runs are noisy too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import optuna

from optimizer._racing import REPRODUCE_RUNS, ConfigRuns, best_config, study_runs

__all__ = [
    "BEST_ATTR",
    "CALL_SEED_ATTR",
    "FRESH_ATTR",
    "FRESH_FIRST_REPEAT",
    "RACING_ATTR",
    "BestRuns",
    "fresh_runs",
    "study_best",
    "study_call_seed",
    "study_incumbent_runs",
]

RACING_ATTR = "racing"
"""Study user attr: the racing settings (``incumbent_runs``, ``max_runs``) of the study."""

FRESH_ATTR = "fresh"
"""Study user attrs ``fresh:<config key>:<first repeat>``: the chosen config's fresh runs."""

BEST_ATTR = "best"
"""Study user attr naming the config the last confirm stage chose: ``{"config_key": ...}``."""

CALL_SEED_ATTR = "call_seed"
"""Study user attr: the base of its model-call seeds (run ``r`` of a config uses base + r)."""

FRESH_FIRST_REPEAT = 1_000_000
"""Fresh runs use repeat indices (and so seeds) from here on, apart from every search run."""


@dataclass(frozen=True)
class BestRuns:
    """The best config of a study and its runs.

    Attributes:
        search: Its pooled search runs (trials, racing, the confirm stage's top-ups). They
            chose it, so their mean is optimistic.
        fresh: Its fresh runs, made after it was chosen, or None before a confirm stage.
        call_seed: The study's :data:`CALL_SEED_ATTR` (run ``r`` used seed ``call_seed + r``),
            or None if the study predates it.
    """

    search: ConfigRuns
    fresh: ConfigRuns | None
    call_seed: int | None = None

    @property
    def trial(self) -> int:
        """The first trial that ran the config."""
        return min(self.search.trials, default=0)

    @property
    def confirmed(self) -> bool:
        """Whether fresh runs back the reported figures."""
        return self.fresh is not None

    @property
    def runs(self) -> ConfigRuns:
        """The runs to report: the fresh ones once there are, else the search's."""
        return self.fresh if self.fresh is not None else self.search

    @property
    def best_single_run(self) -> float:
        """The best single run of the config, fresh or not."""
        return max(self.search.best, self.fresh.best if self.fresh else 0.0)

    def stats(self) -> dict[str, Any]:
        """The reported statistics (fresh runs once confirmed), the search's beside them."""
        return {
            "trial": self.trial,
            "confirmed": self.confirmed,
            **self.runs.stats(),
            "best_single_run": self.best_single_run,
            "call_seed": self.call_seed,
            "search": self.search.stats(),
        }

    def lines(self) -> list[str]:
        """What a reader needs, in a few sentences: the interval, where it comes from."""
        runs, top = self.runs, f"/{self.search.max_score:g}" if self.search.max_score else ""
        low, high = runs.interval
        pooled = ", ".join(map(str, self.search.trials))
        figures = (
            f"mean {runs.mean:.4g}{top}, std {runs.std:.3g}, 95% interval [{low:.4g}, {high:.4g}]"
        )
        if self.fresh is not None:
            found = (
                f"The {self.search.n} search runs that chose it: mean {self.search.mean:.4g}, "
                f"std {self.search.std:.3g} (optimistic: they made it the winner)."
            )
            first = f"Confirmed on {runs.n} fresh runs after it was chosen: {figures}."
            low, high = runs.predicted(REPRODUCE_RUNS)
            first += (
                f" A reproduce --repeats {REPRODUCE_RUNS} should average within "
                f"[{low:.4g}, {high:.4g}] (95% prediction interval: new runs have noise "
                "of their own)."
            )
        else:
            found = "Not confirmed on fresh runs yet: these runs chose it, so expect less."
            first = f"Its {runs.n} search runs: {figures}."
        return [
            f"Best config: trial {self.trial} (runs pooled over trials {pooled}).",
            first,
            found,
            f"Best single run {self.best_single_run:.4g}{top}: one draw, not what to expect.",
        ]


def fresh_runs(study: optuna.Study, search: ConfigRuns) -> ConfigRuns | None:
    """The fresh runs of ``search``'s config, or None if it has none."""
    repeats: list[int] = []
    scores: list[float] = []
    prefix = f"{FRESH_ATTR}:{search.key}:"
    for name, value in sorted(study.user_attrs.items()):
        if name.startswith(prefix) and isinstance(value, dict):
            repeats += [int(r) for r in value.get("repeats", [])]
            scores += [float(s) for s in value.get("scores", [])]
    if not scores or len(repeats) != len(scores):
        return None
    return replace(search, repeats=(), scores=()).with_runs(repeats, scores)


def study_best(study: optuna.Study, incumbent_runs: int) -> BestRuns | None:
    """The best config of a single-objective ``study`` and its runs, or None.

    The config the last confirm stage chose, if any; else the incumbent of the pooled runs.
    """
    pools = study_runs(study)
    chosen = study.user_attrs.get(BEST_ATTR)
    search = pools.get(str(chosen.get("config_key"))) if isinstance(chosen, dict) else None
    if search is None:
        search = best_config(pools, incumbent_runs)
    if search is None:
        return None
    return BestRuns(search, fresh_runs(study, search), study_call_seed(study))


def study_call_seed(study: optuna.Study) -> int | None:
    """The study's :data:`CALL_SEED_ATTR`, or None if it has none."""
    value = study.user_attrs.get(CALL_SEED_ATTR)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def study_incumbent_runs(study: optuna.Study) -> int:
    """The runs a config needs to be the study's best: its stored ``incumbent_runs`` (3)."""
    racing = study.user_attrs.get(RACING_ATTR)
    return int(racing.get("incumbent_runs", 3)) if isinstance(racing, dict) else 3
