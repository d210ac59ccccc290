"""Why a study's trials fail: the most common grader message when most trials score low.

When most trials end with the same low score, the task (a test file that imports the wrong
module) or the models (no answer defines the function) are at fault rather than the configs;
the search's summary then names the causes, read from the graders' feedback, with counts.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

__all__ = ["FailureCause", "common_failures", "failure_cause"]

_SCORE = re.compile(r"^score\s+[-\d.,/ ]+[:.]\s*", re.IGNORECASE)
_COUNT = re.compile(r"^\d+ of \d+ \w+")
LOW_SHARE = 0.5
"""A score below this share of the maximum is low."""


@dataclass(frozen=True)
class FailureCause:
    """One cause shared by trials that scored the study's most common low score.

    Attributes:
        message: The grader's message (``no function named 'slugify' was found ...``).
        trials: Trials whose answers failed for this cause.
        out_of: Complete trials of the study.
    """

    message: str
    trials: int
    out_of: int

    def line(self) -> str:
        """``9/10 trials: <message>``."""
        return f"{self.trials}/{self.out_of} trials: {self.message}"


def failure_cause(feedback: str) -> str:
    """The telling line of a grader's feedback, without its score prefix.

    A header (``Score 0/120. Tests that lost points:``, ``0 of 5 tests passed.``) gives way
    to the first listed failure.
    """
    lines = [line.strip() for line in feedback.splitlines() if line.strip() not in ("", "---")]
    if not lines:
        return "the grader gave no feedback"
    first = _SCORE.sub("", lines[0]).strip()
    listed = next((line[2:].strip() for line in lines[1:] if line.startswith("- ")), None)
    if listed and (not first or first.endswith(":") or _COUNT.match(first)):
        first = listed
    return " ".join(first.split()).rstrip(".")[:200] or "the grader gave no feedback"


def common_failures(trials: Sequence[FrozenTrial], top: int = 3) -> tuple[FailureCause, ...]:
    """The ``top`` causes behind the study's most common score, if most trials share a low one.

    Returns:
        Nothing unless over half of the complete trials scored the same mean, and that mean
        is below :data:`LOW_SHARE` of the maximum score.
    """
    complete = [t for t in trials if t.state == TrialState.COMPLETE and not math.isnan(_mean(t))]
    if not complete:
        return ()
    value, count = Counter(round(_mean(t), 6) for t in complete).most_common(1)[0]
    top_score = max(float(t.user_attrs.get("max_score") or 0.0) for t in complete)
    if count * 2 <= len(complete) or value >= LOW_SHARE * top_score:
        return ()
    causes = Counter(
        failure_cause(str(t.user_attrs.get("feedback") or ""))
        for t in complete
        if round(_mean(t), 6) == value
    )
    return tuple(FailureCause(m, n, len(complete)) for m, n in causes.most_common(top))


def _mean(trial: FrozenTrial) -> float:
    value = trial.user_attrs.get("mean")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return float("nan")
