"""The sandbox: the only place generated code ever runs.

Each run starts a fresh ``python -I`` process (never a fork of the grader) with a scrubbed
environment. Where bubblewrap works it runs inside ``bwrap``: read-only filesystem with a
private ``/tmp``, no network, its own PID, IPC and UTS namespaces, no capabilities, killed with
the grader. Where it does not, the run falls back to rlimits alone and says so in
``isolation``. In both cases the process lowers its rlimits (CPU, address space, processes,
file size, open files) and installs a seccomp filter (no new processes or programs, no signals
to other processes, no network sockets) before any candidate code runs; every test has a
wall-clock limit inside the process and a second one enforced from outside, the candidate has
an overall budget, output and results are capped, and the whole process group is killed at the
end.

All tests of a candidate run in one process. When a test hangs past its limit or takes the
process down, the parent records that test's failure and starts a fresh process for the tests
after it, so one bad test costs one test.

The process sends back plain values only (``_values``); every check runs on those in the
grader's process.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib.resources
import json
import marshal
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from graders._base import BaseGrader
from graders._rules import CodeRules
from graders._values import decode_value

__all__ = [
    "FunctionCall",
    "IsolationCheck",
    "Outcome",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "SandboxRun",
    "SandboxedGrader",
    "check_isolation",
]

Isolation = Literal["bwrap", "rlimits"]
_MAX_MESSAGE = 500
_READ_CHUNK = 65536
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the candidate): it could not start a process."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for one candidate.

    Attributes:
        test_timeout: Wall-clock seconds per test (per function call, or per pytest test).
        load_timeout: Seconds to load the code (calls) or to start pytest and collect.
        candidate_timeout: Wall-clock seconds for all tests of one candidate.
        startup_timeout: Seconds for a fresh process to report ready (before candidate code).
        cpu_seconds: CPU time per process.
        memory_bytes: Address space per process.
        processes: RLIMIT_NPROC.
        file_bytes: Largest file the process may write.
        open_files: Open file descriptors.
        max_output_bytes: What is kept of the candidate's stdout and stderr.
        max_result_bytes: Result data one process may send back.
        max_line_bytes: One result message.
        max_values: Values (nodes) in one returned value, and in the arguments after a call;
            a value over this budget comes back as one ``Opaque``.
        max_chars: Characters of text in one returned value, and in the arguments.
        max_depth: Nesting depth of returned data; deeper parts come back as ``Opaque``.
    """

    test_timeout: float = 2.0
    load_timeout: float = 5.0
    candidate_timeout: float = 30.0
    startup_timeout: float = 15.0
    cpu_seconds: int = 30
    memory_bytes: int = 1 << 30
    processes: int = 64
    file_bytes: int = 16 << 20
    open_files: int = 64
    max_output_bytes: int = 64 << 10
    max_result_bytes: int = 8 << 20
    max_line_bytes: int = 2 << 20
    max_values: int = 100_000
    max_chars: int = 1_000_000
    max_depth: int = 64


@dataclass(frozen=True)
class FunctionCall:
    """One call of the candidate's function.

    Attributes:
        name: Name of the call, unique within a run.
        args: Positional arguments: plain data (None, bool, int, float, str, list, tuple,
            dict), built afresh for the call.
    """

    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Outcome:
    """What happened in one test.

    Attributes:
        name: The call's name, or the pytest node id.
        status: ``returned``, ``raised``, ``timeout``, ``crashed`` or ``not_run`` for calls;
            ``passed``, ``failed``, ``error``, ``skipped``, ``timeout``, ``crashed`` for pytest.
        value: The returned value, decoded to plain data (calls that returned).
        args: The arguments as they were after the call, decoded to plain data.
        error: What went wrong, in words.
    """

    name: str
    status: str
    value: Any = None
    args: tuple[Any, ...] | None = None
    error: str = ""

    @property
    def returned(self) -> bool:
        """Whether the call returned a value."""
        return self.status == "returned"


@dataclass(frozen=True)
class SandboxRun:
    """Everything one candidate's run produced.

    Attributes:
        outcomes: One per test, in order.
        load_error: Why the code could not be loaded, if it could not.
        output: What the candidate printed (capped).
        isolation: ``bwrap`` or ``rlimits``.
        seconds: Wall-clock time of the run.
        processes: Sandbox processes started (1 unless a test hung or crashed).
    """

    outcomes: tuple[Outcome, ...]
    load_error: str | None
    output: str
    isolation: Isolation
    seconds: float
    processes: int = 1

    def outcome(self, name: str) -> Outcome:
        """Returns the outcome of the test called ``name``.

        Raises:
            KeyError: No such test.
        """
        for item in self.outcomes:
            if item.name == name:
                return item
        raise KeyError(name)


@dataclass(frozen=True)
class IsolationCheck:
    """Which isolation this machine offers, checked by running a process.

    Attributes:
        level: ``bwrap`` if bubblewrap started a sandboxed Python here, else ``rlimits``.
        detail: Why, in words.
    """

    level: Isolation
    detail: str


_BWRAP_OPTIONS = (
    "--ro-bind", "/", "/",
    "--dev", "/dev",
    "--proc", "/proc",
    "--tmpfs", "/tmp",
    "--unshare-net",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--hostname", "sandbox",
    "--die-with-parent",
    "--new-session",
    "--cap-drop", "ALL",
    "--chdir", "/tmp",
)  # fmt: skip


def _bwrap_options(python: str) -> list[str]:
    """bwrap's options for ``python``: the interpreter's folders stay visible over the tmpfs.

    A virtualenv or interpreter that lives under /tmp (a checkout in /tmp, as CI may use) would
    otherwise be hidden by the sandbox's private /tmp.
    """
    # <prefix>/bin/python: its prefix holds pyvenv.cfg and site-packages, or the stdlib.
    prefixes = {os.path.dirname(os.path.dirname(p)) for p in (python, os.path.realpath(python))}
    folders = {sys.prefix, sys.base_prefix, *prefixes}
    under_tmp = sorted(f for f in folders if f == "/tmp" or f.startswith("/tmp/"))
    binds = [arg for folder in under_tmp for arg in ("--ro-bind", folder, folder)]
    at = _BWRAP_OPTIONS.index("--tmpfs") + 2
    return [*_BWRAP_OPTIONS[:at], *binds, *_BWRAP_OPTIONS[at:]]


_isolation_lock = threading.Lock()
_isolation_checks: dict[str, IsolationCheck] = {}


def check_isolation(python: str | None = None) -> IsolationCheck:
    """Returns the isolation available for ``python`` (default: this interpreter); cached."""
    python = python or sys.executable
    with _isolation_lock:
        if python not in _isolation_checks:
            _isolation_checks[python] = _probe_bwrap(python)
        return _isolation_checks[python]


def _probe_bwrap(python: str) -> IsolationCheck:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return IsolationCheck("rlimits", "bubblewrap (bwrap) is not installed")
    argv = [bwrap, *_bwrap_options(python), "--", python, "-I", "-c", "print('sandbox-ok')"]
    try:
        probe = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, env=_scrubbed_env("/tmp")
        )
    except (OSError, subprocess.SubprocessError) as error:
        return IsolationCheck("rlimits", f"bubblewrap could not run: {error}")
    if probe.returncode != 0 or probe.stdout.strip() != "sandbox-ok":
        reason = (probe.stderr.strip().splitlines() or ["no output"])[-1][:_MAX_MESSAGE]
        return IsolationCheck("rlimits", f"bubblewrap does not work here: {reason}")
    return IsolationCheck("bwrap", f"bubblewrap works ({bwrap})")


def _scrubbed_env(home: str) -> dict[str, str]:
    """The whole environment of a sandbox process: nothing but what Python needs."""
    return {
        "PATH": _SAFE_PATH,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": home,
        "TMPDIR": home,
    }


@functools.cache
def _runner_source() -> str:
    return importlib.resources.files("graders").joinpath("_sandbox_runner.py").read_text("utf-8")


@functools.cache
def _runner_bytecode() -> bytes:
    """The runner compiled once; a process of this same interpreter loads it from stdin."""
    return marshal.dumps(compile(_runner_source(), "<sandbox runner>", "exec"))


# Loads the runner's code object from stdin and runs it; the job follows on stdin.
_BOOTSTRAP = "import marshal,sys;exec(marshal.load(sys.stdin.buffer))"


@dataclass
class _ChildReport:
    """What one sandbox process sent before it ended."""

    events: list[dict[str, Any]] = field(default_factory=list)
    output: bytes = b""
    ended: str = ""  # why the parent stopped reading, if not because the process finished
    exit_status: str = ""


class Sandbox:
    """Runs candidate code in isolated processes.

    Args:
        limits: Limits applied to each candidate.
        isolation: ``auto`` (bubblewrap if it works here, else rlimits), ``bwrap`` (fail if
            bubblewrap does not work) or ``rlimits`` (no bubblewrap).
        python: Interpreter for sandbox processes; defaults to this one.

    Raises:
        SandboxError: ``isolation="bwrap"`` but bubblewrap does not work here.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        isolation: Literal["auto", "bwrap", "rlimits"] = "auto",
        python: str | None = None,
    ) -> None:
        self.limits = limits or SandboxLimits()
        self._python = python or sys.executable
        if isolation == "rlimits":
            self.isolation: Isolation = "rlimits"
            self.isolation_detail = "rlimits requested"
        else:
            check = check_isolation(self._python)
            if isolation == "bwrap" and check.level != "bwrap":
                raise SandboxError(check.detail)
            self.isolation, self.isolation_detail = check.level, check.detail
        self._bwrap = shutil.which("bwrap") if self.isolation == "bwrap" else None

    def call_function(
        self, code: str, function_name: str, calls: Sequence[FunctionCall]
    ) -> SandboxRun:
        """Loads ``code`` and calls ``function_name`` once per call, each with fresh arguments.

        Raises:
            SandboxError: No sandbox process could be started.
        """
        limits = self.limits
        job = {
            "mode": "calls",
            "code": code,
            "function": function_name,
            "calls": [{"name": c.name, "args": marshal.dumps(list(c.args))} for c in calls],
            "load_timeout": limits.load_timeout,
            "budget": {
                "values": limits.max_values,
                "chars": limits.max_chars,
                "depth": limits.max_depth,
            },
        }
        return self._run(job, [c.name for c in calls])

    def run_pytest(self, files: Mapping[str, str], test_file: str) -> SandboxRun:
        """Writes ``files`` to a fresh directory and runs pytest on ``test_file`` there.

        Args:
            files: File name to contents; plain names, no directories.
            test_file: The file pytest runs; one of ``files``.

        Raises:
            SandboxError: No sandbox process could be started.
            ValueError: A file name is not a plain name.
        """
        for name in files:
            if not name or "/" in name or "\\" in name or name.startswith("."):
                raise ValueError(f"not a plain file name: {name!r}")
        if test_file not in files:
            raise ValueError(f"test file {test_file!r} is not among the files")
        job = {
            "mode": "pytest",
            "files": dict(files),
            "test_file": test_file,
            "load_timeout": max(self.limits.load_timeout, 10.0),
        }
        return self._run(job, None)

    def _run(self, job: dict[str, Any], names: list[str] | None) -> SandboxRun:
        limits = self.limits
        started = time.monotonic()
        budget_end = started + limits.candidate_timeout
        base = {
            **job,
            "test_timeout": limits.test_timeout,
            "limits": {
                "cpu_seconds": limits.cpu_seconds,
                "memory_bytes": limits.memory_bytes,
                "processes": limits.processes,
                "file_bytes": limits.file_bytes,
                "open_files": limits.open_files,
            },
            "max_output_bytes": limits.max_output_bytes,
            "max_line_bytes": limits.max_line_bytes,
        }
        order: list[str] = list(names or [])
        outcomes: dict[str, Outcome] = {}
        skip: list[str] = []
        load_error: str | None = None
        output = bytearray()
        processes = 0
        budget = f"the candidate's time budget of {limits.candidate_timeout:g} s ran out"
        while time.monotonic() < budget_end:
            report = self._run_process({**base, "skip": skip}, budget_end)
            processes += 1
            output += report.output[: max(0, limits.max_output_bytes - len(output))]
            state = _replay(report.events, order, outcomes, names)
            if state.load_error is not None:
                load_error = state.load_error
                break
            if state.done:
                break
            reason = _why_ended(report, limits)
            if not state.ready and report.ended != "budget":
                tail = report.output.decode("utf-8", "replace").strip().splitlines()[-3:]
                raise SandboxError(
                    f"the sandbox process did not start: it {reason}: " + " | ".join(tail)
                )
            if not state.loaded:
                load_error = f"loading the code failed: the process {reason}"
                break
            victim = state.running or _next_pending(order, outcomes, names)
            if victim is None:
                if names is None:  # pytest: which tests were left is unknown
                    victim = "session"
                    reason += " between tests; the tests after it did not run"
                else:
                    break
            status = "timeout" if report.ended in ("timeout", "budget") else "crashed"
            outcomes[victim] = Outcome(victim, status, error=f"the process {reason}")
            if victim not in order:
                order.append(victim)
            if victim == "session":
                break
            skip.append(victim)
        else:
            if load_error is None and not outcomes and names is None:
                load_error = budget
        for name in order:
            if name not in outcomes:
                outcomes[name] = Outcome(name, "not_run", error=f"not run: {budget}")
        return SandboxRun(
            outcomes=tuple(outcomes[name] for name in order),
            load_error=load_error,
            output=output.decode("utf-8", "replace"),
            isolation=self.isolation,
            seconds=time.monotonic() - started,
            processes=processes,
        )

    def _argv(self) -> list[str]:
        source = _BOOTSTRAP if self._python == sys.executable else _runner_source()
        command = [self._python, "-I", "-B", "-c", source]
        if self._bwrap is None:
            return command
        return [self._bwrap, *_bwrap_options(self._python), "--", *command]

    def _run_process(self, job: dict[str, Any], budget_end: float) -> _ChildReport:
        """Runs one sandbox process on ``job`` and collects what it sends until it ends."""
        with self._workdir() as workdir:
            try:
                process = subprocess.Popen(
                    self._argv(),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=_scrubbed_env(workdir),
                    cwd=workdir,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as error:
                raise SandboxError(f"could not start {self._argv()[0]}: {error}") from error
            try:
                stdin = marshal.dumps(job)
                if self._python == sys.executable:
                    stdin = _runner_bytecode() + stdin
                report = self._collect(process, stdin, float(job["load_timeout"]), budget_end)
            finally:
                # Kill the group before reaping the leader, so its id cannot have been reused.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                code = process.wait()
                for stream in (process.stdin, process.stdout, process.stderr):
                    if stream is not None:
                        with contextlib.suppress(OSError):
                            stream.close()
            if not report.ended:
                report.exit_status = self._exit_words(code)
            return report

    @contextlib.contextmanager
    def _workdir(self) -> Iterator[str]:
        if self.isolation == "bwrap":
            yield "/tmp"  # the sandbox's own tmpfs
            return
        with tempfile.TemporaryDirectory(prefix="moa-sandbox-") as path:
            yield path

    def _collect(
        self, process: subprocess.Popen[bytes], job: bytes, load_timeout: float, budget_end: float
    ) -> _ChildReport:
        """Feeds the job to the process and reads its events and output until it ends.

        Stops early (and says why in ``ended``) when the process misses a deadline, the
        candidate's budget runs out, or it sends too much result data.
        """
        limits = self.limits
        report = _ChildReport()
        assert process.stdin and process.stdout and process.stderr
        selector = selectors.DefaultSelector()
        pending = memoryview(job)
        results = bytearray()
        result_bytes = 0
        output = bytearray()
        for stream in (process.stdin, process.stdout, process.stderr):
            os.set_blocking(stream.fileno(), False)
        selector.register(process.stdin, selectors.EVENT_WRITE, "in")
        selector.register(process.stdout, selectors.EVENT_READ, "out")
        selector.register(process.stderr, selectors.EVENT_READ, "err")
        pidfd = _pidfd(process.pid)
        if pidfd is not None:
            selector.register(pidfd, selectors.EVENT_READ, "exit")
        deadline = time.monotonic() + limits.startup_timeout
        exited = False
        try:
            while not exited and (
                _is_registered(selector, process.stdout) or _is_registered(selector, process.stderr)
            ):
                now = time.monotonic()
                if now >= budget_end:
                    report.ended = "budget"
                    break
                if now >= deadline:
                    report.ended = "timeout"
                    break
                wait = min(deadline, budget_end) - now
                if pidfd is None:
                    wait = min(wait, 0.02)
                for key, _ in selector.select(wait):
                    if key.data == "in":
                        try:
                            pending = pending[os.write(key.fd, pending) :]
                        except OSError:
                            pending = pending[:0]
                        if not pending:
                            selector.unregister(process.stdin)
                            process.stdin.close()
                    elif key.data == "exit":
                        exited = True
                    else:
                        data = _read(key.fd)
                        if not data:
                            selector.unregister(key.fileobj)
                        elif key.data == "err":
                            output += data[: max(0, limits.max_output_bytes - len(output))]
                        else:
                            result_bytes += len(data)
                            results += data
                            if result_bytes > limits.max_result_bytes:
                                report.ended = "too much result data"
                                break
                            for line in _complete_lines(results):
                                event = _parse_event(line, limits.max_line_bytes)
                                if event is not None:
                                    report.events.append(event)
                                    deadline = time.monotonic() + self._allowance(
                                        event, load_timeout
                                    )
                if report.ended:
                    break
                if pidfd is None and _has_exited(process.pid):
                    exited = True
            if exited or not report.ended:
                # The process ended: take what is still in the pipes.
                limit = limits.max_result_bytes
                while (data := _read(process.stdout.fileno())) and result_bytes <= limit:
                    result_bytes += len(data)
                    results += data
                for line in _complete_lines(results + b"\n"):
                    event = _parse_event(line, limits.max_line_bytes)
                    if event is not None:
                        report.events.append(event)
                while data := _read(process.stderr.fileno()):
                    output += data[: max(0, limits.max_output_bytes - len(output))]
        finally:
            selector.close()
            if pidfd is not None:
                os.close(pidfd)
        report.output = bytes(output)
        return report

    def _allowance(self, event: Mapping[str, Any], load_timeout: float) -> float:
        """Seconds the process has, after ``event``, before it must send the next one.

        The process enforces the same limits itself; this outer limit adds some slack.
        """
        seconds = load_timeout if event.get("event") == "ready" else self.limits.test_timeout
        return seconds + max(0.5, seconds / 2)

    def _exit_words(self, code: int) -> str:
        if code < 0:
            return _signal_words(-code, self.limits)
        if self.isolation == "bwrap" and code > 128:
            return _signal_words(code - 128, self.limits)
        return f"exited with status {code}"


@dataclass
class _ReplayState:
    ready: bool = False
    loaded: bool = False
    done: bool = False
    running: str | None = None
    load_error: str | None = None


def _replay(
    events: list[dict[str, Any]],
    order: list[str],
    outcomes: dict[str, Outcome],
    names: list[str] | None,
) -> _ReplayState:
    """Applies one process's events to the run's outcomes; returns where that process got to."""
    state = _ReplayState()
    for event in events:
        kind = event.get("event")
        name = event.get("name")
        if kind == "ready":
            state.ready = True
        elif kind == "loaded":
            state.loaded = True
        elif kind == "load_error":
            state.load_error = _text(event.get("error"))
        elif kind == "done":
            state.done = True
        elif not isinstance(name, str) or name in outcomes or (names and name not in names):
            continue
        elif kind == "start":
            state.loaded = True
            state.running = name
        elif kind == "outcome":
            state.loaded = True
            state.running = None
            outcomes[name] = _outcome(name, event)
            if name not in order:
                order.append(name)
    return state


def _outcome(name: str, event: Mapping[str, Any]) -> Outcome:
    status = _text(event.get("status")) or "crashed"
    if status != "returned":
        return Outcome(name, status, error=_text(event.get("error")))
    args = decode_value(event.get("args"))
    return Outcome(
        name,
        status,
        value=decode_value(event.get("value")),
        args=tuple(args) if isinstance(args, list) else None,
        error="",
    )


def _next_pending(
    order: list[str], outcomes: Mapping[str, Outcome], names: list[str] | None
) -> str | None:
    if names is None:
        return None
    return next((name for name in order if name not in outcomes), None)


def _why_ended(report: _ChildReport, limits: SandboxLimits) -> str:
    if report.ended == "timeout":
        return f"timed out (limit {limits.test_timeout:g} s per test)"
    if report.ended == "budget":
        return f"timed out (the candidate's budget of {limits.candidate_timeout:g} s ran out)"
    if report.ended:
        return f"was stopped: it sent {report.ended}"
    return report.exit_status or "ended"


def _signal_words(number: int, limits: SandboxLimits) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    if number == signal.SIGXCPU:
        return f"used up its CPU time limit of {limits.cpu_seconds} s ({name})"
    if number == signal.SIGSEGV:
        return f"crashed with {name} (for example a stack overflow from deep recursion)"
    if number == signal.SIGKILL:
        return f"was killed ({name})"
    return f"was killed by {name}"


def _text(value: object) -> str:
    return value[: _MAX_MESSAGE * 4] if isinstance(value, str) else ""


def _parse_event(line: bytes, max_line_bytes: int) -> dict[str, Any] | None:
    if len(line) > max_line_bytes:
        return None
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return event if isinstance(event, dict) else None


def _complete_lines(buffer: bytearray) -> list[bytes]:
    """Removes and returns the complete lines at the start of ``buffer``."""
    end = buffer.rfind(b"\n")
    if end < 0:
        return []
    lines = bytes(buffer[:end]).split(b"\n")
    del buffer[: end + 1]
    return [line for line in lines if line.strip()]


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, _READ_CHUNK)
    except BlockingIOError:
        return b""
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EBADF):
            return b""
        raise


def _is_registered(selector: selectors.BaseSelector, stream: Any) -> bool:
    try:
        selector.get_key(stream)
    except KeyError:
        return False
    return True


def _pidfd(pid: int) -> int | None:
    opener: Callable[[int], int] | None = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


def _has_exited(pid: int) -> bool:
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


class SandboxedGrader(BaseGrader):
    """A grader that runs candidates in a :class:`Sandbox` (made on first use)."""

    def __init__(self, *, sandbox: Sandbox | None = None, rules: CodeRules | None = None) -> None:
        self._sandbox = sandbox
        self._rules = rules

    @property
    def sandbox(self) -> Sandbox:
        """The sandbox candidates run in."""
        if self._sandbox is None:
            self._sandbox = Sandbox()
        return self._sandbox
