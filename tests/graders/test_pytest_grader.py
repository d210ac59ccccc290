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


PROXY_TESTS = """
import pytest
import solution
from solution import LIMIT, SlugError, Slug, slugify, sort_in_place


def test_values_and_constants():
    assert slugify("A b") == "a-b" and LIMIT == 3


def test_builtin_exceptions_cross():
    with pytest.raises(ValueError, match="empty"):
        slugify("")


def test_the_candidates_own_exceptions_cross():
    with pytest.raises(SlugError):
        slugify("!!!")
    with pytest.raises(ValueError):  # SlugError derives from ValueError
        slugify("!!!")


def test_arguments_are_changed_in_place():
    items = [3, 1, 2]
    assert sort_in_place(items) is None
    assert items == [1, 2, 3]


def test_classes_do_not_cross():
    Slug("x")


def test_callables_do_not_cross():
    slugify(lambda: 1)


def test_module_attributes():
    assert solution.slugify("C") == "c"
"""

PROXY_SOLUTION = """
LIMIT = 3


class SlugError(ValueError):
    pass


class Slug:
    def __init__(self, text):
        self.text = text


def slugify(text):
    if text == "":
        raise ValueError("empty")
    if text == "!!!":
        raise SlugError("nothing left")
    return text.lower().replace(" ", "-")


def sort_in_place(items):
    items.sort()
"""


def test_tests_reach_the_candidate_through_plain_data(grader: PytestGrader) -> None:
    run = grader.sandbox.run_pytest(
        PROXY_SOLUTION, {"test_proxy.py": PROXY_TESTS}, "test_proxy.py", functions=["slugify"]
    )
    statuses = {o.name.split("::")[1]: (o.status, o.error) for o in run.outcomes}
    passed = [name for name, (status, _) in statuses.items() if status == "passed"]
    assert sorted(passed) == [
        "test_arguments_are_changed_in_place",
        "test_builtin_exceptions_cross",
        "test_module_attributes",
        "test_the_candidates_own_exceptions_cross",
        "test_values_and_constants",
    ]
    assert "Slug is a class of the candidate's" in statuses["test_classes_do_not_cross"][1]
    assert "is not plain data" in statuses["test_callables_do_not_cross"][1]


FORGER = """
import json, os

# Pretend every test passed: on every descriptor, in the old harness's format.
for name in ("test_plain_numbers", "test_multiples_of_fifteen", "session"):
    line = json.dumps({"event": "outcome", "name": name, "status": "passed", "error": ""})
    for fd in range(3, 20):
        try:
            os.write(fd, (line + "\\n").encode())
        except OSError:
            pass


def fizzbuzz(n):
    return "wrong"
"""


def test_the_candidate_cannot_report_test_results(grader: PytestGrader, fizzbuzz: Task) -> None:
    """The verdicts come from the test process, which runs no candidate code."""
    honest = grader.grade('def fizzbuzz(n):\n    return "wrong"\n', fizzbuzz)
    forged = grader.grade(FORGER, fizzbuzz)
    assert honest.score == 0
    assert forged.score <= honest.score


def test_a_candidate_that_patches_its_own_process_still_only_answers_calls(
    grader: PytestGrader, fizzbuzz: Task
) -> None:
    patcher = """
import sys
runner = getattr(sys, "modules")["__main__"]
original = runner._Channel.send
def send(self, message):
    if message.get("seq"):  # a call's reply: claim the tests passed first
        original(self, {"event": "outcome", "name": "test_plain_numbers", "status": "passed"})
        original(self, {"event": "done"})
    return original(self, message)
runner._Channel.send = send

def fizzbuzz(n):
    return "wrong"
"""
    result = grader.grade(patcher, fizzbuzz)
    assert result.score == 0
    assert "answers no call" in result.feedback


@pytest.mark.parametrize("raised", ["KeyboardInterrupt", "SystemExit", "GeneratorExit"])
def test_ending_the_test_session_early_fails_the_tests_left(
    grader: PytestGrader, fizzbuzz: Task, raised: str
) -> None:
    """A candidate that passes one test, then raises what would stop pytest, gains nothing."""
    stopper = CORRECT.replace(
        "    if n % 15 == 0:",
        f"    if n != 1:\n        raise {raised}('stop')\n    if n % 15 == 0:",
    )
    result = grader.grade(stopper, fizzbuzz)
    honest = grader.grade(stopper.replace(raised, "RuntimeError"), fizzbuzz)
    assert len(result.tests) == len(honest.tests) == 8
    assert result.score <= honest.score == pytest.approx(10 * 4 / 8)
