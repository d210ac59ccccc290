"""The pre-flight check: a task that cannot work is found before any model runs (real sandbox)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from graders import GraderError, get_grader, load_tasks, preflight

ROOT = Path(__file__).resolve().parents[2]

TASK = """\
name: slugify
grader: pytest
function_name: slugify
prompt: Write slugify(text).
params:
  test_file: test_slugify.py
  max_score: 2
"""
TESTS = """\
from solution import slugify


def test_lower():
    assert slugify("Hello") == "hello"


def test_hyphen():
    assert slugify("a b") == "a-b"
"""
REFERENCE = """\
reference: |
  def slugify(text):
      return "-".join(text.lower().split())
"""


def write(tmp_path: Path, task: str = TASK, tests: str = TESTS) -> Path:
    (tmp_path / "test_slugify.py").write_text(tests)
    path = tmp_path / "slugify.yaml"
    path.write_text(task)
    return path


def check(path: Path) -> None:
    tasks = load_tasks(path)
    preflight(tasks, get_grader(tasks[0].grader), str(path))


def test_a_working_task_passes(tmp_path: Path) -> None:
    check(write(tmp_path))
    check(write(tmp_path, TASK + REFERENCE))


@pytest.mark.parametrize(
    ("tests", "cause"),
    [
        (
            TESTS.replace("from solution", "from soluton"),
            "params.test_file: test_slugify.py cannot be collected against a stub module "
            "'solution' that defines slugify(): ModuleNotFoundError: No module named 'soluton'",
        ),
        (
            TESTS.replace("import slugify", "import slugify, SlugError"),
            "cannot import name 'SlugError' from 'solution'",
        ),
        (
            TESTS.replace('"hello"\n', '"hello"\n  x = 1\n'),
            "params.test_file: test_slugify.py does not compile: unindent does not match any "
            "outer indentation level (line 6)",
        ),
        ("from solution import slugify\n", "test_slugify.py holds no test pytest can run"),
    ],
)
def test_a_broken_test_file_is_named_with_its_cause(tmp_path: Path, tests: str, cause: str) -> None:
    path = write(tmp_path, tests=tests)
    with pytest.raises(GraderError) as raised:
        check(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and cause in message
    assert "\n" not in message


def test_a_pytest_task_needs_its_function_name(tmp_path: Path) -> None:
    path = write(tmp_path, TASK.replace("function_name: slugify\n", ""))
    with pytest.raises(GraderError, match=r"slugify.yaml: function_name: required by the pytest"):
        check(path)


def test_a_reference_that_does_not_score_the_maximum_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, TASK + REFERENCE.replace('"-".join', '"_".join'))
    with pytest.raises(GraderError) as raised:
        check(path)
    assert str(raised.value).startswith(
        f"{path}: reference: the reference answer scores 1/2, not the maximum; test_hyphen: "
    )


def test_an_exact_reference_is_checked(tmp_path: Path) -> None:
    task = """\
name: sums
grader: exact
prompt: What is 2 + 2?
params:
  questions: [{answer: 4, match: numeric}]
reference: "Answer: 5"
"""
    path = tmp_path / "sums.yaml"
    path.write_text(task)
    with pytest.raises(GraderError, match="reference: the reference answer scores 0/1"):
        check(path)
    path.write_text(task.replace("Answer: 5", "Answer: 4"))
    check(path)


def test_a_missing_grader_dependency_is_named(tmp_path: Path) -> None:
    """Without pytest importable, grading a pytest task says so, and so does the pre-flight."""
    path = write(tmp_path)
    (tmp_path / "answer.py").write_text("def slugify(text):\n    return text\n")
    script = (
        "import sys; sys.modules['pytest'] = None\n"
        "from optimizer.cli import main\n"
        "raise SystemExit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "grade", "answer.py", "--task", str(path)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "moa-opt: error: the pytest grader needs the pytest package, which is not installed "
        "here (pip install pytest)"
    )
