"""exact: question-answer tasks with expected answers (competition math and the like).

Task parameters:
    questions: A list; each has ``answer`` (the expected answer, text or number), and may have
        ``match`` (``exact``, the default; ``numeric``; ``regex``), ``tolerance`` (numeric:
        absolute tolerance, default 1e-9 relative), ``case_sensitive`` (exact and regex,
        default true) and ``name``.
    max_score: Points for answering every question right (default 1).

The response gives one line ``Answer N: ...`` per question (the last such line for N counts).
With a single question, ``\\boxed{...}``, ``Answer: ...`` or the last non-empty line also do.
Score = right / questions x max_score.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

from graders._base import BaseGrader, GradeResult, Task, TestResult
from graders._errors import GraderError
from graders._extract import strip_thinking
from graders._params import number_param

__all__ = ["ExactGrader", "find_answers", "parse_number"]

_MATCHES = ("exact", "numeric", "regex")
_MAX_ANSWER = 1000
_NUMBERED = re.compile(r"^\W*answer\s*(?:#|no\.?\s*)?(\d+)\s*[:=.)-]\s*(.*?)\s*$", re.IGNORECASE)
_SINGLE = re.compile(r"^\W*(?:final\s+)?answer\s*(?:is)?\s*[:=]\s*(.*?)\s*$", re.IGNORECASE)
_FRACTION = re.compile(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?:/\d+)?")


@dataclass(frozen=True)
class _Question:
    name: str
    answer: str
    match: str
    tolerance: float | None
    case_sensitive: bool


class ExactGrader(BaseGrader):
    """Checks answers against expected ones (exact text, numeric, or regex); score = share right."""

    name: ClassVar[str] = "exact"

    @classmethod
    def check_params(cls, params: Mapping[str, Any], where: str) -> None:
        """Checks ``questions`` and ``max_score``."""
        _questions(params, where)
        number_param(params, "max_score", where, 1.0)

    def grade(self, response: str, task: Task) -> GradeResult:
        """Finds the answers in ``response`` and checks each against the expected one."""
        where = f"task {task.name}: params"
        questions = _questions(task.params, where)
        max_score = number_param(task.params, "max_score", where, 1.0)
        found = find_answers(response, len(questions))
        share = max_score / len(questions)
        tests = []
        for number, question in enumerate(questions, start=1):
            given = found.get(number)
            if given is None:
                label = "Answer:" if len(questions) == 1 else f"Answer {number}:"
                right, message = False, f"no answer found (expected a line {label!r})"
            else:
                right, message = _check(question, given)
            tests.append(TestResult(question.name, share if right else 0.0, share, right, message))
        right_count = sum(1 for t in tests if t.passed)
        wrong = [f"- {t.name}: {t.message}" for t in tests if not t.passed]
        feedback = "\n".join([f"{right_count} of {len(tests)} answers right.", *wrong])
        return GradeResult(
            score=max_score * right_count / len(tests),
            max_score=max_score,
            tests=tuple(tests),
            feedback=feedback,
            isolation="none",
        )


def find_answers(response: str, count: int) -> dict[int, str]:
    """Returns the answers in ``response`` by question number (1-based), cleaned of markup."""
    text = strip_thinking(response)
    answers: dict[int, str] = {}
    lines = [line.replace("**", "") for line in text.splitlines() if line.strip()]
    for line in lines:
        match = _NUMBERED.match(line)
        if match and 1 <= int(match.group(1)) <= count:
            answers[int(match.group(1))] = _clean(match.group(2))
    if count == 1 and 1 not in answers:
        boxed = _last_boxed(text)
        singles = [m.group(1) for line in lines if (m := _SINGLE.match(line))]
        if boxed is not None:
            answers[1] = _clean(boxed)
        elif singles:
            answers[1] = _clean(singles[-1])
        elif lines:
            answers[1] = _clean(lines[-1])
    return answers


def parse_number(text: str) -> float | None:
    """Reads a number from an answer: ``1,234``, ``-0.5``, ``3/4``, ``\\frac{3}{4}``, ``$12``.

    Text around a single number is ignored (``42 apples``); None if there is no single number.
    """
    cleaned = text.replace(",", "").replace("\\!", "").replace("\\$", "").replace("$", "")
    cleaned = cleaned.replace("%", "").strip()
    fraction = _FRACTION.fullmatch(cleaned.replace(" ", ""))
    if fraction:
        sign, top, bottom = fraction.groups()
        return _ratio(f"{sign}{top}/{bottom}")
    value = _ratio(cleaned.replace(" ", ""))
    if value is not None:
        return value
    numbers = _NUMBER.findall(cleaned)
    return _ratio(numbers[0]) if len(numbers) == 1 else None


def _ratio(text: str) -> float | None:
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def _check(question: _Question, given: str) -> tuple[bool, str]:
    shown = given if len(given) <= 80 else given[:77] + "..."
    if question.match == "numeric":
        value = parse_number(given)
        expected = parse_number(question.answer)
        if value is None or expected is None:
            return False, f"expected the number {question.answer}, got {shown!r}"
        tolerance = question.tolerance
        if tolerance is None:
            tolerance = 1e-9 * max(1.0, abs(expected))
        if abs(value - expected) <= tolerance:
            return True, f"{shown} is right"
        return False, f"expected {question.answer}, got {shown}"
    if question.match == "regex":
        flags = 0 if question.case_sensitive else re.IGNORECASE
        if re.fullmatch(question.answer, given, flags):
            return True, f"{shown!r} matches"
        return False, f"{shown!r} does not match /{question.answer}/"
    if question.case_sensitive:
        same = given == question.answer
    else:
        same = given.casefold() == question.answer.casefold()
    if same:
        return True, f"{shown!r} is right"
    return False, f"expected {question.answer!r}, got {shown!r}"


def _clean(answer: str) -> str:
    """Strips markdown and LaTeX wrapping: ``**42**``, ``$42$``, ``\\boxed{42}``, a final period."""
    text = answer.strip()[:_MAX_ANSWER]
    boxed = _last_boxed(text)
    if boxed is not None:
        text = boxed
    previous = None
    while previous != text:
        previous = text
        text = text.strip()
        for left, right in (("**", "**"), ("__", "__"), ("`", "`"), ("$", "$"), ("\\(", "\\)")):
            wrapped = text.startswith(left) and text.endswith(right)
            if wrapped and len(text) > len(left) + len(right):
                text = text[len(left) : -len(right)]
        text = text.removesuffix(".")
    return " ".join(text.split())


def _last_boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}``, with nested braces."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for index in range(begin, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            if depth == 0:
                return text[begin:index]
            depth -= 1
    return None


def _questions(params: Mapping[str, Any], where: str) -> Sequence[_Question]:
    raw = params.get("questions")
    if not isinstance(raw, list) or not raw:
        raise GraderError(f"{where}.questions: expected a non-empty list of questions")
    questions = []
    for index, item in enumerate(raw):
        field = f"{where}.questions[{index}]"
        if not isinstance(item, dict):
            raise GraderError(f"{field}: expected a mapping with an answer")
        unknown = sorted(set(item) - {"name", "answer", "match", "tolerance", "case_sensitive"})
        if unknown:
            raise GraderError(f"{field}.{unknown[0]}: unknown field")
        answer = item.get("answer")
        if isinstance(answer, bool) or not isinstance(answer, str | int | float):
            raise GraderError(f"{field}.answer: expected text or a number, got {answer!r}")
        match = item.get("match", "exact")
        if match not in _MATCHES:
            choices = ", ".join(_MATCHES)
            raise GraderError(f"{field}.match: expected one of {choices}, got {match!r}")
        if match == "numeric" and parse_number(str(answer)) is None:
            raise GraderError(f"{field}.answer: {answer!r} is not a number")
        if match == "regex":
            try:
                re.compile(str(answer))
            except re.error as error:
                raise GraderError(f"{field}.answer: not a valid regex: {error}") from error
        tolerance = item.get("tolerance")
        if tolerance is not None and (
            isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or tolerance < 0
        ):
            raise GraderError(f"{field}.tolerance: expected a number >= 0, got {tolerance!r}")
        case_sensitive = item.get("case_sensitive", True)
        if not isinstance(case_sensitive, bool):
            raise GraderError(f"{field}.case_sensitive: expected true or false")
        name = item.get("name", f"question {index + 1}")
        if not isinstance(name, str) or not name:
            raise GraderError(f"{field}.name: expected a non-empty string")
        questions.append(
            _Question(
                name,
                str(answer),
                str(match),
                None if tolerance is None else float(tolerance),
                case_sensitive,
            )
        )
    return questions
