"""The exact grader on the shipped arithmetic task and on single questions."""

from __future__ import annotations

import pytest

from graders import ExactGrader, GraderError, Task, load_task, parse_number

GRADER = ExactGrader()


def single(answer: object, match: str = "exact", **extra: object) -> Task:
    question = {"answer": answer, "match": match, **extra}
    return Task("q", "prompt", "exact", None, {"questions": [question]})


def test_all_right() -> None:
    task = load_task("arithmetic/basics")
    response = "17*23 = 391.\n3/8 = 0.375\n\nAnswer 1: 391\nAnswer 2: 0.375\nAnswer 3: 97"
    result = GRADER.grade(response, task)
    assert result.score == pytest.approx(3) and result.max_score == 3
    assert [t.name for t in result.tests] == ["product", "decimal", "prime"]
    assert result.feedback == "3 of 3 answers right."


def test_score_is_the_fraction_right() -> None:
    task = load_task("arithmetic/basics")
    response = "**Answer 1:** 391\nAnswer 2: 3/8\nAnswer 3: 89"
    result = GRADER.grade(response, task)
    assert [t.passed for t in result.tests] == [True, True, False]
    assert result.score == pytest.approx(2)
    assert result.tests[2].message == "expected '97', got '89'"


def test_later_answer_lines_win_and_missing_ones_are_named() -> None:
    task = load_task("arithmetic/basics")
    response = "Answer 1: 300\nOn reflection:\nAnswer 1: 391"
    result = GRADER.grade(response, task)
    assert [t.passed for t in result.tests] == [True, False, False]
    assert result.tests[1].message == "no answer found (expected a line 'Answer 2:')"


def test_regex_and_case_insensitive_answers() -> None:
    task = load_task("arithmetic/words")
    response = "Answer 1: 1 x 10^6\nAnswer 2: 2\nAnswer 3: No."
    assert [t.passed for t in GRADER.grade(response, task).tests] == [True, True, True]
    response = "Answer 1: one million\nAnswer 2: 2.0\nAnswer 3: yes"
    assert [t.passed for t in GRADER.grade(response, task).tests] == [False, True, False]


@pytest.mark.parametrize(
    "response",
    [
        "The total is \\boxed{1,234}.",
        "Reasoning...\nFinal answer: $1234$",
        "Reasoning...\n1234",
        "<think>maybe 999</think>Answer: **1234.**",
    ],
)
def test_single_question_answer_forms(response: str) -> None:
    assert GRADER.grade(response, single(1234, "numeric")).score == 1


def test_numeric_tolerance() -> None:
    assert GRADER.grade("Answer: 3.1416", single(3.14159, "numeric", tolerance=0.001)).score == 1
    assert GRADER.grade("Answer: 3.15", single(3.14159, "numeric", tolerance=0.001)).score == 0


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1,234", 1234.0),
        ("-0.5", -0.5),
        ("3/4", 0.75),
        ("\\frac{3}{4}", 0.75),
        ("\\$12", 12.0),
        ("42 apples", 42.0),
        ("1e3", 1000.0),
        ("two", None),
        ("3 or 4", None),
        ("1/0", None),
    ],
)
def test_parse_number(text: str, value: float | None) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "params.questions: expected a non-empty list"),
        ({"questions": [{"answer": 1, "match": "fuzzy"}]}, "questions[0].match: expected one of"),
        (
            {"questions": [{"answer": "x", "match": "numeric"}]},
            "questions[0].answer: 'x' is not a number",
        ),
        (
            {"questions": [{"answer": "(", "match": "regex"}]},
            "questions[0].answer: not a valid regex",
        ),
        ({"questions": [{"answer": 1, "color": "red"}]}, "questions[0].color: unknown field"),
        (
            {"questions": [{"answer": 1}], "max_score": -1},
            "params.max_score: expected a positive number",
        ),
    ],
)
def test_bad_params_name_the_field(params: dict[str, object], message: str) -> None:
    with pytest.raises(GraderError, match=message.replace("[", r"\[").replace("]", r"\]")):
        GRADER.grade("Answer: 1", Task("q", "p", "exact", None, params))
