"""Regression tests for the attacks of the sandbox issue, run as a hostile candidate would.

Each attack is graded by ``function120`` under the workshop's rules and with ``rules: none``,
under bubblewrap (where no isolation works, nothing runs: see the fail-closed tests). Each
asserts what the issue asks: the score is no higher than the same function's without the
attack; nothing is written outside the sandbox's private /tmp; no sysctl is written; no secret
from the grader's environment or from a file under the home directory appears in any output,
feedback or transcript, also reversed, hex- or base64-encoded.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import stat
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from challenge_candidates import CLEAN
from grader_helpers import FAST, SECRET, SECRET_VARIABLES, require_bwrap

import graders._isolation
import graders._sandbox
from graders import (
    FUNCTION120_TESTS,
    Function120Grader,
    FunctionCall,
    GradeResult,
    Sandbox,
    SandboxError,
    Task,
    safe_text,
)

RULES = ("workshop", "none")
CALLS = [call for test in FUNCTION120_TESTS for call in test.calls]


def tagged(value: Any) -> Any:
    """The sandbox's tagged form of plain data, as a forger would write it."""
    if isinstance(value, dict):
        return ["dict", [[tagged(k), tagged(v)] for k, v in value.items()]]
    if isinstance(value, list | tuple):
        return ["list" if isinstance(value, list) else "tuple", [tagged(v) for v in value]]
    return value


def _correct_values() -> dict[str, tuple[Any, Any]]:
    """What a correct solution returns for each call (run here: it is our own code)."""
    namespace: dict[str, Any] = {}
    exec(CLEAN, namespace)
    values = {}
    for call in CALLS:
        args = copy.deepcopy(list(call.args))
        values[call.name] = (tagged(namespace["calculate_user_metrics"](*args)), tagged(args))
    return values


CORRECT = _correct_values()
"""Per call name: the tagged value and arguments a forger would claim."""


def _host_state() -> tuple[frozenset[str], ...]:
    """What an attack could leave behind: files in home, the project, /var/tmp; a sysctl."""
    root = Path(__file__).resolve().parents[2]
    listings = [  # home secrets planted by this module (here or in a parallel run) aside
        frozenset(p.name for p in folder.iterdir() if not p.name.startswith(".moa-attack-"))
        for folder in (Path.home(), root, root / "tests" / "graders", Path("/var/tmp"))
    ]
    sysctl = Path("/proc/sys/kernel/core_pattern").read_text()
    return (*listings, frozenset([sysctl]))


@pytest.fixture(autouse=True)
def nothing_left_on_the_host() -> Iterator[None]:
    """Every attack: no file appears outside the sandbox's private /tmp, no sysctl changes."""
    before = _host_state()
    yield
    assert _host_state() == before


@pytest.fixture
def home_secret() -> Iterator[str]:
    """A secret in a mode-600 file under the grader's home directory."""
    secret = f"home-secret-{uuid.uuid4().hex}"
    path = Path.home() / f".moa-attack-{uuid.uuid4().hex}"
    path.write_text(secret)
    path.chmod(0o600)
    try:
        yield secret
    finally:
        path.unlink()


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch, home_secret: str) -> list[str]:
    """Every secret a candidate must not get back: the environment's and the home file's."""
    for name in SECRET_VARIABLES:
        monkeypatch.setenv(name, SECRET)
    return [SECRET, home_secret]


@pytest.fixture(scope="module")
def grader() -> Function120Grader:
    require_bwrap()
    return Function120Grader(sandbox=Sandbox(FAST, isolation="bwrap"))


def task(rules: str) -> Task:
    return Task(
        f"challenge-{rules}",
        "p",
        "function120",
        "calculate_user_metrics",
        {"rules": rules},
    )


def encodings(secret: str) -> list[str]:
    data = secret.encode()
    return [secret, secret[::-1], data.hex(), base64.b64encode(data).decode().rstrip("=")]


def assert_no_secret(result: GradeResult, secrets: list[str], *texts: str) -> None:
    everything = json.dumps(result.to_dict()) + repr(result) + "".join(texts)
    for secret in secrets:
        for form in encodings(secret):
            assert form not in everything


def fenced(code: str) -> str:
    return "```python\n" + textwrap.dedent(code).strip() + "\n```\n"


def grade_pair(
    grader: Function120Grader, rules: str, attack: str, function: str
) -> tuple[GradeResult, GradeResult]:
    """Grades the function with the attack, and the same function alone."""
    honest = grader.grade(fenced(function), task(rules))
    attacked = grader.grade(fenced(attack + "\n" + textwrap.dedent(function)), task(rules))
    return attacked, honest


RAISES = """
def calculate_user_metrics(users, start_date, end_date):
    raise ValueError('no')
"""
DOES_NOTHING = """
def calculate_user_metrics(users, start_date, end_date):
    return None
"""


@pytest.mark.parametrize("rules", RULES)
def test_fake_records_on_the_result_channel_are_not_verdicts(
    grader: Function120Grader, rules: str, secrets: list[str]
) -> None:
    """Attack 1a: module-level code writes one fake passing record per test to every fd."""
    records = "".join(
        json.dumps({"event": "outcome", "name": name, "status": "returned", "value": value}) + "\n"
        for name, (value, _) in CORRECT.items()
    )
    attack = f"""
import logging
RECORDS = {records!r}
for number in range(3, 20):
    try:
        handler = logging.FileHandler('/proc/self/fd/' + str(number))
        handler.stream.write(RECORDS)
        handler.stream.flush()
    except Exception:
        pass
"""
    if rules == "none":
        attack += "import os\nfor fd in range(3, 20):\n    try:\n        os.write(fd, RECORDS.encode())\n    except OSError:\n        pass\n"  # noqa: E501
    attacked, honest = grade_pair(grader, rules, attack, DOES_NOTHING)
    assert attacked.score <= honest.score
    assert_no_secret(attacked, secrets)


@pytest.mark.parametrize("rules", RULES)
def test_patching_the_harness_does_not_forge_verdicts(
    grader: Function120Grader, rules: str, secrets: list[str]
) -> None:
    """Attack 1b: the candidate finds the runner through sys.modules and rewrites what it sends.

    Whatever it rewrites, it can only answer the call it was asked, as a function could: a
    record naming a test, or answering a call it was not asked, counts for nothing.
    """
    attack = f"""
import sys
FORGED = {CORRECT!r}
runner = getattr(sys, 'mod' + 'ules')['_' + '_main__']
for value in list(vars(runner).values()):
    send = getattr(value, 'send', None)
    if isinstance(value, type) and send is not None:
        def forged(self, message, send=send):
            name = message.get('name')
            if name in FORGED and message.get('status') in ('raised', 'returned'):
                value, args = FORGED[name]
                message = dict(message, status='returned', value=value, args=args, error='')
            return send(self, message)
        setattr(value, 'send', forged)
"""
    attacked, honest = grade_pair(grader, rules, attack, RAISES)
    assert attacked.score <= honest.score
    assert_no_secret(attacked, secrets)


@pytest.mark.parametrize("rules", RULES)
def test_answers_to_calls_not_asked_fail_the_test(
    grader: Function120Grader, rules: str, secrets: list[str]
) -> None:
    """A second reply, or a reply to the next call before it is sent, fails that test."""
    attack = """
import sys
runner = getattr(sys, 'mod' + 'ules')['_' + '_main__']
channel = runner._Channel
original = channel.send
def send_twice(self, message):
    original(self, message)
    if 'seq' in message:
        early = dict(message, seq=message['seq'] + 1, status='returned', value={'active_count': 0})
        original(self, early)
channel.send = send_twice
"""
    attacked, honest = grade_pair(grader, rules, attack, DOES_NOTHING)
    assert attacked.score <= honest.score
    assert any("answers no call" in t.message for t in attacked.tests) or attacked.score == 0
    assert_no_secret(attacked, secrets)


def test_a_reply_to_a_call_not_asked_is_refused_by_the_driver() -> None:
    """The driver's rule itself: one reply per call, matching its nonce and sequence number."""
    require_bwrap()
    code = """
import sys
runner = getattr(sys, 'mod' + 'ules')['_' + '_main__']
original = runner._Channel.send
def send_twice(self, message):
    original(self, message)
    if message.get('seq') == 1:
        original(self, dict(message, seq=2, value=['forged']))
runner._Channel.send = send_twice
def f(n):
    return ['real', n]
"""
    sandbox = Sandbox(FAST, isolation="bwrap")
    calls = [FunctionCall(name, (name,)) for name in ("a", "b", "c")]
    run = sandbox.call_function(code, "f", calls)
    assert run.outcome("a").value == ["real", "a"]
    assert run.outcome("b").status == "crashed"
    assert run.outcome("b").error == "the process sent a message that answers no call"
    assert run.outcome("c").value == ["real", "c"]  # in a fresh process
    assert run.processes == 2


@pytest.mark.parametrize("rules", RULES)
def test_kernel_settings_cannot_be_written(
    grader: Function120Grader, rules: str, secrets: list[str]
) -> None:
    """Attack 2: write /proc/sys/kernel/core_pattern (with its current value) from inside."""
    before = Path("/proc/sys/kernel/core_pattern").read_text()
    attack = f"""
import logging
def attempt():
    try:
        handler = logging.FileHandler('/proc/sys/kernel/core_pattern', mode='w')
        handler.stream.write({before!r})
        handler.stream.close()
        return 'WROTE'
    except Exception as error:
        return 'refused: ' + type(error).__name__
"""
    function = """
def calculate_user_metrics(users, start_date, end_date):
    raise ValueError(attempt())
"""
    attacked = grader.grade(fenced(attack + function), task(rules))
    assert Path("/proc/sys/kernel/core_pattern").read_text() == before
    assert "WROTE" not in json.dumps(attacked.to_dict())
    if rules == "none":  # the workshop's rules refuse nothing here: the sandbox does
        assert "refused: FileNotFoundError" in attacked.feedback
    assert_no_secret(attacked, secrets)


def test_the_sandbox_runs_unprivileged_without_capabilities(grader: Function120Grader) -> None:
    require_bwrap()
    code = """
import os
def f():
    return [os.getuid(), os.getgid(), os.geteuid(), os.getgroups(), sorted(os.listdir('/'))]
"""
    run = Sandbox(FAST, isolation="bwrap").call_function(code, "f", [FunctionCall("f", ())])
    uid, gid, euid, groups, top = run.outcome("f").value
    assert (uid, gid, euid, groups) == (65534, 65534, 65534, [])
    assert "proc" not in top and "home" not in top and "etc" in top
    assert "work" not in top


@pytest.mark.parametrize("rules", RULES)
def test_host_files_are_out_of_reach(
    grader: Function120Grader, rules: str, secrets: list[str], home_secret: str
) -> None:
    """Attack 3: read a planted file under the home directory and the project's own files."""
    project = Path(__file__).resolve()
    targets = [str(p) for p in Path.home().glob(".moa-attack-*")]
    targets += [str(project), "/etc/passwd", "/etc/shadow", str(project.parents[2] / "README.md")]
    attack = f"""
import logging
TARGETS = {targets!r}
def steal():
    found = []
    for target in TARGETS:
        try:
            handler = logging.FileHandler(target, mode='r')
            found.append(handler.stream.read())
        except Exception as error:
            found.append(type(error).__name__)
    return ' '.join(found)
"""
    function = """
def calculate_user_metrics(users, start_date, end_date):
    raise ValueError(steal())
"""
    attacked = grader.grade(fenced(attack + function), task(rules))
    text = json.dumps(attacked.to_dict())
    assert "moa-optimizer" not in text and "root:x:0:0" not in text
    assert_no_secret(attacked, [*secrets, home_secret])


@pytest.mark.parametrize("rules", RULES)
def test_private_tmp_and_shm_are_bounded(rules: str) -> None:
    """Attack 4: fill /tmp and /dev/shm (1.5 GiB asked); each stops at its tmpfs size."""
    require_bwrap()
    code = """
import os
def fill(where):
    written = 0
    chunk = b'x' * (1 << 20)
    for index in range(1536):
        try:
            with open(os.path.join(where, 'f%d' % (index // 8)), 'ab') as handle:
                handle.write(chunk)
            written += len(chunk)
        except OSError:
            break
    return written
"""
    limits = FAST.__class__(**{**FAST.__dict__, "tmp_bytes": 8 << 20, "test_timeout": 10.0})
    sandbox = Sandbox(limits, isolation="bwrap")
    run = sandbox.call_function(code, "fill", [FunctionCall(w, (w,)) for w in ("/tmp", "/dev/shm")])
    for where in ("/tmp", "/dev/shm"):
        assert run.outcome(where).status == "returned", run.outcome(where).error
        assert 0 < run.outcome(where).value <= limits.tmp_bytes


@pytest.mark.parametrize("rules", RULES)
def test_nothing_is_written_outside_the_private_tmp(
    grader: Function120Grader, rules: str, secrets: list[str]
) -> None:
    """Attack 5 under bubblewrap: a .pth file in the virtualenv, a file in the home directory."""
    marker = uuid.uuid4().hex
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    targets = [
        site / f"zz-{marker}.pth",
        Path.home() / f".moa-planted-{marker}",
        Path(__file__).parent / f"planted-{marker}",
        Path("/var/tmp") / f"planted-{marker}",
    ]
    attack = f"""
import logging
for target in {[str(t) for t in targets]!r}:
    try:
        logging.FileHandler(target, mode='w').stream.write('import os; print(os.environ)')
    except Exception:
        pass
"""
    attacked, honest = grade_pair(grader, rules, attack, DOES_NOTHING)
    assert attacked.score <= honest.score
    for target in targets:
        assert not target.exists()
    assert_no_secret(attacked, secrets)


@pytest.mark.parametrize("rules", RULES)
def test_parent_process_memory_and_environment_are_out_of_reach(
    grader: Function120Grader, rules: str, secrets: list[str]
) -> None:
    """Attack 5: /proc/<ppid>/environ, /mem and /cmdline, with the secret sent back reversed."""
    attack = """
import logging
def snoop():
    found = []
    for pid in ('self', '1', '2', '3'):
        for part in ('environ', 'cmdline', 'mem'):
            try:
                handler = logging.FileHandler('/proc/' + pid + '/' + part, mode='rb')
                found.append(handler.stream.read(1 << 16).decode('latin-1')[::-1])
            except Exception as error:
                found.append(type(error).__name__)
    return ' '.join(found)
"""
    function = """
def calculate_user_metrics(users, start_date, end_date):
    raise ValueError(snoop())
"""
    attacked = grader.grade(fenced(attack + function), task(rules))
    assert_no_secret(attacked, secrets)


def test_without_isolation_grading_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail closed: no bubblewrap means no run, with a message saying how to get it."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv(graders._isolation.UNISOLATED_ENV, raising=False)
    monkeypatch.setattr(graders._isolation, "_isolation_checks", {})
    with pytest.raises(SandboxError) as refused:
        Sandbox(FAST)
    message = str(refused.value)
    assert "bubblewrap (bwrap) is not installed" in message
    assert "apt-get install bubblewrap" in message
    assert "--unisolated" in message and "MOA_UNISOLATED=1" in message
    assert "\n" not in message


def test_unisolated_runs_only_on_request_and_warn(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv(graders._isolation.UNISOLATED_ENV, "1")
    monkeypatch.setattr(graders._isolation, "_isolation_checks", {})
    sandbox = Sandbox(FAST)
    assert sandbox.isolation == "unisolated"
    assert "WITHOUT isolation" in capsys.readouterr().err
    run = sandbox.call_function("def f():\n    return 1\n", "f", [FunctionCall("a", ())])
    assert run.isolation == "unisolated" and run.outcome("a").value == 1


def test_a_process_without_its_seccomp_filter_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack 7: the runner says whether its filter is in force, and the driver reads it."""
    require_bwrap()
    source = graders._isolation.runner_source().replace(
        "program = _seccomp_program(os.uname().machine, os.getpid())", "program = None"
    )
    assert "program = None" in source
    bytecode = __import__("marshal").dumps(compile(source, "<runner>", "exec"))
    monkeypatch.setattr(graders._sandbox, "_runner_bytecode", lambda: bytecode)
    sandbox = Sandbox(FAST, isolation="bwrap")
    with pytest.raises(SandboxError, match="seccomp filter could not be installed"):
        sandbox.call_function("def f():\n    return 1\n", "f", [FunctionCall("a", ())])


HOSTILE_TEXT = [
    "'\\ud800'",
    "'nul\\x00byte'",
    "'\\x1b[2J\\x1b[31mred\\r\\x07'",
    "'x' * 100000",
    "'\\udcff\\ud83d'",
]


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_hostile_text_is_escaped_everywhere(
    grader: Function120Grader, text: str, tmp_path: Path
) -> None:
    """Attack 6: what a candidate raises or prints never crashes output, JSON or transcripts."""
    answer = fenced(
        f"""
import sys
def calculate_user_metrics(users, start_date, end_date):
    print({text})
    raise ValueError({text})
"""
    )
    result = grader.grade(answer, task("none"))
    for item in [result.feedback, *(t.message for t in result.tests)]:
        item.encode("utf-8")  # no lone surrogate
        assert not any(ord(c) < 32 and c not in "\n\t" for c in item)
        assert all(len(line) <= 2100 for line in item.splitlines())
    assert safe_text(result.feedback) == result.feedback
    path = tmp_path / "answer.md"
    path.write_text(answer)
    for flags in ([], ["--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "optimizer", "grade", str(path), "--task", "challenge", *flags],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "100"},
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr


def test_cleanup_survives_a_candidate_that_swaps_its_directory(tmp_path: Path) -> None:
    """Attack 5: unisolated, the candidate replaces its working directory with a symlink."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "keep").write_text("keep")
    code = f"""
import os, shutil
def f():
    here = os.getcwd()
    os.chmod(here, 0)
    os.rename(here, here + '-moved')
    os.symlink({str(home)!r}, here)
    return 'swapped'
"""
    before = set(Path("/tmp").glob("moa-sandbox-*"))
    sandbox = Sandbox(FAST, isolation="unisolated")
    run = sandbox.call_function(code, "f", [FunctionCall("a", ())])
    assert run.outcome("a").value == "swapped", run.outcome("a").error
    assert (home / "keep").read_text() == "keep"
    assert set(Path("/tmp").glob("moa-sandbox-*")) == before
    assert not any(stat.S_ISLNK(p.lstat().st_mode) for p in home.iterdir())


def test_the_isolation_report_says_when_seccomp_cannot_be_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Attack 7, at the door: no filter means no isolation, reported and refused."""
    require_bwrap()
    source = graders._isolation.runner_source().replace(
        "program = _seccomp_program(os.uname().machine, os.getpid())", "program = None"
    )
    monkeypatch.setattr(graders._isolation, "runner_source", lambda: source)
    monkeypatch.setattr(graders._isolation, "_isolation_checks", {})
    monkeypatch.delenv(graders._isolation.UNISOLATED_ENV, raising=False)
    check = graders._isolation.check_isolation()
    assert check.level == "none"
    assert check.detail == f"the seccomp filter cannot be installed on {os.uname().machine}"
    with pytest.raises(SandboxError, match="seccomp filter cannot be installed"):
        Sandbox(FAST)
