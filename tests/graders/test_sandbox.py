"""The sandbox against hostile candidates: each attack fails its own test, clearly, and the next
test still runs; nothing leaks out, nothing survives, the grader's secret never comes back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from grader_helpers import FAST, SECRET, require_bwrap

from graders import FunctionCall, Opaque, Sandbox, SandboxLimits, SandboxRun


def attack(sandbox: Sandbox, body: str, *, prelude: str = "") -> SandboxRun:
    """Runs ``f("attack")`` (the body) and then ``f("fine")``, which returns ``"fine"``."""
    code = prelude + "\ndef f(mode):\n    if mode == 'attack':\n"
    code += textwrap.indent(textwrap.dedent(body).strip(), "        ") + "\n    return 'fine'\n"
    calls = [FunctionCall("attack", ("attack",)), FunctionCall("after", ("fine",))]
    return sandbox.call_function(code, "f", calls)


def assert_goes_on(run: SandboxRun, secret: str) -> None:
    """The test after the attack ran normally and the secret is nowhere in the run."""
    after = run.outcome("after")
    assert after.status == "returned" and after.value == "fine"
    assert secret not in repr(run)


def test_isolation_is_bubblewrap_on_this_machine(bwrap_sandbox: Sandbox) -> None:
    run = bwrap_sandbox.call_function("def f():\n    return 1\n", "f", [FunctionCall("a", ())])
    assert run.isolation == "bwrap"
    assert run.outcome("a").value == 1


def test_syntax_error_is_a_load_error(any_sandbox: Sandbox, planted_secret: str) -> None:
    run = any_sandbox.call_function("def f(:\n    pass\n", "f", [FunctionCall("a", ())])
    assert run.load_error is not None and "SyntaxError" in run.load_error
    assert run.outcome("a").status == "not_run"


def test_missing_function_is_a_load_error(any_sandbox: Sandbox) -> None:
    run = any_sandbox.call_function("def g():\n    return 1\n", "f", [FunctionCall("a", ())])
    assert run.load_error == "the code defines no function named 'f'"


def test_exception_at_load_is_a_load_error(any_sandbox: Sandbox) -> None:
    run = any_sandbox.call_function("raise SystemExit(4)\n", "f", [FunctionCall("a", ())])
    assert run.load_error == "SystemExit: 4"


def test_infinite_loop_at_load_times_out(any_sandbox: Sandbox) -> None:
    run = any_sandbox.call_function("while True:\n    pass\n", "f", [FunctionCall("a", ())])
    assert run.load_error is not None and "timed out" in run.load_error


def test_exit_at_load_is_a_load_error(any_sandbox: Sandbox) -> None:
    code = "import os\nos._exit(9)\n"
    run = any_sandbox.call_function(code, "f", [FunctionCall("a", ())])
    assert run.load_error == "loading the code failed: the process exited with status 9"


def test_infinite_loop_times_out(any_sandbox: Sandbox, planted_secret: str) -> None:
    run = attack(any_sandbox, "while True:\n    pass")
    assert run.outcome("attack").status == "timeout"
    assert "timed out" in run.outcome("attack").error
    assert_goes_on(run, planted_secret)


def test_loop_that_swallows_the_timeout_is_stopped(
    any_sandbox: Sandbox, planted_secret: str
) -> None:
    body = """
    while True:
        try:
            while True:
                pass
        except BaseException:
            pass
    """
    run = attack(any_sandbox, body)
    assert run.outcome("attack").status == "timeout"
    assert_goes_on(run, planted_secret)


def test_loop_in_c_code_is_killed_from_outside(any_sandbox: Sandbox, planted_secret: str) -> None:
    run = attack(any_sandbox, "return sum(range(10**12))")
    attacked = run.outcome("attack")
    assert attacked.status == "timeout"
    assert attacked.error == "the process timed out (limit 0.75 s per test)"
    assert run.processes == 2  # the next test ran in a fresh process
    assert_goes_on(run, planted_secret)


def test_memory_bomb_raises_memory_error(any_sandbox: Sandbox, planted_secret: str) -> None:
    run = attack(any_sandbox, "blob = bytearray(4 << 30)\nreturn len(blob)")
    assert run.outcome("attack").status == "raised"
    assert run.outcome("attack").error == "MemoryError"
    assert_goes_on(run, planted_secret)


def test_deep_recursion_raises_recursion_error(any_sandbox: Sandbox, planted_secret: str) -> None:
    prelude = "def down(n):\n    return down(n + 1)\n"
    run = attack(any_sandbox, "return down(0)", prelude=prelude)
    assert run.outcome("attack").error.startswith("RecursionError: maximum recursion depth")
    assert_goes_on(run, planted_secret)


def test_stack_overflow_crash_is_contained(any_sandbox: Sandbox, planted_secret: str) -> None:
    prelude = "import sys\ndef down(n):\n    return list(map(down, [n + 1]))\n"
    run = attack(any_sandbox, "sys.setrecursionlimit(10**8)\nreturn down(0)", prelude=prelude)
    attacked = run.outcome("attack")
    assert attacked.status == "crashed"
    assert "SIGSEGV" in attacked.error
    assert_goes_on(run, planted_secret)


@pytest.mark.parametrize(
    ("raise_it", "error"),
    [
        ("raise SystemExit(3)", "SystemExit: 3"),
        ("import sys\nsys.exit('bye')", "SystemExit: bye"),
        ("raise KeyboardInterrupt", "KeyboardInterrupt"),
        ("raise BaseException('base')", "BaseException: base"),
        ("raise GeneratorExit", "GeneratorExit"),
    ],
)
def test_base_exceptions_are_raised_not_fatal(
    any_sandbox: Sandbox, planted_secret: str, raise_it: str, error: str
) -> None:
    run = attack(any_sandbox, raise_it)
    assert run.outcome("attack").status == "raised"
    assert run.outcome("attack").error == error
    assert_goes_on(run, planted_secret)


def test_exception_whose_str_hangs_times_out(any_sandbox: Sandbox, planted_secret: str) -> None:
    prelude = (
        "class Sticky(Exception):\n    def __str__(self):\n        while True:\n            pass\n"
    )
    run = attack(any_sandbox, "raise Sticky()", prelude=prelude)
    assert run.outcome("attack").status == "timeout"
    assert_goes_on(run, planted_secret)


def test_os_exit_crashes_only_its_test(any_sandbox: Sandbox, planted_secret: str) -> None:
    run = attack(any_sandbox, "import os\nos._exit(7)")
    assert run.outcome("attack").status == "crashed"
    assert run.outcome("attack").error == "the process exited with status 7"
    assert run.processes == 2
    assert_goes_on(run, planted_secret)


def test_sigkill_to_itself_crashes_only_its_test(any_sandbox: Sandbox, planted_secret: str) -> None:
    run = attack(any_sandbox, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert run.outcome("attack").status == "crashed"
    assert "SIGKILL" in run.outcome("attack").error
    assert_goes_on(run, planted_secret)


def _processes_with(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(entry.name)
    return found


@pytest.mark.parametrize(
    "start",
    [
        "os.fork()",
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', MARKER])",
        "os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', MARKER])",
        "os.posix_spawn(sys.executable, [sys.executable, '-c', 'pass', MARKER], {})",
    ],
)
def test_no_process_can_be_started(any_sandbox: Sandbox, planted_secret: str, start: str) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    prelude = f"import os, subprocess, sys\nMARKER = {marker!r}\n"
    run = attack(any_sandbox, start, prelude=prelude)
    attacked = run.outcome("attack")
    assert attacked.status == "raised"
    assert attacked.error.startswith("PermissionError")
    assert _processes_with(marker) == []
    assert_goes_on(run, planted_secret)


def test_fork_bomb_is_refused(any_sandbox: Sandbox, planted_secret: str) -> None:
    body = """
    children = 0
    while children < 10000:
        if os.fork() == 0:
            while True:
                pass
        children += 1
    """
    run = attack(any_sandbox, body, prelude="import os\n")
    assert run.outcome("attack").error.startswith("PermissionError")
    assert_goes_on(run, planted_secret)


def _threads_named(name: str) -> list[str]:
    found = []
    for comm in Path("/proc").glob("[0-9]*/task/[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                found.append(str(comm))
        except OSError:
            continue
    return found


def test_thread_left_running_dies_with_the_process(any_sandbox: Sandbox) -> None:
    name = f"mk{uuid.uuid4().hex[:12]}"  # a thread name (comm) holds 15 characters
    body = f"""
    import ctypes, threading

    def spin():
        ctypes.CDLL(None).prctl(15, {name.encode()!r})  # PR_SET_NAME, seen in /proc
        started.set()
        while True:
            pass

    started = threading.Event()
    threading.Thread(target=spin).start()  # not a daemon: it would keep Python alive
    started.wait()
    return 'started'
    """
    run = attack(any_sandbox, body)
    assert run.outcome("attack").value == "started"
    assert run.outcome("after").value == "fine"
    assert run.processes == 1
    assert _threads_named(name) == []


def test_megabytes_of_output_are_capped(any_sandbox: Sandbox, planted_secret: str) -> None:
    body = """
    print('x' * (8 << 20))
    sys.stderr.write('y' * (8 << 20))
    os.write(1, b'z' * (4 << 20))
    os.write(2, b'w' * (4 << 20))
    return 'loud'
    """
    run = attack(any_sandbox, body, prelude="import os, sys\n")
    assert run.outcome("attack").value == "loud"
    assert 0 < len(run.output.encode()) <= FAST.max_output_bytes
    assert_goes_on(run, planted_secret)


def test_printed_protocol_lines_are_just_output(any_sandbox: Sandbox) -> None:
    body = """
    print('{"event": "outcome", "name": "after", "status": "returned", "value": "forged"}')
    print('{"event": "done"}')
    return 'honest'
    """
    run = attack(any_sandbox, body)
    assert run.outcome("attack").value == "honest"
    assert run.outcome("after").value == "fine"
    assert '"done"' in run.output


def test_flooding_the_result_channel_is_stopped(any_sandbox: Sandbox, planted_secret: str) -> None:
    body = """
    for fd in range(3, 10):
        try:
            os.write(fd, b'x' * (16 << 20))
        except OSError:
            pass
    """
    run = attack(any_sandbox, body, prelude="import os\n")
    assert run.outcome("attack").status == "crashed"
    assert "too much result data" in run.outcome("attack").error
    assert_goes_on(run, planted_secret)


def test_writing_a_big_file_fails(any_sandbox: Sandbox, planted_secret: str) -> None:
    body = """
    import tempfile
    with tempfile.TemporaryFile() as handle:
        handle.write(b'x' * (64 << 20))
    """
    run = attack(any_sandbox, body)
    assert run.outcome("attack").error == "OSError: [Errno 27] File too large"
    assert_goes_on(run, planted_secret)


def test_limits_are_in_force(any_sandbox: Sandbox) -> None:
    code = textwrap.dedent(
        """
        import resource
        def f(name):
            return resource.getrlimit(getattr(resource, name))
        """
    )
    names = ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_NOFILE")
    run = any_sandbox.call_function(code, "f", [FunctionCall(n, (n,)) for n in names])
    limits = any_sandbox.limits
    assert [run.outcome(n).value for n in names] == [
        (limits.cpu_seconds, limits.cpu_seconds + 1),
        (limits.memory_bytes, limits.memory_bytes),
        (limits.processes, limits.processes),
        (limits.file_bytes, limits.file_bytes),
        (limits.open_files, limits.open_files),
    ]


def test_environment_is_scrubbed(any_sandbox: Sandbox, planted_secret: str) -> None:
    run = attack(any_sandbox, "return dict(os.environ)", prelude="import os\n")
    environment = run.outcome("attack").value
    assert set(environment) <= {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "HOME", "TMPDIR", "PWD"}
    assert_goes_on(run, planted_secret)


def test_secret_is_out_of_reach_through_subclasses_and_proc(
    bwrap_sandbox: Sandbox, planted_secret: str
) -> None:
    # Reaches os through object.__subclasses__(), then reads every environment it can find.
    body = """
    found = []
    for cls in ().__class__.__base__.__subclasses__():
        if cls.__name__ == '_wrap_close':
            os = cls.__init__.__globals__  # the os module's namespace
            break
    found.append(repr(dict(os['environ'])))
    found.append(str(os['system']('echo pwned')))
    for pid in os['listdir']('/proc'):
        if pid.isdigit():
            try:
                with open(f'/proc/{pid}/environ', 'rb') as handle:
                    found.append(handle.read().decode(errors='replace'))
            except OSError as error:
                found.append(str(error))
    found.append(str(os['getppid']()))
    return found
    """
    run = attack(bwrap_sandbox, body.replace("os['listdir']('/proc')", "['self', '1', '2']"))
    assert run.outcome("attack").status == "returned", run.outcome("attack").error
    found = run.outcome("attack").value
    assert len(found) >= 2  # it really reached os
    assert "No such file or directory: '/proc/1/environ'" in " ".join(found)  # no /proc at all
    assert_goes_on(run, planted_secret)


def test_secret_is_out_of_reach_without_bubblewrap(
    unisolated_sandbox: Sandbox, planted_secret: str
) -> None:
    body = """
    import os
    with open('/proc/self/environ', 'rb') as handle:
        return [repr(dict(os.environ)), handle.read().decode(errors='replace')]
    """
    run = attack(unisolated_sandbox, body)
    assert run.outcome("attack").status == "returned"
    assert_goes_on(run, planted_secret)


def test_network_is_unreachable(any_sandbox: Sandbox, planted_secret: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.2)
        port = server.getsockname()[1]
        body = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)"
        run = attack(any_sandbox, body)
        with pytest.raises(TimeoutError):
            server.accept()
    assert run.outcome("attack").error.startswith("PermissionError")
    assert_goes_on(run, planted_secret)


@pytest.mark.parametrize("target", ["os.getppid()", "-1", "1"])
def test_signals_to_other_processes_are_refused(
    any_sandbox: Sandbox, planted_secret: str, target: str
) -> None:
    run = attack(any_sandbox, f"os.kill({target}, signal.SIGKILL)", prelude="import os, signal\n")
    assert run.outcome("attack").error.startswith("PermissionError")
    assert_goes_on(run, planted_secret)


def test_filesystem_is_read_only_except_tmp(bwrap_sandbox: Sandbox) -> None:
    here = Path(__file__).parent
    outside_tmp = Path("/var/tmp") if here.is_relative_to("/tmp") else here
    target = outside_tmp / f"pwned-{uuid.uuid4().hex}"
    body = f"""
    with open('/tmp/scratch', 'w') as handle:
        handle.write('ok')
    open({str(target)!r}, 'w').write('pwned')
    """
    run = attack(bwrap_sandbox, body)
    error = run.outcome("attack").error
    assert error.startswith(("OSError: [Errno 30]", "FileNotFoundError", "PermissionError")), error
    assert not target.exists()


def test_private_tmp_is_not_the_grader_tmp(bwrap_sandbox: Sandbox) -> None:
    mine = Path("/tmp") / f"grader-visible-{uuid.uuid4().hex}"
    mine.write_text("host")
    try:
        run = attack(bwrap_sandbox, f"return os.path.exists({str(mine)!r})", prelude="import os\n")
    finally:
        mine.unlink()
    assert run.outcome("attack").value is False


HOSTILE_VALUES = """
class Sneaky(dict):
    def get(self, key, default=None):
        return 10
    def __eq__(self, other):
        return True
    def __len__(self):
        return 5
    def __iter__(self):
        return iter(['forged'])

class SneakyList(list):
    def __len__(self):
        return 2
    def __iter__(self):
        return iter([1, 2])
    def __getitem__(self, index):
        return Sneaky()

class Equal:
    def __eq__(self, other):
        return True

class Ten(int):
    def __eq__(self, other):
        return True
    def __index__(self):
        return 99

class Text(str):
    def __eq__(self, other):
        return True

class Real(float):
    def __float__(self):
        return 2.95
    def __sub__(self, other):
        return 0.0

def f(kind):
    if kind == 'dict':
        return Sneaky(average_engagement=0, top_performers=SneakyList([{'posts': 1}]))
    if kind == 'object':
        return Equal()
    if kind == 'scalars':
        return [Ten(3), Text('abc'), Real(1.5), True]
    if kind == 'cycle':
        loop = []
        loop.append(loop)
        return loop
    if kind == 'huge':
        return list(range(10**6))
    if kind == 'generator':
        return (i for i in range(3))
    return {frozenset({1}): {2}, (1, 'a'): None}
"""


def test_returned_values_come_back_as_the_plain_data_they_hold(any_sandbox: Sandbox) -> None:
    kinds = ("dict", "object", "scalars", "cycle", "huge", "generator", "keys")
    run = any_sandbox.call_function(HOSTILE_VALUES, "f", [FunctionCall(k, (k,)) for k in kinds])
    value = run.outcome("dict").value
    assert type(value) is dict and value == {
        "average_engagement": 0,
        "top_performers": [{"posts": 1}],
    }
    assert type(value["top_performers"]) is list and len(value["top_performers"]) == 1
    assert value.get("missing") is None
    opaque = run.outcome("object").value
    assert isinstance(opaque, Opaque) and opaque.type_name == "Equal"
    assert opaque != opaque and opaque != 0 and opaque != None  # noqa: E711
    assert (opaque == opaque) is False and (opaque == 0) is False
    scalars = run.outcome("scalars").value
    assert scalars == [3, "abc", 1.5, True]
    assert [type(s) for s in scalars] == [int, str, float, bool]
    cycle = run.outcome("cycle").value
    depth = 0
    while isinstance(cycle, list):
        cycle, depth = cycle[0], depth + 1
    assert isinstance(cycle, Opaque) and cycle.reason == "nested too deeply to send back"
    assert depth == FAST.max_depth
    huge = run.outcome("huge").value
    assert isinstance(huge, Opaque) and huge.reason == "too large to send back"
    assert isinstance(run.outcome("generator").value, Opaque)
    assert run.outcome("keys").value == {frozenset({1}): {2}, (1, "a"): None}


def test_arguments_come_back_as_left_by_the_call(any_sandbox: Sandbox) -> None:
    code = (
        "def f(users):\n    users[0]['seen'] = True\n    users.append('extra')\n    return None\n"
    )
    run = any_sandbox.call_function(code, "f", [FunctionCall("a", ([{"id": 1}],))])
    assert run.outcome("a").args == ([{"id": 1, "seen": True}, "extra"],)


def test_each_call_gets_fresh_arguments(any_sandbox: Sandbox) -> None:
    code = "def f(items):\n    items.append(len(items))\n    return list(items)\n"
    shared = ([0],)
    run = any_sandbox.call_function(
        code, "f", [FunctionCall("a", shared), FunctionCall("b", shared)]
    )
    assert run.outcome("a").value == [0, 1] and run.outcome("b").value == [0, 1]


def test_state_persists_across_calls_in_one_process(any_sandbox: Sandbox) -> None:
    code = "calls = []\ndef f():\n    calls.append(1)\n    return len(calls)\n"
    run = any_sandbox.call_function(code, "f", [FunctionCall(n, ()) for n in "abc"])
    assert [o.value for o in run.outcomes] == [1, 2, 3]
    assert run.processes == 1


def test_candidate_budget_stops_a_candidate_that_keeps_hanging(planted_secret: str) -> None:
    sandbox = Sandbox(
        SandboxLimits(test_timeout=0.5, candidate_timeout=1.8), isolation="unisolated"
    )
    code = "def f():\n    return sum(range(10**12))\n"
    run = sandbox.call_function(code, "f", [FunctionCall(str(i), ()) for i in range(6)])
    statuses = [o.status for o in run.outcomes]
    assert statuses[0] == "timeout" and statuses[-1] == "not_run"
    assert set(statuses) == {"timeout", "not_run"}
    assert "time budget of 1.8 s ran out" in run.outcomes[-1].error


def test_grader_process_state_is_untouched(any_sandbox: Sandbox, planted_secret: str) -> None:
    cwd = Path.cwd()
    run = attack(any_sandbox, "os.environ.clear()\nos.chdir('/')", prelude="import os\n")
    assert run.outcome("attack").status == "returned"
    assert os.environ["MOA_TEST_SECRET"] == SECRET
    assert Path.cwd() == cwd


def test_pytest_mode_reports_each_test(any_sandbox: Sandbox) -> None:
    solution = (
        "def double(n):\n    if n == 3:\n        while True:\n            pass\n    return n * 2\n"
    )
    tests = textwrap.dedent(
        """
        from solution import double

        def test_two():
            assert double(2) == 4

        def test_wrong():
            assert double(1) == 3

        def test_hangs():
            double(3)

        def test_after():
            assert double(5) == 10
        """
    )
    run = any_sandbox.run_pytest(solution, {"test_double.py": tests}, "test_double.py")
    statuses = {o.name.split("::")[1]: o.status for o in run.outcomes}
    assert statuses == {
        "test_two": "passed",
        "test_wrong": "failed",
        "test_hangs": "timeout",
        "test_after": "passed",
    }
    assert "assert 2 == 3" in run.outcome("test_double.py::test_wrong").error


def test_pytest_mode_rejects_paths_as_file_names(any_sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="not a plain file name"):
        any_sandbox.run_pytest("", {"../escape.py": ""}, "../escape.py")


def test_bwrap_isolation_can_be_required() -> None:
    require_bwrap()
    assert Sandbox(isolation="bwrap").isolation == "bwrap"


def test_bwrap_runs_a_virtualenv_under_tmp_on_its_base_interpreter(tmp_path: Path) -> None:
    """A checkout (and its virtualenv) under /tmp works; the virtualenv itself is not visible."""
    require_bwrap()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    assert str(venv).startswith("/tmp/")
    sandbox = Sandbox(isolation="bwrap", python=str(venv / "bin" / "python"))
    assert sandbox.isolation == "bwrap"
    code = "import os, sys\ndef where(venv):\n    return [sys.prefix, os.path.exists(venv)]\n"
    run = sandbox.call_function(code, "where", [FunctionCall("w", (str(venv),))])
    assert run.outcomes[0].value == [sys.base_prefix, False]


HUMANEVAL_TEST = """
METADATA = {"author": "jt", "dataset": "test"}


def check(candidate):
    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True
    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False
    assert candidate([1.1, 2.2, 3.1, 4.1, 5.1], 1.0) == True
"""
CLOSE = """
def has_close_elements(numbers, threshold):
    for i, a in enumerate(numbers):
        for b in numbers[i + 1:]:
            if abs(a - b) < threshold:
                return True
    return False
"""


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        (CLOSE, "passed", ""),
        (
            CLOSE.replace("< threshold", "> threshold"),
            "failed",
            "AssertionError: assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False",
        ),
        (CLOSE.replace("    for i,", "    while True:\n        pass\n    for i,"), "timeout", ""),
        ("def has_close_elements(n, t):\n    raise KeyboardInterrupt\n", "failed", "Exception"),
    ],
)
def test_check_candidate_runs_apart_from_the_candidate(
    bwrap_sandbox: Sandbox, code: str, status: str, error: str
) -> None:
    run = bwrap_sandbox.run_check(code, HUMANEVAL_TEST, "has_close_elements")
    assert run.load_error is None
    (outcome,) = run.outcomes
    assert (outcome.name, outcome.status) == ("check", status), outcome.error
    assert outcome.error.startswith(error)


def test_check_candidate_verdicts_cannot_be_forged(bwrap_sandbox: Sandbox) -> None:
    forger = """
import json, os, sys
line = json.dumps({"event": "outcome", "name": "check", "status": "passed", "error": ""})
for fd in range(3, 20):
    try:
        os.write(fd, (line + "\\n").encode())
    except OSError:
        pass
runner = sys.modules["__main__"]
original = runner._Channel.send
def send(self, message):
    original(self, {"event": "outcome", "name": "check", "status": "passed", "error": ""})
    original(self, {"event": "done"})
    return original(self, message)
runner._Channel.send = send

def has_close_elements(numbers, threshold):
    return False
"""
    run = bwrap_sandbox.run_check(forger, HUMANEVAL_TEST, "has_close_elements")
    assert run.load_error is not None or run.outcomes[0].status != "passed"


def test_check_candidate_needs_the_entry_point_and_a_check(bwrap_sandbox: Sandbox) -> None:
    missing = bwrap_sandbox.run_check("def other():\n    pass\n", HUMANEVAL_TEST, "has_close")
    assert missing.load_error == "the code defines no function named 'has_close'"
    no_check = bwrap_sandbox.run_check(CLOSE, "x = 1\n", "has_close_elements")
    assert no_check.load_error is not None and "defines no function check" in no_check.load_error


def test_check_candidate_may_call_the_entry_point_by_name(bwrap_sandbox: Sandbox) -> None:
    test = "def check(candidate):\n    assert has_close_elements([1.0, 1.05], 0.1)\n"
    run = bwrap_sandbox.run_check(CLOSE, test, "has_close_elements")
    assert run.outcomes[0].status == "passed", run.outcomes[0].error
