"""humaneval: a suite problem's ``check(candidate)``, run on the answer's function, 1 or 0.

Task parameters (set by the suite loader, ``graders._suite``):
    problem: The problem's own prompt (its imports and helper functions stay in scope).
    entry_point: The function the answer must define.
    test: Test code defining ``check(candidate)``.

The function is extracted as the other code graders do (target: the entry point) and placed
after the problem prompt's imports and helper functions, as HumanEval runs prompt plus
completion; the test code gets those helpers too (some checks call them). ``check`` runs in
its own sandboxed process against a plain-data proxy of the candidate (``Sandbox.run_check``),
so the candidate cannot forge its verdict.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any, ClassVar

from graders._base import GradeResult, Task, TestResult
from graders._extract import extract_code, missing_code_reason
from graders._params import str_param
from graders._sandbox import SandboxedGrader, SandboxRun

__all__ = ["HumanEvalGrader", "problem_context"]


def problem_context(problem: str, entry_point: str) -> str:
    """The problem prompt's imports and helper definitions, without the entry point itself."""
    try:
        tree = ast.parse(problem)
    except (SyntaxError, ValueError):
        return ""
    kept = [
        node
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        or (
            isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Assign)
            and getattr(node, "name", None) != entry_point
        )
    ]
    return "".join(f"{ast.get_source_segment(problem, node)}\n\n" for node in kept)


class HumanEvalGrader(SandboxedGrader):
    """Runs a suite problem's check(candidate) on the answer's function; 1 if it passes, else 0."""

    name: ClassVar[str] = "humaneval"

    @classmethod
    def check_params(cls, params: Mapping[str, Any], where: str) -> None:
        """Requires ``entry_point`` and ``test``; ``problem`` is optional."""
        str_param(params, "entry_point", where)
        str_param(params, "test", where)
        if "problem" in params:
            str_param(params, "problem", where)

    def grade(self, response: str, task: Task) -> GradeResult:
        """Extracts the entry point's function, runs ``check`` on it and scores 1 or 0."""
        where = f"task {task.name}: params"
        self.check_params(task.params, where)
        entry_point = str_param(task.params, "entry_point", where)
        code = extract_code(response, entry_point)
        if code is None:
            return _result(False, missing_code_reason(response, entry_point), None)
        context = problem_context(str(task.params.get("problem", "")), entry_point)
        # the problem's helpers are in scope on both sides: its check may call them too (and
        # the entry point by its name, which run_check binds), as when HumanEval runs it in one
        test = context + str(task.params["test"])
        run = self.sandbox.run_check(context + code, test, entry_point)
        if run.load_error is not None:
            return _result(False, f"the code could not be run: {run.load_error}", code, run)
        outcome = run.outcome("check")
        if outcome.status == "passed":
            return _result(True, "check(candidate) passed", code, run)
        detail = " ".join(outcome.error.split())[:600] if outcome.error else ""
        return _result(
            False, f"check(candidate) {outcome.status}: {detail}".rstrip(": "), code, run
        )


def _result(
    passed: bool, message: str, code: str | None, run: SandboxRun | None = None
) -> GradeResult:
    isolation = "none" if run is None else run.isolation
    test = TestResult("check", 1.0 if passed else 0.0, 1.0, passed, message)
    feedback = "Passed: check(candidate) holds." if passed else f"Score 0/1: {message}."
    return GradeResult(1.0 if passed else 0.0, 1.0, (test,), code, feedback, isolation)
