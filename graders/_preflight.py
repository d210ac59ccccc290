"""Pre-flight: checks that a task can work at all, before any model is called.

A search whose test file cannot be imported, or whose answers could never score, would spend
its whole budget on zeros. ``preflight`` finds that out first, without calling a model: the
grader's dependencies are installed, a pytest task names its function and its test file
compiles and is collected against a stub module that defines that function, and a task's
``reference`` answer (optional) earns the maximum score.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from graders._base import BaseGrader, Task
from graders._errors import GraderError
from graders._judge import JudgeGrader
from graders._pytest_grader import PytestGrader
from graders._sandbox import Sandbox, SandboxedGrader, SandboxError
from graders._suite import HUMANEVAL

__all__ = ["missing_dependencies", "preflight"]

_STUB = '''"""A stand-in for the answer, so the tests can be collected before any model runs."""


def {name}(*args, **kwargs):
    raise NotImplementedError("pre-flight stub: no answer yet")
'''


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


def missing_dependencies(grader: BaseGrader) -> tuple[str, ...]:
    """The packages ``grader`` needs that are not installed (pytest for the pytest grader)."""
    needed = ("pytest",) if isinstance(grader, PytestGrader) else ()
    return tuple(module for module in needed if not _installed(module))


def preflight(tasks: Sequence[Task], grader: BaseGrader, label: str) -> None:
    """Checks that ``tasks`` can be graded by ``grader``; calls no model.

    Args:
        tasks: The task's instances.
        grader: The grader the search uses.
        label: The task file (or shipped task name), which starts every message.

    Raises:
        GraderError: The task cannot work; one line naming ``label``, the field and the cause.
    """
    for module in missing_dependencies(grader):
        raise GraderError(
            f"{label}: the {grader.name} grader needs the {module} package, which is not "
            f"installed here (pip install {module})"
        )
    sandbox = grader.sandbox if isinstance(grader, SandboxedGrader) else None
    checked: set[tuple[str, ...]] = set()
    for task in tasks:
        where = label if len(tasks) == 1 else f"{label}: instance {task.name}"
        try:
            if isinstance(grader, PytestGrader):
                assert sandbox is not None
                _check_pytest(task, sandbox, where, checked)
            # A judge would call a model; the built-in suite's 164 canonical solutions are
            # known to pass (bench/bench_suite.py checks them), and would take minutes.
            builtin = label == HUMANEVAL
            if task.reference is not None and not isinstance(grader, JudgeGrader) and not builtin:
                _check_reference(task, grader, where)
        except SandboxError as error:
            raise GraderError(f"{where}: the sandbox cannot run here: {error}") from None


def _check_pytest(task: Task, sandbox: Sandbox, where: str, checked: set[tuple[str, ...]]) -> None:
    PytestGrader.check_params(task.params, f"{where}: params")
    if not task.function_name:
        raise GraderError(f"{where}: function_name: required by the pytest grader")
    test_file = str(task.params["test_file"])
    source = str(task.params["test_source"])
    module = str(task.params.get("module", "solution"))
    key = (task.function_name, module, test_file, source)
    if key in checked:
        return
    checked.add(key)
    try:
        compile(source, test_file, "exec", dont_inherit=True)
    except SyntaxError as error:
        raise GraderError(
            f"{where}: params.test_file: {test_file} does not compile: {error.msg} "
            f"(line {error.lineno})"
        ) from None
    run = sandbox.run_pytest(
        _STUB.format(name=task.function_name),
        {test_file: source},
        test_file,
        module=module,
        functions=[task.function_name],
    )
    stub = f"a stub module {module!r} that defines {task.function_name}()"
    broken = [o for o in run.outcomes if o.status == "error" and "::" not in o.name]
    if run.load_error is not None or broken:
        cause = _telling_line(run.load_error or broken[0].error)
        raise GraderError(
            f"{where}: params.test_file: {test_file} cannot be collected against {stub}: {cause}"
        )
    if not [o for o in run.outcomes if o.status != "skipped"]:
        raise GraderError(f"{where}: params.test_file: {test_file} holds no test pytest can run")


def _telling_line(message: str) -> str:
    """A pytest error's ``E`` line (``ModuleNotFoundError: No module named 'soluton'``)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    return (errors[-1] if errors else lines[-1] if lines else "failed")[:300]


def _check_reference(task: Task, grader: BaseGrader, where: str) -> None:
    assert task.reference is not None
    result = grader.grade(task.reference, task)
    if result.score >= result.max_score:
        return
    failed = next((t for t in result.tests if not t.passed), None)
    why = "" if failed is None else f"; {failed.name}: {' '.join(failed.message.split())[:200]}"
    raise GraderError(
        f"{where}: reference: the reference answer scores {result.score:g}/{result.max_score:g}, "
        f"not the maximum{why}"
    )
