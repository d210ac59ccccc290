"""function120 reproduces the workshop's scores: reference points, one-bug variants, hostile
return values, and every way an answer can fail before its tests run."""

from __future__ import annotations

import json

import pytest
from challenge_candidates import (
    CLEAN,
    DO_NOTHING,
    DO_NOTHING_SCORES,
    DO_NOTHING_SNEAKY,
    FULL_SCORES,
    ONE_BUG_VARIANTS,
    ORIGINAL,
    ORIGINAL_SCORES,
    TESTS,
    THOROUGH,
)
from grader_helpers import FAST

from graders import (
    EXPECTED_AVERAGE,
    FUNCTION120_TESTS,
    WRONG_AVERAGE,
    Function120Grader,
    GradeResult,
    Outcome,
    Sandbox,
    Task,
    load_task,
)


@pytest.fixture(scope="module")
def grader() -> Function120Grader:
    return Function120Grader(sandbox=Sandbox(FAST))


@pytest.fixture(scope="module")
def challenge() -> Task:
    return load_task("challenge")


def scores(result: GradeResult) -> tuple[float, ...]:
    assert tuple(t.name for t in result.tests) == TESTS
    return tuple(t.points for t in result.tests)


def test_the_tests_are_the_workshops() -> None:
    assert tuple(t.name for t in FUNCTION120_TESTS) == TESTS
    assert [t.max_points for t in FUNCTION120_TESTS] == list(FULL_SCORES)
    assert sum(FULL_SCORES) == 120
    # The text says 2.75 and 13.75 (the workshop's comments); the workshop's code
    # computes (10*2 + 5*1.5 + 20*0.1) / 10 and that over 2 users, and only these values give
    # the reference points (original 30, correct 120).
    assert round(EXPECTED_AVERAGE, 6) == 2.95
    assert round(WRONG_AVERAGE, 6) == 14.75


def test_original_buggy_function_scores_30(grader: Function120Grader, challenge: Task) -> None:
    result = grader.grade(ORIGINAL, challenge)
    assert scores(result) == ORIGINAL_SCORES
    assert result.score == 30 and result.max_score == 120
    assert result.isolation in ("bwrap", "unisolated")
    average = result.tests[TESTS.index("correct_average_calculation")]
    assert "divided by all users" in average.message
    assert "raised ZeroDivisionError" in result.tests[0].message


def test_do_nothing_dict_scores_87(grader: Function120Grader, challenge: Task) -> None:
    result = grader.grade(DO_NOTHING, challenge)
    assert scores(result) == DO_NOTHING_SCORES
    assert result.score == 87


@pytest.mark.parametrize("code", [CLEAN, THOROUGH], ids=["clean", "thorough"])
def test_correct_functions_score_120(grader: Function120Grader, challenge: Task, code: str) -> None:
    result = grader.grade(code, challenge)
    assert scores(result) == FULL_SCORES
    assert result.score == 120
    assert all(t.passed for t in result.tests)
    assert result.feedback == "Score 120/120: every test passed."


@pytest.mark.parametrize("name", sorted(ONE_BUG_VARIANTS))
def test_one_bug_variants_lose_exactly_their_points(
    grader: Function120Grader,
    challenge: Task,
    name: str,
) -> None:
    code, expected = ONE_BUG_VARIANTS[name]
    result = grader.grade(code, challenge)
    assert scores(result) == expected
    assert result.score == sum(expected)
    lost = [t.name for t in result.tests if not t.passed]
    assert lost == [
        n for n, got, full in zip(TESTS, expected, FULL_SCORES, strict=True) if got < full
    ]
    for test in lost:
        assert f"- {test} (" in result.feedback


def test_sneaky_return_values_gain_nothing(grader: Function120Grader, challenge: Task) -> None:
    sneaky = grader.grade(DO_NOTHING_SNEAKY, challenge)
    plain = grader.grade(DO_NOTHING, challenge)
    assert scores(sneaky) == scores(plain) == DO_NOTHING_SCORES


def test_sneaky_values_would_fool_the_same_checks_in_process() -> None:
    # The checks are the workshop's; given the candidate's live objects instead of plain data,
    # they are fooled as the workshop's in-process grader was. The sandbox's plain data is the
    # whole defence.
    namespace: dict[str, object] = {}
    exec(DO_NOTHING_SNEAKY, namespace)  # trusted test code, in-process on purpose
    function = namespace["calculate_user_metrics"]
    total = 0
    for test in FUNCTION120_TESTS:
        outcomes = []
        for call in test.calls:
            users = json.loads(json.dumps(call.args[0]))
            value = function(users, *call.args[1:])  # type: ignore[operator]
            outcomes.append(Outcome(call.name, "returned", value, (users, *call.args[1:])))
        total += test.score(outcomes)[0]
    assert total > 87


def test_floats_and_ints_compare_as_numbers(grader: Function120Grader, challenge: Task) -> None:
    code = DO_NOTHING.replace("'average_engagement': 0", "'average_engagement': 0.0").replace(
        "'active_count': 0", "'active_count': 0.0"
    )
    assert scores(grader.grade(code, challenge)) == DO_NOTHING_SCORES


def test_answer_in_a_chatty_response(grader: Function120Grader, challenge: Task) -> None:
    response = (
        "<think>The original divides by len(users)... def calculate_user_metrics(): pass</think>\n"
        "Here is the fixed function:\n\n```python\n" + CLEAN + "```\n\nIt handles every case."
    )
    result = grader.grade(response, challenge)
    assert result.score == 120
    assert result.code is not None and "def calculate_user_metrics" in result.code


def test_no_function_scores_zero_and_says_so(grader: Function120Grader, challenge: Task) -> None:
    result = grader.grade("I cannot help with that.", challenge)
    assert result.score == 0 and len(result.tests) == 11
    assert result.isolation == "none" and result.code is None
    reason = "no function named 'calculate_user_metrics' was found in the response"
    assert all(t.message == reason for t in result.tests)
    assert reason in result.feedback


def test_syntax_error_scores_zero_and_says_where(
    grader: Function120Grader, challenge: Task
) -> None:
    broken = "def calculate_user_metrics(users, start_date, end_date):\n    return {\n"
    result = grader.grade(broken, challenge)
    assert result.score == 0
    assert "does not parse" in result.tests[0].message and "line 2" in result.tests[0].message


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("import os", "imports 'os'"),
        ("from subprocess import run", "imports 'subprocess'"),
        ("eval('1')", "uses eval()"),
        ("open('/etc/passwd')", "uses open()"),
        ("().__class__.__base__.__subclasses__()", "uses .__class__"),
    ],
)
def test_rule_violations_score_zero_and_name_the_rule(
    grader: Function120Grader,
    challenge: Task,
    line: str,
    rule: str,
) -> None:
    code = CLEAN.replace('"""\n    if not isinstance', f'"""\n    {line}\n    if not isinstance')
    result = grader.grade(code, challenge)
    assert result.score == 0
    assert "breaks the challenge rules" in result.tests[0].message
    assert rule in result.tests[0].message


def test_rules_can_be_switched_off_by_the_task(grader: Function120Grader, challenge: Task) -> None:
    code = "import os\n" + CLEAN
    relaxed = type(challenge)(
        challenge.name, challenge.prompt, "function120", None, {"rules": "none"}
    )
    assert grader.grade(code, relaxed).score == 120


def test_code_that_fails_to_load_scores_zero(grader: Function120Grader, challenge: Task) -> None:
    result = grader.grade(CLEAN + "\nraise RuntimeError('boom')\n", challenge)
    assert result.score == 0
    assert result.tests[0].message == "the code could not be run: RuntimeError: boom"


def test_a_hanging_test_costs_only_that_test(grader: Function120Grader, challenge: Task) -> None:
    hang = "if len(users) == 100:\n        while True:\n            pass\n"
    code = CLEAN.replace('"""\n    if not isinstance', f'"""\n    {hang}    if not isinstance')
    result = grader.grade(code, challenge)
    expected = list(FULL_SCORES)
    expected[TESTS.index("efficient_implementation")] = 0
    assert scores(result) == tuple(expected)
    assert "timed out" in result.tests[-1].message


def test_a_crash_costs_only_that_test(grader: Function120Grader, challenge: Task) -> None:
    code = "import sys\n" + CLEAN.replace(
        '"""\n    if not isinstance',
        '"""\n    if users == []:\n        sys.exit(0)\n    if not isinstance',
    )
    result = grader.grade(code, challenge)
    expected = list(FULL_SCORES)
    expected[TESTS.index("handles_empty_users_list")] = 0
    assert scores(result) == tuple(expected)
    assert result.tests[1].message == "raised SystemExit: 0"


def test_to_dict_is_the_cli_json(grader: Function120Grader, challenge: Task) -> None:
    data = json.loads(json.dumps(grader.grade(ORIGINAL, challenge).to_dict()))
    assert data["score"] == 30 and data["max_score"] == 120
    assert {"name", "points", "max_points", "passed", "message"} == set(data["tests"][0])
    assert data["isolation"] in ("bwrap", "unisolated")
