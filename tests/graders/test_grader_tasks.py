"""Tasks as data: the shipped tasks, task files by path, and errors that name file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from graders import GraderError, list_tasks, load_task, load_tasks


def test_shipped_tasks() -> None:
    assert list_tasks() == ("arithmetic", "challenge", "explain_recursion", "fizzbuzz")


def test_challenge_states_the_workshop_facts() -> None:
    task = load_task("challenge")
    assert (task.name, task.grader, task.function_name) == (
        "challenge",
        "function120",
        "calculate_user_metrics",
    )
    prompt = " ".join(task.prompt.split())
    for fact in (
        "calculate_user_metrics(users, start_date, end_date)",
        "`average_engagement`",
        "`top_performers`",
        "`active_count`",
        "(posts * 2 + comments * 1.5 + likes * 0.1) / days_active",
        "compare the date strings as strings",
        "`days_active` being 0",
        "check that a key exists before using it",
        "over the active users only, not over all users",
        "highest first",
        "empty `users` list",
        "validate its parameters",
        "import no modules",
        "Return only the code of the function",
    ):
        assert fact in prompt, fact
    for key in ("last_login", "posts", "comments", "likes", "days_active"):
        assert f"`{key}`" in prompt


def test_instances_become_tasks_with_merged_params() -> None:
    tasks = load_tasks("arithmetic")
    assert [t.name for t in tasks] == ["arithmetic/basics", "arithmetic/words"]
    assert all(t.params["max_score"] == 3 and len(t.params["questions"]) == 3 for t in tasks)
    assert load_tasks("arithmetic/words") == (tasks[1],)


def test_one_task_must_be_picked_from_several() -> None:
    with pytest.raises(
        GraderError, match="'arithmetic' has 2 instances; pick one: arithmetic/basics"
    ):
        load_task("arithmetic")


def test_referenced_files_are_read_into_params() -> None:
    task = load_task("fizzbuzz")
    assert task.params["test_file"] == "fizzbuzz_checks.py"
    assert "from solution import fizzbuzz" in task.params["test_source"]


def test_task_file_by_path(tmp_path: Path) -> None:
    (tmp_path / "checks.py").write_text("def test_x():\n    pass\n")
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\ngrader: pytest\nfunction_name: f\nprompt: Write f.\n"
        "params: {test_file: checks.py, max_score: 2}\n"
    )
    (task,) = load_tasks(path)
    assert task.name == "mine" and task.params["test_source"] == "def test_x():\n    pass\n"
    assert load_task(str(path)) == task


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: t\ngrader: exact\nprompt: [unclosed\n", "t.yaml: not valid YAML"),
        ("- a list\n", "t.yaml: expected a mapping of task fields"),
        ("grader: exact\nprompt: p\n", "t.yaml: name: expected a name"),
        ("name: t\nprompt: p\n", "t.yaml: grader: required"),
        ("name: t\ngrader: nosuch\nprompt: p\n", "t.yaml: grader: unknown grader 'nosuch'"),
        ("name: t\ngrader: exact\nprompt: p\ncolour: red\n", "t.yaml: colour: unknown field"),
        ("name: t\ngrader: function120\n", "t.yaml: prompt: required"),
        (
            "name: t\ngrader: function120\nprompt: p\nparams: {rules: lax}\n",
            "t.yaml: params.rules: expected one of workshop, none",
        ),
        (
            "name: t\ngrader: exact\nprompt: p\n",
            "t.yaml: params.questions: expected a non-empty list",
        ),
        (
            "name: t\ngrader: exact\nprompt: p\ninstances:\n"
            "  - params: {questions: [{answer: 1, match: x}]}\n",
            r"t.yaml: instances\[0\].params.questions\[0\].match: expected one of",
        ),
        (
            "name: t\ngrader: exact\nprompt: p\ninstances: []\n",
            "t.yaml: instances: expected a non-empty list",
        ),
        (
            "name: t\ngrader: exact\nprompt: p\nparams: {questions: [{answer: 1}]}\n"
            "instances:\n  - name: a\n  - name: a\n",
            r"t.yaml: instances\[1\].name: 'a' is used twice",
        ),
        (
            "name: t\ngrader: pytest\nfunction_name: f\nprompt: p\nparams: {test_file: gone.py}\n",
            "t.yaml: params.test_file: no such file 'gone.py'",
        ),
        (
            "name: t\ngrader: pytest\nfunction_name: f\nprompt: p\n",
            "t.yaml: params.test_file: required",
        ),
        ("name: t\ngrader: judge\nprompt: p\n", "t.yaml: params.rubric: required"),
    ],
)
def test_invalid_task_files_name_the_file_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(GraderError, match=message):
        load_tasks(path)


def test_unknown_names() -> None:
    with pytest.raises(
        GraderError, match="unknown task 'nosuch'; shipped tasks: arithmetic, challenge"
    ):
        load_tasks("nosuch")
    with pytest.raises(GraderError, match="task 'arithmetic' has no instance 'hard'; it has: "):
        load_tasks("arithmetic/hard")
    with pytest.raises(GraderError, match=r"missing\.yaml: no such task file"):
        load_tasks("missing.yaml")


def test_a_path_that_is_not_a_task_file_is_named(tmp_path: Path) -> None:
    answer = tmp_path / "answer.py"
    answer.write_text("def f():\n    return 1\n")
    for given in (tmp_path, answer, tmp_path / "nosuch" / "task"):
        with pytest.raises(GraderError) as caught:
            load_tasks(given.as_posix())
        assert str(caught.value) == f"{given}: not a task file (a .yaml task or a .jsonl suite)"
