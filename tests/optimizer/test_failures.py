from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from optimizer._evaluate import GradingError
from optimizer._failures import (
    MAX_OUTAGE,
    FailureCause,
    FailureStreak,
    cause_counts,
    common_failures,
    error_cause,
    failure_cause,
)
from optimizer.providers import ProviderError


def test_the_telling_line_of_each_graders_feedback() -> None:
    assert failure_cause("Score 0: no function named 'slugify' was found in the response.") == (
        "no function named 'slugify' was found in the response"
    )
    assert failure_cause(
        "Score 10/120. Tests that lost points:\n- handles_empty (0/10): raised KeyError\n- x: y"
    ) == ("handles_empty (0/10): raised KeyError")
    assert failure_cause("0 of 5 tests passed.\n- test_empty: assert 'a' == ''") == (
        "test_empty: assert 'a' == ''"
    )
    assert failure_cause("") == "the grader gave no feedback"


def study_with(scores: list[tuple[float, str]]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for score, feedback in scores:
        trial = study.ask()
        trial.set_user_attr("mean", score)
        trial.set_user_attr("max_score", 5.0)
        trial.set_user_attr("feedback", feedback)
        study.tell(trial, score)
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    return study


def test_causes_are_named_when_most_trials_share_a_low_score() -> None:
    none = "Score 0: no function named 'f' was found in the response."
    broken = "Score 0: the tests could not be run: pytest collected no tests."
    study = study_with([(0, none), (0, none), (0, broken), (5, "Score 5/5: all passed.")])
    assert common_failures(study.trials) == (
        FailureCause("no function named 'f' was found in the response", 2, 4),
        FailureCause("the tests could not be run: pytest collected no tests", 1, 4),
    )
    assert common_failures(study.trials)[0].line() == (
        "2/4 trials: no function named 'f' was found in the response"
    )


def test_nothing_is_named_without_a_shared_low_score() -> None:
    none = "Score 0: no function named 'f' was found in the response."
    assert common_failures(study_with([(0, none), (0, none), (5, ""), (4, "")]).trials) == ()
    assert common_failures(study_with([(4, "a"), (4, "a"), (4, "a")]).trials) == ()  # not low
    assert common_failures([]) == ()


def test_a_failed_trial_is_counted_by_a_short_cause() -> None:
    assert error_cause(ProviderError("x: HTTP 503: down", cause="HTTP 503")) == (
        "model call: HTTP 503"
    )
    assert error_cause(ProviderError("x: no such model")) == "model call: failed"
    grading = GradingError("grader x failed on kw (repeat 0): KeyError: 'tests'", cause="KeyError")
    assert error_cause(grading) == "grader: KeyError"
    assert error_cause(PermissionError("runs/")) == "PermissionError"


def test_failed_trials_are_counted_by_cause_or_by_the_start_of_their_error() -> None:
    study = optuna.create_study()
    for attrs in (
        {"cause": "model call: HTTP 503", "error": "ProviderError: ..."},
        {"cause": "model call: HTTP 503", "error": "ProviderError: ..."},
        {"cause": "grader: RuntimeError", "error": "GradingError: ..."},
        {"error": "interrupt (SIGTERM)"},
        {},
    ):
        trial = study.ask()
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        study.tell(trial, state=TrialState.FAIL)
    assert cause_counts(study.trials) == (
        ("model call: HTTP 503", 2),
        ("grader: RuntimeError", 1),
        ("interrupt (SIGTERM)", 1),
        ("unknown", 1),
    )


def test_other_failures_in_a_row_stop_the_search_and_a_success_resets_them() -> None:
    streak = FailureStreak(limit=3)
    for now in (1.0, 2.0):
        assert streak.ended(failed=True, transient=False, detail="boom", now=now) == 0.0
    assert streak.stop_reason(2.0) is None
    streak.ended(failed=False, transient=False, detail="", now=3.0)
    for now in (4.0, 5.0, 6.0):
        streak.ended(failed=True, transient=False, detail=f"boom {now:g}", now=now)
    assert streak.stop_reason(6.0) == "repeated failures (3 trials in a row; last: boom 6)"


def test_an_endpoint_outage_pauses_new_trials_for_as_long_as_it_lasted() -> None:
    streak = FailureStreak(limit=3)
    down = {"failed": True, "transient": True, "detail": "HTTP 503"}
    assert streak.ended(**down, now=100.0) == pytest.approx(5.0)  # the shortest pause
    assert streak.pause(103.0) == pytest.approx(2.0)
    assert streak.ended(**down, now=120.0) == pytest.approx(20.0)  # failing for 20 s
    assert streak.ended(**down, now=400.0) == pytest.approx(60.0)  # the longest pause
    for now in (401.0, 402.0, 403.0):
        streak.ended(**down, now=now)
    assert streak.stop_reason(403.0) is None  # many failures in a row, but all the endpoint's
    reason = streak.stop_reason(100.0 + MAX_OUTAGE)
    assert reason is not None and reason.startswith(
        f"repeated failures (the endpoint failed every trial for {MAX_OUTAGE:.0f} s, 6 trials"
    )
    assert streak.ended(failed=False, transient=False, detail="", now=701.0) == 0.0
    assert streak.pause(701.0) == 0.0 and streak.stop_reason(10_000.0) is None
