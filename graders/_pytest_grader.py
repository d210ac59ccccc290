"""pytest: runs a task's test file against the candidate, in the sandbox.

Task parameters:
    test_file: The pytest file, next to the task file (read into ``test_source``).
    module: The module name the tests import the candidate as (default ``solution``).
    max_score: Points for passing every test (default 1).
    rules: Static code rules, ``none`` (default) or ``workshop``.

The task's ``function_name`` is the function the code must define. Score = passed / counted
tests x max_score, where skipped tests are not counted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from graders._base import GradeResult, Task, TestResult
from graders._errors import GraderError
from graders._extract import extract_code, missing_code_reason
from graders._params import number_param, rules_param, str_param
from graders._rules import NO_RULES, check_rules
from graders._sandbox import SandboxedGrader

__all__ = ["PytestGrader"]

_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class PytestGrader(SandboxedGrader):
    """Runs the task's pytest file against the candidate's module; score = share of tests passed.

    Args:
        sandbox: Where the tests run; a default ``Sandbox()`` if None.
        rules: Static rules checked before running; None takes the task's ``rules`` param.
    """

    name: ClassVar[str] = "pytest"

    @classmethod
    def check_params(cls, params: Mapping[str, Any], where: str) -> None:
        """Requires ``test_file``; checks ``module``, ``max_score`` and ``rules``."""
        if "test_source" not in params:
            raise GraderError(f"{where}.test_file: required (the pytest file to run)")
        str_param(params, "test_source", where)
        test_file = str_param(params, "test_file", where)
        if not test_file.endswith(".py") or "/" in test_file:
            raise GraderError(f"{where}.test_file: expected a .py file name, got {test_file!r}")
        module = str_param(params, "module", where, default="solution")
        if not _MODULE.fullmatch(module) or f"{module}.py" == test_file:
            raise GraderError(f"{where}.module: expected a module name, got {module!r}")
        number_param(params, "max_score", where, 1.0)
        rules_param(params, where, NO_RULES)

    def grade(self, response: str, task: Task) -> GradeResult:
        """Extracts the function, runs the tests on it and scores the share that passed."""
        where = f"task {task.name}: params"
        self.check_params(task.params, where)
        max_score = number_param(task.params, "max_score", where, 1.0)
        if not task.function_name:
            raise GraderError(f"task {task.name}: function_name: required by the pytest grader")
        code = extract_code(response, task.function_name)
        if code is None:
            return _zero(missing_code_reason(response, task.function_name), max_score, None)
        violations = check_rules(code, self._rules or rules_param(task.params, where, NO_RULES))
        if violations:
            reason = "the code breaks the task's rules: " + "; ".join(violations)
            return _zero(reason, max_score, code)
        module = str_param(task.params, "module", where, default="solution")
        test_file = str_param(task.params, "test_file", where)
        files = {test_file: str_param(task.params, "test_source", where)}
        run = self.sandbox.run_pytest(
            code, files, test_file, module=module, functions=[task.function_name]
        )
        counted = [o for o in run.outcomes if o.status != "skipped"]
        if run.load_error is not None or not counted:
            reason = run.load_error or "pytest collected no tests"
            return _zero(f"the tests could not be run: {reason}", max_score, code, run.isolation)
        share = max_score / len(counted)
        tests = tuple(
            TestResult(
                name=o.name.split("::", 1)[-1],
                points=share if o.status == "passed" else 0.0,
                max_points=share if o.status != "skipped" else 0.0,
                passed=o.status == "passed",
                message=o.error or o.status,
            )
            for o in run.outcomes
        )
        passed = sum(1 for o in counted if o.status == "passed")
        failed = [t for t in tests if not t.passed and t.max_points]
        feedback = f"{passed} of {len(counted)} tests passed."
        if failed:
            feedback += "\n" + "\n".join(f"- {t.name}: {_first_line(t.message)}" for t in failed)
        return GradeResult(
            score=max_score * passed / len(counted),
            max_score=max_score,
            tests=tests,
            code=code,
            feedback=feedback,
            isolation=run.isolation,
        )


def _first_line(message: str) -> str:
    """The most telling line of a pytest failure: its first ``E`` line, or its last line."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    return (errors[0] if errors else lines[-1] if lines else "failed")[:300]


def _zero(reason: str, max_score: float, code: str | None, isolation: str = "none") -> GradeResult:
    test = TestResult("tests", 0.0, max_score, False, reason)
    return GradeResult(0.0, max_score, (test,), code, f"Score 0: {reason}.", isolation)
