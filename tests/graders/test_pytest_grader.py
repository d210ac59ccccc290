"""The pytest grader on the shipped fizzbuzz task."""

from __future__ import annotations

import pytest
from grader_helpers import FAST

from graders import GraderError, PytestGrader, Sandbox, Task, load_task

CORRECT = """
def fizzbuzz(n):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"not a positive integer: {n!r}")
    if n % 15 == 0:
        return "FizzBuzz"
    if n % 3 == 0:
        return "Fizz"
    if n % 5 == 0:
        return "Buzz"
    return str(n)
"""


@pytest.fixture(scope="module")
def grader() -> PytestGrader:
    return PytestGrader(sandbox=Sandbox(FAST))


@pytest.fixture(scope="module")
def fizzbuzz() -> Task:
    return load_task("fizzbuzz")


def test_correct_solution_gets_full_marks(grader: PytestGrader, fizzbuzz: Task) -> None:
    result = grader.grade(f"```python\n{CORRECT}```", fizzbuzz)
    assert result.score == pytest.approx(10) and result.max_score == 10
    assert len(result.tests) == 8 and all(t.passed for t in result.tests)
    assert result.feedback == "8 of 8 tests passed."
    assert {t.name for t in result.tests} >= {"test_plain_numbers", "test_multiples_of_fifteen"}


def test_score_is_the_share_of_tests_passed(grader: PytestGrader, fizzbuzz: Task) -> None:
    no_fizzbuzz = CORRECT.replace('    if n % 15 == 0:\n        return "FizzBuzz"\n', "")
    no_checks = CORRECT.replace("raise ValueError", "return None  #")
    result = grader.grade(no_fizzbuzz, fizzbuzz)
    failed = [t.name for t in result.tests if not t.passed]
    assert failed == ["test_multiples_of_fifteen"]
    assert result.score == pytest.approx(10 * 7 / 8)
    assert "test_multiples_of_fifteen: AssertionError" in result.feedback
    result = grader.grade(no_checks, fizzbuzz)
    assert [t.passed for t in result.tests].count(False) == 4
    assert result.score == pytest.approx(10 * 4 / 8)


def test_a_hanging_test_fails_alone(grader: PytestGrader, fizzbuzz: Task) -> None:
    hangs = CORRECT.replace(
        "    return str(n)", "    while n == 7:\n        pass\n    return str(n)"
    )
    result = grader.grade(hangs, fizzbuzz)
    by_name = {t.name: t for t in result.tests}
    assert not by_name["test_plain_numbers"].passed
    assert "timed out" in by_name["test_plain_numbers"].message
    assert sum(t.passed for t in result.tests) == 7


def test_code_that_fails_at_import_scores_zero(grader: PytestGrader, fizzbuzz: Task) -> None:
    result = grader.grade(CORRECT + "\nraise ImportError('nope')\n", fizzbuzz)
    assert result.score == 0
    assert "ImportError: nope" in result.tests[0].message


def test_missing_function_scores_zero(grader: PytestGrader, fizzbuzz: Task) -> None:
    result = grader.grade("def fizz(n):\n    return n\n", fizzbuzz)
    assert result.score == 0 and result.isolation == "none"
    assert result.tests[0].message == "no function named 'fizzbuzz' was found in the response"


def test_task_without_a_test_file_is_rejected(grader: PytestGrader) -> None:
    task = Task("t", "p", "pytest", "f", {})
    with pytest.raises(GraderError, match=r"task t: params.test_file: required"):
        grader.grade("def f():\n    pass\n", task)
