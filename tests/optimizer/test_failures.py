from __future__ import annotations

import optuna

from optimizer._failures import FailureCause, common_failures, failure_cause


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
