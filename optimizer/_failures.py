"""Why a study's trials fail, and when a search that keeps failing pauses or stops.

When most trials end with the same low score, the task (a test file that imports the wrong
module) or the models (no answer defines the function) are at fault rather than the configs;
the search's summary then names the causes, read from the graders' feedback, with counts.

A trial that raises is failed with a short cause (:func:`error_cause`: ``model call: HTTP
503``, ``grader: RuntimeError``...) in its ``cause`` user attr, and the summary counts failed
trials by cause (:func:`cause_counts`). :class:`FailureStreak` decides what failures in a row
do to the search: an endpoint that stopped answering for a while (its calls' retries ran out
on 5xx, 429, timeouts or dropped connections) pauses new trials for as long as it has been
failing, and stops the search only after :data:`MAX_OUTAGE`; any other failure stops it after
a few in a row, since retrying will not help.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from optimizer._evaluate import GradingError
from optimizer.providers import ProviderError

__all__ = [
    "CAUSE_ATTR",
    "MAX_OUTAGE",
    "FailureCause",
    "FailureStreak",
    "cause_counts",
    "common_failures",
    "error_cause",
    "failure_cause",
]

CAUSE_ATTR = "cause"
"""Trial user attr: the short cause a failed trial is counted by (its ``error`` has it all)."""
MAX_OUTAGE = 600.0
"""Seconds an endpoint may keep failing every trial before the search stops."""
MIN_PAUSE = 5.0
MAX_PAUSE = 60.0
"""Bounds in seconds of the pause before new trials while the endpoint fails."""

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


def error_cause(error: BaseException) -> str:
    """The short cause of a trial's failure, to count failures by.

    ``model call: HTTP 503``, ``model call: connection error (RemoteProtocolError)``,
    ``grader: RuntimeError``, else the exception's type.
    """
    if isinstance(error, ProviderError):
        return f"model call: {error.cause or 'failed'}"
    if isinstance(error, GradingError):
        return f"grader: {error.cause}"
    return type(error).__name__


def cause_counts(failed: Sequence[FrozenTrial]) -> tuple[tuple[str, int], ...]:
    """Failed trials counted by cause, most frequent first.

    A trial failed before causes were recorded, or by an interrupt, is counted by the start
    of its ``error`` (``interrupt (SIGTERM)``, ``interrupted``).
    """
    counts: Counter[str] = Counter()
    for trial in failed:
        cause = trial.user_attrs.get(CAUSE_ATTR)
        if not isinstance(cause, str) or not cause:
            cause = str(trial.user_attrs.get("error") or "unknown").split(":")[0].strip()
        counts[cause] += 1
    return tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


class FailureStreak:
    """The trials that failed in a row, and what they do to the search.

    Args:
        limit: Failures in a row, other than the endpoint's, that stop the search.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.hard = 0
        self.since: float | None = None
        self.resume_at = 0.0
        self.last = ""

    def ended(self, *, failed: bool, transient: bool, detail: str, now: float) -> float:
        """Counts a trial that ended at ``now`` (monotonic seconds).

        Args:
            failed: Whether it failed.
            transient: Whether the endpoint failed it (see ``ProviderError.transient``).
            detail: Its error.
            now: When it ended.

        Returns:
            Seconds new trials now wait (0 unless the endpoint is failing).
        """
        if not failed:
            self.count = self.hard = 0
            self.since, self.resume_at = None, 0.0
            return 0.0
        self.count += 1
        self.last = detail
        if self.since is None:
            self.since = now
        if not transient:
            self.hard += 1
            return self.pause(now)
        wait = min(max(now - self.since, MIN_PAUSE), MAX_PAUSE)
        self.resume_at = max(self.resume_at, now + wait)
        return self.pause(now)

    def pause(self, now: float) -> float:
        """Seconds before a new trial may start."""
        return max(self.resume_at - now, 0.0)

    def stop_reason(self, now: float) -> str | None:
        """Why the failures stop the search, or None."""
        if self.hard >= self.limit:
            return f"repeated failures ({self.count} trials in a row; last: {self.last})"
        if self.since is not None and self.count > self.hard and now - self.since >= MAX_OUTAGE:
            return (
                f"repeated failures (the endpoint failed every trial for {now - self.since:.0f} "
                f"s, {self.count} trials in a row; last: {self.last})"
            )
        return None
