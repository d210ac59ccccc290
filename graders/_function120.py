"""function120: the workshop's 120-point grader for ``calculate_user_metrics``.

Eleven tests with the workshop's partial credit. The candidate runs in the sandbox, all calls
in one process, in the order the workshop made them; every check below runs here, in the
grader's process, on the plain values the sandbox sent back, with the same Python semantics
the workshop's in-process checks had (numbers compare as numbers, ``0.0 == 0``). A candidate
that returns objects overriding ``__eq__``, ``get`` or ``__len__`` is scored on the plain data
those objects hold.

Failures are graded as in the workshop: an exception raised by the candidate, or by a check on
what it returned (a missing key, a result that is not a dict), counts as "raises". A test that
times out or takes the process down earns nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from graders._base import GradeResult, Task, TestResult
from graders._extract import extract_code, missing_code_reason
from graders._params import rules_param
from graders._rules import WORKSHOP_RULES, check_rules
from graders._sandbox import FunctionCall, Outcome, SandboxedGrader

__all__ = [
    "EXPECTED_AVERAGE",
    "FUNCTION120_TESTS",
    "WRONG_AVERAGE",
    "Function120Grader",
    "Function120Test",
]

START, END = "2024-01-01", "2024-01-31"
FUNCTION_NAME = "calculate_user_metrics"


def _user(last_login: str, posts: Any, comments: int, likes: int, days: int) -> dict[str, Any]:
    return {
        "last_login": last_login,
        "posts": posts,
        "comments": comments,
        "likes": likes,
        "days_active": days,
    }


_ACTIVE = _user("2024-01-15", 10, 5, 20, 10)
_SCORE = 10 * 2 + 5 * 1.5 + 20 * 0.1  # the active user's raw score, 29.5
EXPECTED_AVERAGE = _SCORE / 10
"""Average engagement over the one active user of ``correct_average_calculation`` (2.95)."""
WRONG_AVERAGE = _SCORE / 2
"""The raw score divided by all users, as the original function computes it (14.75)."""
_TOP_POSTS = [99, 98, 97, 96, 95]


@dataclass(frozen=True)
class Function120Test:
    """One of the eleven tests.

    Attributes:
        name: The workshop's test name.
        max_points: Points available.
        calls: The calls it makes (fresh inputs each).
        score: Turns the calls' outcomes into points and a message.
    """

    name: str
    max_points: int
    calls: tuple[FunctionCall, ...]
    score: Callable[[Sequence[Outcome]], tuple[int, str]]


def _call(
    name: str, users: list[dict[str, Any]], start: str = START, end: str = END
) -> FunctionCall:
    return FunctionCall(name, (users, start, end))


def _show(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _failed(outcome: Outcome) -> str:
    if outcome.status == "raised":
        return f"raised {outcome.error}"
    return outcome.error or outcome.status


def _checked(
    outcome: Outcome, check: Callable[[Any], tuple[int, str]], on_raise: int = 0
) -> tuple[int, str]:
    """Applies ``check`` to the returned value; raising (call or check) earns ``on_raise``."""
    if outcome.status == "raised":
        return on_raise, _failed(outcome)
    if not outcome.returned:
        return 0, _failed(outcome)
    try:
        return check(outcome.value)
    except Exception as error:  # a check on plain values: the result had the wrong shape
        return on_raise, f"checking the result raised {type(error).__name__}: {error}"


def _division_by_zero(outcomes: Sequence[Outcome]) -> tuple[int, str]:
    def check(result: Any) -> tuple[int, str]:
        if isinstance(result, dict) and "average_engagement" in result:
            return 20, "a user with days_active = 0 is handled"
        return 5, f"did not crash, but returned {_show(result)}, not a dict with average_engagement"

    return _checked(outcomes[0], check)


def _empty_users(outcomes: Sequence[Outcome]) -> tuple[int, str]:
    def check(result: Any) -> tuple[int, str]:
        if isinstance(result, dict) and result.get("active_count") == 0:
            return 15, "an empty list gives active_count 0"
        return 5, f"for an empty list returned {_show(result)}; expected active_count 0"

    return _checked(outcomes[0], check)


def _missing_keys(outcomes: Sequence[Outcome]) -> tuple[int, str]:
    message = "a user without comments, likes, days_active is handled"
    return _checked(outcomes[0], lambda result: (15, message))


def _average(outcomes: Sequence[Outcome]) -> tuple[int, str]:
    def check(result: Any) -> tuple[int, str]:
        average = result.get("average_engagement", 0)
        if abs(average - EXPECTED_AVERAGE) < 0.01:
            return 15, "the average is taken over active users only"
        if abs(average - WRONG_AVERAGE) < 0.01:
            return 0, (
                f"average_engagement is {_show(average)}: the total divided by all users; "
                f"expected {EXPECTED_AVERAGE:g}, the mean engagement of the active users"
            )
        return 5, f"average_engagement is {_show(average)}; expected {EXPECTED_AVERAGE:g}"

    return _checked(outcomes[0], check)


def _sorting(outcomes: Sequence[Outcome]) -> tuple[int, str]:
    def check(result: Any) -> tuple[int, str]:
        top = result.get("top_performers", [])
        if not len(top) > 0:
            return 0, "top_performers is empty"
        if top[0].get("posts") == 10:
            return 10, "top performers are sorted highest first"
        if top[-1].get("posts") == 10:
            return 0, "top performers are sorted lowest first; the highest must come first"
        return 5, "the highest scoring user is neither first nor last in top_performers"

    return _checked(outcomes[0], check)


def _no_active_users(outcomes: Sequence[Outcome]) -> tuple[int, str]:
    def check(result: Any) -> tuple[int, str]:
        if result.get("active_count") == 0 and result.get("average_engagement") == 0:
            return 10, "no active users gives active_count 0 and average_engagement 0"
        return 5, (
            f"with no user in range returned {_show(result)}; "
            "expected active_count 0 and average_engagement 0"
        )

    return _checked(outcomes[0], check)


def _no_mutation(outcomes: Sequence[Outcome]) -> tuple[int, str]:
    outcome = outcomes[0]

    def check(result: Any) -> tuple[int, str]:
        assert outcome.args is not None
        after = outcome.args[0][0]
        if "engagement_score" in after:
            return 0, "the input was modified: users got an engagement_score key"
        if after != _ACTIVE:
            return 0, f"the input was modified: the user became {_show(after)}"
        return 8, "the input is left unchanged"

    return _checked(outcome, check)


def _fewer_than_five(outcomes: Sequence[Outcome]) -> tuple[int, str]:
    def check(result: Any) -> tuple[int, str]:
        count = len(result.get("top_performers", []))
        if count == 2:
            return 5, "two active users give two top performers"
        return 0, f"two active users gave {count} top performers; expected 2"

    return _checked(outcomes[0], check)


def _invalid_dates(outcomes: Sequence[Outcome]) -> tuple[int, str]:
    def check(result: Any) -> tuple[int, str]:
        if result.get("active_count") == 0:
            return 5, "a start date after the end date gives no active users"
        return 3, (
            f"with start 2024-01-31 after end 2024-01-01 active_count is "
            f"{_show(result.get('active_count'))}; expected 0"
        )

    return _checked(outcomes[0], check, on_raise=2)


def _robust(outcomes: Sequence[Outcome]) -> tuple[int, str]:
    returned = sum(1 for outcome in outcomes if outcome.returned)
    points = {3: 7, 2: 4, 1: 2}.get(returned, 0)
    labels = ("posts None", "posts -5", "posts '10'")
    problems = [
        f"{label}: {_failed(outcome)}"
        for label, outcome in zip(labels, outcomes, strict=True)
        if not outcome.returned
    ]
    message = f"{returned} of 3 problematic inputs handled"
    return points, message + ("; " + "; ".join(problems) if problems else "")


def _efficient(outcomes: Sequence[Outcome]) -> tuple[int, str]:
    def check(result: Any) -> tuple[int, str]:
        top = result.get("top_performers", [])
        count = len(top)
        if count == 5:
            posts = [user.get("posts", 0) for user in top]
            if posts == _TOP_POSTS:
                return 10, "the top 5 of 100 users, highest first"
            if 99 in posts and len(set(posts)) == 5:
                return 8, f"the right top 5 in the wrong order: posts {posts}"
            return 3, f"five top performers, but the wrong ones: posts {_show(posts)}"
        if count < 5:
            return 2, f"100 active users gave {count} top performers; expected 5"
        return 0, f"100 active users gave {count} top performers; expected 5"

    return _checked(outcomes[0], check)


FUNCTION120_TESTS: tuple[Function120Test, ...] = (
    Function120Test(
        "handles_division_by_zero",
        20,
        (_call("handles_division_by_zero", [_user("2024-01-15", 10, 5, 20, 0)]),),
        _division_by_zero,
    ),
    Function120Test(
        "handles_empty_users_list", 15, (_call("handles_empty_users_list", []),), _empty_users
    ),
    Function120Test(
        "handles_missing_keys",
        15,
        (_call("handles_missing_keys", [{"last_login": "2024-01-15", "posts": 10}]),),
        _missing_keys,
    ),
    Function120Test(
        "correct_average_calculation",
        15,
        (
            _call(
                "correct_average_calculation",
                [_user("2023-12-15", 100, 50, 200, 30), _user("2024-01-15", 10, 5, 20, 10)],
            ),
        ),
        _average,
    ),
    Function120Test(
        "correct_sorting_direction",
        10,
        (
            _call(
                "correct_sorting_direction",
                [
                    _user("2024-01-15", 1, 1, 1, 1),
                    _user("2024-01-16", 10, 10, 10, 1),
                    _user("2024-01-17", 5, 5, 5, 1),
                ],
            ),
        ),
        _sorting,
    ),
    Function120Test(
        "handles_no_active_users",
        10,
        (_call("handles_no_active_users", [_user("2023-12-15", 10, 5, 20, 10)]),),
        _no_active_users,
    ),
    Function120Test(
        "doesnt_mutate_input", 8, (_call("doesnt_mutate_input", [dict(_ACTIVE)]),), _no_mutation
    ),
    Function120Test(
        "handles_less_than_5_users",
        5,
        (
            _call(
                "handles_less_than_5_users",
                [_user("2024-01-15", 10, 5, 20, 10), _user("2024-01-16", 5, 3, 15, 5)],
            ),
        ),
        _fewer_than_five,
    ),
    Function120Test(
        "handles_invalid_dates",
        5,
        (_call("handles_invalid_dates", [dict(_ACTIVE)], "2024-01-31", "2024-01-01"),),
        _invalid_dates,
    ),
    Function120Test(
        "robust_error_handling",
        7,
        tuple(
            _call(f"robust_error_handling[posts={p!r}]", [_user("2024-01-15", p, 5, 20, 10)])
            for p in (None, -5, "10")
        ),
        _robust,
    ),
    Function120Test(
        "efficient_implementation",
        10,
        (
            _call(
                "efficient_implementation",
                [_user("2024-01-15", i, i, i, 10) for i in range(100)],
            ),
        ),
        _efficient,
    ),
)
"""The eleven tests, in the order they are reported."""

# The workshop called the candidate in this order; a candidate with state across calls sees
# the same sequence here.
_CALL_ORDER = (
    "handles_division_by_zero",
    "handles_invalid_dates",
    "robust_error_handling",
    "efficient_implementation",
    "handles_empty_users_list",
    "handles_missing_keys",
    "correct_average_calculation",
    "correct_sorting_direction",
    "handles_no_active_users",
    "doesnt_mutate_input",
    "handles_less_than_5_users",
)
_BY_NAME = {test.name: test for test in FUNCTION120_TESTS}
_CALLS = tuple(call for name in _CALL_ORDER for call in _BY_NAME[name].calls)
MAX_SCORE = sum(test.max_points for test in FUNCTION120_TESTS)


class Function120Grader(SandboxedGrader):
    """The workshop's 120-point grader for ``calculate_user_metrics``.

    Args:
        sandbox: Where candidates run; a default ``Sandbox()`` if None.
        rules: Static rules checked before running; None takes the task's ``rules`` param
            (``workshop``, the default, or ``none``).
    """

    name: ClassVar[str] = "function120"

    @classmethod
    def check_params(cls, params: Mapping[str, Any], where: str) -> None:
        """Accepts only ``rules`` (``workshop`` or ``none``)."""
        rules_param(params, where, WORKSHOP_RULES)

    def grade(self, response: str, task: Task) -> GradeResult:
        """Extracts the function from ``response``, runs the eleven tests and scores them."""
        function_name = task.function_name or FUNCTION_NAME
        code = extract_code(response, function_name)
        if code is None:
            return _zero(missing_code_reason(response, function_name), None)
        rules = self._rules or rules_param(task.params, f"task {task.name}: params", WORKSHOP_RULES)
        violations = check_rules(code, rules)
        if violations:
            return _zero("the code breaks the challenge rules: " + "; ".join(violations), code)
        run = self.sandbox.call_function(code, function_name, _CALLS)
        if run.load_error is not None:
            return _zero(f"the code could not be run: {run.load_error}", code, run.isolation)
        tests = []
        for test in FUNCTION120_TESTS:
            points, message = test.score([run.outcome(call.name) for call in test.calls])
            passed = points == test.max_points
            tests.append(TestResult(test.name, points, test.max_points, passed, message))
        return GradeResult(
            score=sum(t.points for t in tests),
            max_score=MAX_SCORE,
            tests=tuple(tests),
            code=code,
            feedback=_feedback(tests),
            isolation=run.isolation,
        )


def _zero(reason: str, code: str | None, isolation: str = "none") -> GradeResult:
    tests = tuple(TestResult(t.name, 0, t.max_points, False, reason) for t in FUNCTION120_TESTS)
    return GradeResult(0, MAX_SCORE, tests, code, f"Score 0/{MAX_SCORE}: {reason}.", isolation)


def _feedback(tests: Sequence[TestResult]) -> str:
    score = sum(t.points for t in tests)
    failed = [t for t in tests if not t.passed]
    if not failed:
        return f"Score {score}/{MAX_SCORE}: every test passed."
    lines = [f"Score {score}/{MAX_SCORE}. Tests that lost points:"]
    lines += [f"- {t.name} ({t.points}/{t.max_points}): {t.message}" for t in failed]
    return "\n".join(lines)
