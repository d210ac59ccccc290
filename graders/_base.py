"""The grader interface and its result records."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = ["BaseGrader", "GradeResult", "Task", "TestResult"]


@dataclass(frozen=True)
class Task:
    """One problem instance: the prompt an MoA answers and what its grader needs.

    Attributes:
        name: Task name (``challenge``), with an instance suffix when a task file holds many.
        prompt: The user prompt every agent receives.
        grader: Name of the grader that scores answers to this task.
        function_name: The function a code task asks for, if any.
        params: Grader-specific data (a test file, expected answers, a rubric).
        reference: A known good answer, which must score the maximum (checked before a search).
    """

    name: str
    prompt: str
    grader: str
    function_name: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    reference: str | None = None


@dataclass(frozen=True)
class TestResult:
    """One test of a grader.

    Attributes:
        name: Test name.
        points: Points earned.
        max_points: Points available.
        passed: Whether it earned all its points.
        message: What happened, in plain words.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class

    name: str
    points: float
    max_points: float
    passed: bool
    message: str = ""


@dataclass(frozen=True)
class GradeResult:
    """A grader's verdict on one response.

    Attributes:
        score: Points earned.
        max_score: Points available.
        tests: Per-test results.
        code: The code extracted from the response, if any.
        feedback: Plain text naming what failed and why (input to prompt mutation).
        isolation: How the code was isolated (``bwrap``, ``rlimits``, ``none``).
    """

    score: float
    max_score: float
    tests: tuple[TestResult, ...] = ()
    code: str | None = None
    feedback: str = ""
    isolation: str = "none"

    def to_dict(self) -> dict[str, Any]:
        """Returns the JSON form printed by ``moa-opt grade --json``."""
        return {
            "score": self.score,
            "max_score": self.max_score,
            "tests": [
                {
                    "name": t.name,
                    "points": t.points,
                    "max_points": t.max_points,
                    "passed": t.passed,
                    "message": t.message,
                }
                for t in self.tests
            ],
            "isolation": self.isolation,
            "feedback": self.feedback,
        }


class BaseGrader(abc.ABC):
    """Scores a response to a task. Subclasses set ``name`` and implement ``grade``."""

    name: ClassVar[str] = ""

    @classmethod
    def check_params(cls, params: Mapping[str, Any], where: str) -> None:
        """Checks a task's ``params`` when the task file is loaded.

        Args:
            params: The task's grader parameters.
            where: The task file and field, for messages (``fizzbuzz.yaml: params``).

        Raises:
            GraderError: A parameter is missing or wrong; the message names it.
        """
        return None  # a grader without parameters accepts any

    @abc.abstractmethod
    def grade(self, response: str, task: Task) -> GradeResult:
        """Scores ``response`` (a raw model answer) on ``task``.

        Never runs generated code in this process; never raises for a bad response.
        """
