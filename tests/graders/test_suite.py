"""Suites: HumanEval and a user's JSONL file, graded by check(candidate) in the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from moa_cli import moa_opt

from graders import GraderError, HumanEvalGrader, Sandbox, Task, load_tasks, preflight


def test_humaneval_is_read_from_the_installed_package() -> None:
    tasks = load_tasks("humaneval")
    assert len(tasks) == 164
    assert [t.name for t in tasks[:2]] == ["HumanEval/0", "HumanEval/1"]
    first = tasks[0]
    assert (first.grader, first.function_name) == ("humaneval", "has_close_elements")
    assert first.prompt.startswith("Complete the following Python function.")
    assert first.params["problem"] in first.prompt
    assert "def check(candidate)" in first.params["test"]
    assert first.reference is not None and first.reference.startswith(first.params["problem"])


@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/10", "HumanEval/33", "HumanEval/38"])
def test_canonical_solution_passes_and_a_broken_one_fails(
    bwrap_sandbox: Sandbox, task_id: str
) -> None:
    # 10 and 38 call a helper of the prompt, 33 checks against the entry point by name
    task = next(t for t in load_tasks("humaneval") if t.name == task_id)
    grader = HumanEvalGrader(sandbox=bwrap_sandbox)
    assert task.reference is not None
    good = grader.grade(f"Sure:\n```python\n{task.reference}```\n", task)
    assert (good.score, good.max_score, good.isolation) == (1.0, 1.0, "bwrap"), good.feedback
    signature = task.reference.index(f"def {task.function_name}(")
    header = task.reference[signature:].splitlines()[0]
    broken = f"{header}\n    return None\n"
    bad = grader.grade(f"```python\n{broken}```", task)
    assert bad.score == 0.0 and not bad.tests[0].passed
    assert bad.feedback.startswith("Score 0/1: check(candidate) failed")


def test_no_function_is_a_zero_with_the_reason(bwrap_sandbox: Sandbox) -> None:
    task = load_tasks("humaneval")[0]
    result = HumanEvalGrader(sandbox=bwrap_sandbox).grade("I cannot help.", task)
    assert result.score == 0.0
    assert "no function named 'has_close_elements'" in result.feedback


def record(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "task_id": "mini/add",
        "prompt": 'def add(a, b):\n    """Return a + b."""\n',
        "entry_point": "add",
        "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
        "canonical_solution": "    return a + b\n",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def write_jsonl(path: Path, *records: dict[str, object] | str) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_user_suite_loads_with_one_task_per_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", record(), record(task_id="b", extra="ignored"))
    tasks = load_tasks(str(path))
    assert [t.name for t in tasks] == ["mini/add", "b"]
    assert tasks[0].reference == 'def add(a, b):\n    """Return a + b."""\n    return a + b\n'


def test_a_suite_file_saved_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", record())
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as some Windows editors save
    assert [t.name for t in load_tasks(str(path))] == ["mini/add"]


def test_a_prose_prompt_asks_for_the_entry_point_by_name(
    tmp_path: Path, bwrap_sandbox: Sandbox
) -> None:
    # MBPP's problems are prose: the prompt defines no function, the solution is all of it
    prose = record(
        task_id="mbpp/1",
        prompt="Write a function to add two numbers.",
        canonical_solution="def add(a, b):\n    return a + b\n",
    )
    path = write_jsonl(tmp_path / "p.jsonl", prose, record(task_id="b"))
    first, second = load_tasks(str(path))
    assert first.prompt.startswith("Write a Python function named `add` for the task below.")
    assert first.prompt.endswith("\n\nWrite a function to add two numbers.")
    assert first.reference == "def add(a, b):\n    return a + b\n"
    assert second.prompt.startswith("Complete the following Python function.")  # defines add
    grader = HumanEvalGrader(sandbox=bwrap_sandbox)
    preflight((first,), grader, str(path))  # its solution passes as it is
    wrong = grader.grade("```python\ndef add(a, b):\n    return a * b\n```", first)
    assert wrong.score == 0.0 and "check(candidate) failed" in wrong.feedback


def test_a_prose_problem_cannot_be_passed_by_cheating(
    tmp_path: Path, bwrap_sandbox: Sandbox
) -> None:
    # an answer that reads the suite's tests, or returns what equals anything, scores 0
    prose = record(task_id="mbpp/1", prompt="Write a function to add two numbers.")
    path = write_jsonl(tmp_path / "p.jsonl", prose)
    (task,) = load_tasks(str(path))
    cheat = f"""```python
class Anything:
    def __eq__(self, other):
        return True

def add(a, b):
    try:
        return open({str(path)!r}).read()  # the suite file, with its tests
    except OSError:
        return Anything()
```"""
    result = HumanEvalGrader(sandbox=bwrap_sandbox).grade(cheat, task)
    assert (result.score, result.isolation) == (0.0, "bwrap"), result.feedback


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (record(test=None), "p.jsonl:2: test: required"),
        (record(entry_point=""), "p.jsonl:2: entry_point: expected a non-empty string"),
        (
            record(test="def check(candidate):\n    assert candidate(1 == 2\n"),
            "p.jsonl:2: test: does not compile: '(' was never closed (line 2 of the test)",
        ),
        (record(test="def verify(c):\n    pass\n"), "p.jsonl:2: test: defines no function check"),
        ('{"task_id": "x",', "p.jsonl:2: not valid JSON"),
        ("[1, 2]", "p.jsonl:2: expected a JSON object"),
        (record(), "p.jsonl:2: task_id: 'mini/add' is used twice (first on line 1)"),
    ],
)
def test_bad_suite_lines_name_the_file_and_line(
    tmp_path: Path, second: dict[str, object] | str, message: str
) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", record(), second)
    with pytest.raises(GraderError) as error:
        load_tasks(str(path))
    assert str(error.value).startswith(message.replace("p.jsonl", str(path))), str(error.value)


def test_a_wrong_canonical_solution_stops_the_preflight(
    tmp_path: Path, bwrap_sandbox: Sandbox
) -> None:
    path = write_jsonl(
        tmp_path / "p.jsonl", record(), record(task_id="b", canonical_solution="    return a\n")
    )
    tasks = load_tasks(str(path))
    with pytest.raises(GraderError, match=r"instance b: reference: .* scores 0/1"):
        preflight(tasks, HumanEvalGrader(sandbox=bwrap_sandbox), str(path))


def test_grade_one_instance_of_a_suite(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "p.jsonl", record(), record(task_id="b"))
    args = ("--task", "p.jsonl", "--instance", "b", "--json")
    answer = tmp_path / "answer.md"
    answer.write_text("```python\ndef add(a, b):\n    return a + b\n```\n")
    done = moa_opt("grade", str(answer), *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["score"], data["max_score"]) == (1.0, 1.0)
    answer.write_text("def add(a, b):\n    return a - b\n")
    done = moa_opt("grade", str(answer), *args, cwd=tmp_path)
    assert json.loads(done.stdout)["score"] == 0.0
    unknown = moa_opt("grade", str(answer), "--task", "p.jsonl", "--instance", "zz", cwd=tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr == (
        "moa-opt: error: --instance: p.jsonl holds no problem with task_id 'zz'\n"
    )
    missing = moa_opt("grade", str(answer), "--task", "p.jsonl", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "--instance: required for a suite; p.jsonl holds 2 problems" in missing.stderr


def test_a_bad_suite_file_is_one_line_from_grade(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "p.jsonl", record(), record(test="def check(c):\n    assert (\n"))
    (tmp_path / "a.py").write_text("def add(a, b):\n    return 0\n")
    done = moa_opt("grade", "a.py", "--task", "p.jsonl", "--instance", "mini/add", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("moa-opt: error: p.jsonl:2: test: does not compile")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_suite_tasks_are_plain_tasks() -> None:
    # the search, run and reproduce take them like any task
    assert all(isinstance(t, Task) for t in load_tasks("humaneval")[:3])
