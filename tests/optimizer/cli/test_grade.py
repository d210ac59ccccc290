"""``moa-opt grade`` and ``moa-opt graders``, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from challenge_candidates import DO_NOTHING, ORIGINAL, ORIGINAL_SCORES, TESTS
from grader_helpers import SECRET, SECRET_VARIABLES
from moa_cli import moa_opt


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_grade_json(tmp_path: Path) -> None:
    result = moa_opt(
        "grade", str(write(tmp_path / "original.py", ORIGINAL)), "--json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["score"] == 30 and data["max_score"] == 120
    assert [t["name"] for t in data["tests"]] == list(TESTS)
    assert [t["points"] for t in data["tests"]] == list(ORIGINAL_SCORES)
    assert set(data["tests"][0]) == {"name", "points", "max_points", "passed", "message"}
    assert data["isolation"] in ("bwrap", "unisolated")


def test_grade_table(tmp_path: Path) -> None:
    response = f"Here is my fix:\n\n```python\n{DO_NOTHING}```\n"
    result = moa_opt("grade", str(write(tmp_path / "answer.txt", response)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Total: 87/120" in result.stdout
    assert "handles_division_by_zero" in result.stdout and "20/20" in result.stdout


def test_grade_with_another_task_and_grader(tmp_path: Path) -> None:
    answer = write(tmp_path / "answer.md", "17*23 is 391.\nAnswer 1: 391\nAnswer 2: 0.4\n")
    result = moa_opt("grade", str(answer), "--task", "arithmetic/basics", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [t["passed"] for t in json.loads(result.stdout)["tests"]] == [True, False, False]
    code = write(tmp_path / "fizz.py", "def fizzbuzz(n):\n    return str(n)\n")
    result = moa_opt(
        "grade", str(code), "--task", "fizzbuzz", "--grader", "pytest", "--json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["max_score"] == 10 and 0 < data["score"] < 10


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    answer = str(write(tmp_path / "a.py", DO_NOTHING))
    cases = [
        (("grade", "missing.py"), "missing.py: no such file"),
        (("grade", answer, "--task", "nosuch"), "unknown task 'nosuch'"),
        (("grade", answer, "--grader", "nosuch"), "unknown grader 'nosuch'"),
        (("grade", answer, "--task", "arithmetic"), "has 2 instances; pick one"),
        # a directory given as the task, with --instance: the path is what is wrong
        (("grade", answer, "--task", str(tmp_path), "--instance", "x"), f"{tmp_path}: not a task"),
        (("grade", answer, "--task", "challenge", "--instance", "x"), "--instance: only for a"),
    ]
    for args, message in cases:
        result = moa_opt(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("moa-opt: error: ") and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_graders_lists_them(tmp_path: Path) -> None:
    result = moa_opt("graders", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("function120", "pytest", "exact", "judge"):
        assert name in result.stdout
    assert "Sandbox isolation here: " in result.stdout


# Looks for the secret everywhere a candidate might: its environment and every process's.
SNOOP = textwrap.dedent(
    """
    import os

    def calculate_user_metrics(users, start_date, end_date):
        found = [v for k, v in os.environ.items() if k.endswith(('KEY', 'SECRET'))]
        try:
            pids = os.listdir('/proc')
        except OSError:  # no /proc in the sandbox: try the usual suspects anyway
            pids = [str(os.getppid()), '1', '2']
        for pid in pids:
            if pid.isdigit():
                try:
                    with open(f'/proc/{pid}/environ', 'rb') as handle:
                        found.append(handle.read().decode(errors='replace'))
                except OSError:
                    pass
        leaked = [text for text in found if 'GRADER-SECRET' in text]
        return 'LEAKED ' + leaked[0][leaked[0].find('sk-'):][:60] if leaked else 'nothing'
    """
)


def test_secret_in_the_grader_environment_never_comes_back(tmp_path: Path) -> None:
    planted = dict.fromkeys(SECRET_VARIABLES, SECRET)
    snoop = write(tmp_path / "snoop.py", SNOOP)
    # Without a sandbox the snooping code does find the secret.
    check = f"exec(open({str(snoop)!r}).read()); print(calculate_user_metrics([], '', ''))"
    unsandboxed = subprocess.run(
        [sys.executable, "-c", check], env=planted, capture_output=True, text=True, check=True
    )
    assert SECRET in unsandboxed.stdout
    task = write(
        tmp_path / "open.yaml",
        "name: open\ngrader: function120\nprompt: p\nparams: {rules: none}\n",
    )
    result = moa_opt("grade", str(snoop), "--task", str(task), "--json", cwd=tmp_path, env=planted)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["isolation"] == "bwrap"
    assert "returned 'nothing'" in data["tests"][0]["message"]
    assert SECRET not in result.stdout + result.stderr


def test_without_bubblewrap_grading_is_refused_unless_asked_for(tmp_path: Path) -> None:
    answer = write(tmp_path / "answer.py", "def calculate_user_metrics(u, s, e):\n    return {}\n")
    no_bwrap = {"PATH": str(tmp_path), "MOA_UNISOLATED": ""}
    refused = moa_opt("grade", str(answer), cwd=tmp_path, env=no_bwrap)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "apt-get install bubblewrap" in refused.stderr and "--unisolated" in refused.stderr
    for opt_in, env in ((["--unisolated"], {}), ([], {"MOA_UNISOLATED": "1"})):
        done = moa_opt("grade", str(answer), "--json", *opt_in, cwd=tmp_path, env=no_bwrap | env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["isolation"] == "unisolated"
        assert "WITHOUT isolation" in done.stderr
