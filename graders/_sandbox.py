"""The sandbox: where generated code runs, and the driver whose verdicts it cannot forge.

Each run starts fresh ``python -I -S`` processes (never forks of the grader) with a scrubbed
environment, isolated as ``_isolation`` says: bubblewrap with least privilege, or, only when
the user opted in, none. Each process lowers its rlimits and installs a seccomp filter before
any candidate code runs, and reports whether the filter is in force; a process without it is
refused like missing isolation.

Integrity: the candidate's code runs in a process whose word is trusted for nothing but
plain-data observations of the calls it was asked to make. The driver here sends one call at a
time, each with a fresh unguessable nonce and a sequence number, accepts exactly one
well-formed reply for it, and treats anything else on the channel as that test's failure (the
process is then replaced). Every comparison runs in the grader's process. So whatever a
candidate does to its own process, it scores no more than a function that returns the same
values for the same inputs. Test code that must run as Python (pytest files) runs in a second
sandboxed process with the candidate's module replaced by a proxy: its calls come here as
plain data, are made in the candidate's process, and their plain results go back.

Every test has a wall-clock limit inside the process and a second one enforced from outside;
the candidate has an overall budget; output and results are capped; the whole process group
is killed at the end. One bad test costs one test: a process that hangs or dies is replaced
for the tests after it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import marshal
import os
import re
import secrets
import select
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from graders._base import BaseGrader
from graders._isolation import (
    SITE_DIR,
    UNISOLATED_ENV,
    bwrap_command,
    check_isolation,
    interpreter,
    package_paths,
    runner_source,
    scrubbed_env,
    unisolated_allowed,
    unisolated_workdir,
)
from graders._rules import CodeRules
from graders._text import safe_text
from graders._values import Opaque, decode_value, encode_value

__all__ = [
    "FunctionCall",
    "Outcome",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "SandboxRun",
    "SandboxedGrader",
]

Isolation = Literal["bwrap", "unisolated"]
_MAX_MESSAGE = 2000
_READ_CHUNK = 65536
_MAX_NAMES = 1000
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CANDIDATE_PACKAGES = ("python-dateutil",)
"""Distributions candidate code may import besides the standard library."""
TEST_PACKAGES = ("pytest",)
"""Distributions the process that runs a task's pytest file needs."""


class SandboxError(RuntimeError):
    """The sandbox itself cannot run (no isolation, no process), not the candidate's fault."""


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
        tmp_bytes: Size of each private tmpfs (``/tmp`` and ``/dev/shm``) under bubblewrap.
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
    tmp_bytes: int = 64 << 20
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
        error: What went wrong, in words (safe to print).
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
        output: What the candidate printed (capped, safe to print).
        isolation: ``bwrap`` or ``unisolated``.
        seconds: Wall-clock time of the run.
        processes: Sandbox processes started (1 for calls unless a test hung or crashed; the
            test process counts too for pytest).
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


@functools.cache
def _runner_bytecode() -> bytes:
    """The runner compiled once; a process of this same interpreter loads it from stdin."""
    return marshal.dumps(compile(runner_source(), "<sandbox runner>", "exec"))


# Reads the runner's code object from stdin (one length-prefixed frame, read unbuffered so that
# the frames after it stay in the pipe for the runner) and runs it.
_BOOTSTRAP = """import os, marshal
def read(size):
    data = b""
    while len(data) < size:
        chunk = os.read(0, size - len(data))
        if not chunk:
            raise SystemExit(3)
        data += chunk
    return data
exec(marshal.loads(read(int.from_bytes(read(4), "big"))))
"""


def _frame(message: Mapping[str, Any]) -> bytes:
    data = marshal.dumps(dict(message))
    return struct.pack(">I", len(data)) + data


class _Ended(Exception):
    """A sandbox process can say nothing more: it ended, hung, flooded or broke the protocol.

    Attributes:
        kind: ``exited``, ``timeout``, ``budget``, ``flood`` or ``protocol``.
        words: What happened, for messages (``exited with status 7``).
    """

    def __init__(self, kind: str, words: str) -> None:
        super().__init__(words)
        self.kind = kind
        self.words = words


class Sandbox:
    """Runs candidate code in isolated processes.

    Args:
        limits: Limits applied to each candidate.
        isolation: ``auto`` (bubblewrap; without it, unisolated only if ``MOA_UNISOLATED=1``),
            ``bwrap`` (bubblewrap or nothing) or ``unisolated`` (an explicit opt-in).
        python: Interpreter for sandbox processes; defaults to this one's real binary.

    Raises:
        SandboxError: No isolation works here and the user did not opt in to running without.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        isolation: Literal["auto", "bwrap", "unisolated"] = "auto",
        python: str | None = None,
    ) -> None:
        self.limits = limits or SandboxLimits()
        self._python = interpreter(python or sys.executable)
        if isolation == "unisolated":
            self.isolation: Isolation = "unisolated"
            self.isolation_detail = "unisolated, as asked"
        else:
            check = check_isolation(self._python)
            if check.level == "bwrap":
                self.isolation, self.isolation_detail = "bwrap", check.detail
            elif isolation == "auto" and unisolated_allowed():
                self.isolation = "unisolated"
                self.isolation_detail = f"unisolated ({UNISOLATED_ENV}=1): {check.detail}"
            else:
                raise SandboxError(
                    f"untrusted code is not run without isolation: {check.detail}; install "
                    "bubblewrap (apt-get install bubblewrap), or opt in to unisolated runs "
                    f"with --unisolated or {UNISOLATED_ENV}=1"
                )
        if self.isolation == "unisolated":
            print(
                "warning: generated code runs WITHOUT isolation (rlimits and seccomp only): "
                "it runs as you and can read your files and your environment's secrets",
                file=sys.stderr,
            )
        self._bwrap = shutil.which("bwrap") if self.isolation == "bwrap" else None

    def call_function(
        self, code: str, function_name: str, calls: Sequence[FunctionCall]
    ) -> SandboxRun:
        """Loads ``code`` and calls ``function_name`` once per call, each with fresh arguments.

        Raises:
            SandboxError: No sandbox process could be started.
        """
        started = time.monotonic()
        candidate = _Candidate(self, code, [function_name], started)
        outcomes: list[Outcome] = []
        try:
            load_error = candidate.load()
            for call in calls:
                if load_error is not None:
                    outcomes.append(Outcome(call.name, "not_run", error="not run: no code"))
                elif time.monotonic() >= candidate.budget_end:
                    outcomes.append(Outcome(call.name, "not_run", error=f"not run: {self._spent}"))
                else:
                    reply = candidate.call(function_name, list(call.args), {}, candidate.budget_end)
                    outcomes.append(reply.outcome(call.name))
        finally:
            candidate.close()
        return self._finished(outcomes, load_error, candidate, started)

    def run_pytest(
        self,
        code: str,
        test_files: Mapping[str, str],
        test_file: str,
        *,
        module: str = "solution",
        functions: Sequence[str] = (),
    ) -> SandboxRun:
        """Runs pytest on ``test_file`` with ``module`` standing for the candidate's ``code``.

        The tests run in their own sandboxed process; the candidate's code runs in another,
        and the tests reach its functions through plain-data calls.

        Args:
            code: The candidate's module.
            test_files: The task's files (the tests, helpers): plain names to contents.
            test_file: The file pytest runs; one of ``test_files``.
            module: The name the tests import the candidate's code as.
            functions: Functions the code must define (else a load error).

        Raises:
            SandboxError: No sandbox process could be started, or pytest is not installed.
            ValueError: A file name is not a plain name.
        """
        for name in test_files:
            if not name or "/" in name or "\\" in name or name.startswith("."):
                raise ValueError(f"not a plain file name: {name!r}")
        if test_file not in test_files:
            raise ValueError(f"test file {test_file!r} is not among the files")
        if not package_paths(("pytest",)):
            raise SandboxError(
                "pytest is not installed: the pytest grader needs it (pip install pytest)"
            )
        started = time.monotonic()
        candidate = _Candidate(self, code, list(functions), started, module=module)
        try:
            load_error = candidate.load()
            if load_error is not None:
                return self._finished((), load_error, candidate, started)
            job = {"files": dict(test_files), "test_file": test_file}
            tests = _TestSession(self, candidate, "tests", job)
            outcomes, load_error = tests.run()
            candidate.processes += tests.processes
        finally:
            candidate.close()
        return self._finished(outcomes, load_error, candidate, started)

    def run_check(self, code: str, test: str, entry_point: str) -> SandboxRun:
        """Runs HumanEval-style test code's ``check(candidate)`` on the code's ``entry_point``.

        The test code runs in its own sandboxed process; ``candidate`` there calls the
        function in the candidate's process through plain-data calls. One outcome, ``check``:
        ``passed``, ``failed`` (with the assertion or error), ``timeout`` or ``crashed``.

        Raises:
            SandboxError: No sandbox process could be started.
        """
        started = time.monotonic()
        candidate = _Candidate(self, code, [entry_point], started)
        try:
            load_error = candidate.load()
            if load_error is None:
                job = {"test": test, "entry_point": entry_point}
                tests = _TestSession(self, candidate, "check", job)
                outcomes, load_error = tests.run()
                candidate.processes += tests.processes
            else:
                outcomes = []
        finally:
            candidate.close()
        return self._finished(outcomes, load_error, candidate, started)

    def _finished(
        self,
        outcomes: Sequence[Outcome],
        load_error: str | None,
        candidate: _Candidate,
        started: float,
    ) -> SandboxRun:
        return SandboxRun(
            outcomes=tuple(outcomes),
            load_error=load_error,
            output=safe_text(candidate.output.decode("utf-8", "replace")),
            isolation=self.isolation,
            seconds=time.monotonic() - started,
            processes=candidate.processes,
        )

    @property
    def _spent(self) -> str:
        return f"the candidate's time budget of {self.limits.candidate_timeout:g} s ran out"

    def _argv(self, packages: Sequence[str]) -> tuple[list[str], list[str]]:
        """The command of a sandbox process, and the import paths its runner adds."""
        paths = package_paths(packages)
        source = _BOOTSTRAP if self._python == interpreter(sys.executable) else runner_source()
        flags = ["-I", "-S", "-B", "-c", source]
        if self._bwrap is None:
            return [self._python, *flags], sorted({str(p.parent) for p in paths})
        command = bwrap_command(self._bwrap, self._python, paths, self.limits.tmp_bytes)
        return [*command, *flags], [SITE_DIR]

    def _job(self, mode: str, paths: list[str]) -> dict[str, Any]:
        limits = self.limits
        return {
            "mode": mode,
            "nonce": secrets.token_hex(16),
            "paths": paths,
            "test_timeout": limits.test_timeout,
            "load_timeout": limits.load_timeout,
            "limits": {
                "cpu_seconds": limits.cpu_seconds,
                "memory_bytes": limits.memory_bytes,
                "processes": limits.processes,
                "file_bytes": limits.file_bytes,
                "open_files": limits.open_files,
            },
            "budget": {
                "values": limits.max_values,
                "chars": limits.max_chars,
                "depth": limits.max_depth,
            },
            "max_output_bytes": limits.max_output_bytes,
            "max_line_bytes": limits.max_line_bytes,
        }

    def _start(self, mode: str, packages: Sequence[str], job: Mapping[str, Any]) -> _Child:
        """Starts a sandbox process, sends it ``job`` and waits until it is ready.

        Raises:
            SandboxError: The process did not start, or runs without its seccomp filter.
        """
        argv, paths = self._argv(packages)
        full_job = {**self._job(mode, paths), **job}
        child = _Child(self, argv, full_job)
        try:
            ready = child.receive(time.monotonic() + self.limits.startup_timeout)
        except _Ended as ended:
            tail = child.output.decode("utf-8", "replace").strip().splitlines()[-3:]
            child.close()
            raise SandboxError(
                f"the sandbox process did not start: it {ended.words}: "
                + safe_text(" | ".join(tail), 500)
            ) from None
        if ready.get("event") != "ready" or ready.get("nonce") != full_job["nonce"]:
            child.close()
            raise SandboxError("the sandbox process did not start: it sent no ready message")
        if ready.get("seccomp") is not True and self.isolation != "unisolated":
            child.close()
            raise SandboxError(
                f"the seccomp filter could not be installed on {os.uname().machine}: untrusted "
                f"code is not run without it; opt in with --unisolated or {UNISOLATED_ENV}=1"
            )
        child.job = full_job
        return child


@dataclass(frozen=True)
class _Reply:
    """The driver's reading of one call's reply."""

    status: str
    value: Any = None
    args: Any = None
    kwargs: Any = None
    error: str = ""
    bases: tuple[str, ...] = ()

    def outcome(self, name: str) -> Outcome:
        args = self.args if isinstance(self.args, list) else None
        return Outcome(
            name,
            self.status,
            value=self.value,
            args=tuple(args) if args is not None else None,
            error=self.error,
        )


class _Candidate:
    """The candidate's process: loaded once, replaced after a call that hangs, dies or lies."""

    def __init__(
        self,
        sandbox: Sandbox,
        code: str,
        functions: list[str],
        started: float,
        *,
        module: str = "candidate",
    ) -> None:
        self.sandbox = sandbox
        self.code = code
        self.functions = functions
        self.module = module
        self.budget_end = started + sandbox.limits.candidate_timeout
        self.child: _Child | None = None
        self.names: dict[str, Any] = {}
        self.processes = 0
        self.output = bytearray()
        self._seq = 0

    def load(self) -> str | None:
        """Starts a process and loads the code; returns why it could not, or None."""
        limits = self.sandbox.limits
        job = {"code": self.code, "functions": self.functions, "module": self.module}
        self.child = self.sandbox._start("candidate", CANDIDATE_PACKAGES, job)
        self.processes += 1
        self._seq = 0
        deadline = min(time.monotonic() + _allowance(limits.load_timeout), self.budget_end)
        try:
            reply = self.child.receive(deadline)
        except _Ended as ended:
            self.close()
            if ended.kind == "timeout" and time.monotonic() >= self.budget_end:
                return f"the candidate's time budget of {limits.candidate_timeout:g} s ran out"
            return f"loading the code failed: the process {ended.words}"
        nonce = self.child.job["nonce"]
        event = reply.get("event")
        if reply.get("nonce") != nonce or reply.get("seq") != 0:
            self.close()
            return "loading the code failed: the process sent an unexpected message"
        if event == "load_error":
            self.close()
            return _message(reply.get("error")) or "loading the code failed"
        if event != "loaded":
            self.close()
            return "loading the code failed: the process sent an unexpected message"
        self.names = _checked_names(reply.get("names"))
        return None

    def call(
        self, function: str, args: list[Any], kwargs: dict[str, Any], deadline: float
    ) -> _Reply:
        """Makes one call in the candidate's process and reads its one reply."""
        limits = self.sandbox.limits
        if time.monotonic() >= self.budget_end:
            return _Reply("not_run", error=f"not run: {self.sandbox._spent}")
        if self.child is None:
            reason = self.load()
            if reason is not None:
                return _Reply("crashed", error=f"reloading the code failed: {reason}")
        assert self.child is not None
        self._seq += 1
        nonce = secrets.token_hex(16)
        request = {
            "nonce": nonce,
            "seq": self._seq,
            "function": function,
            "args": marshal.dumps(args),
            "kwargs": marshal.dumps(kwargs),
        }
        started = time.monotonic()
        self.child.send(request)
        end = min(started + _allowance(limits.test_timeout), deadline, self.budget_end)
        try:
            reply = self.child.receive(end)
        except _Ended as ended:
            self.close()
            kind = ended.kind
            if kind == "timeout" and time.monotonic() >= self.budget_end:
                kind = "budget"
            status = "timeout" if kind in ("timeout", "budget") else "crashed"
            if kind == "timeout":
                words = f"timed out (limit {limits.test_timeout:g} s per test)"
            elif kind == "budget":
                words = (
                    f"timed out (the candidate's budget of {limits.candidate_timeout:g} s ran out)"
                )
            else:
                words = ended.words
            return _Reply(status, error=f"the process {words}")
        answered = reply.get("status")
        if (
            reply.get("nonce") != nonce
            or reply.get("seq") != self._seq
            or answered not in ("returned", "raised", "timeout")
        ):
            self.close()
            return _Reply("crashed", error="the process sent a message that answers no call")
        if answered != "returned":
            bases = reply.get("bases")
            names = tuple(b for b in bases if isinstance(b, str)) if isinstance(bases, list) else ()
            return _Reply(answered, error=_message(reply.get("error")), bases=names[:50])
        return _Reply(
            "returned",
            value=decode_value(reply.get("value")),
            args=decode_value(reply.get("args")),
            kwargs=decode_value(reply.get("kwargs")),
        )

    def close(self) -> None:
        if self.child is not None:
            self.output += self.child.output[
                : max(0, self.sandbox.limits.max_output_bytes - len(self.output))
            ]
            self.child.close()
            self.child = None


class _TestSession:
    """Runs a task's test code in its own process, relaying its calls to the candidate.

    Args:
        sandbox: The sandbox.
        candidate: The candidate's loaded process.
        mode: ``tests`` (a pytest file) or ``check`` (a ``check(candidate)`` function).
        job: What the mode needs (files and test file; or test code and entry point).
    """

    def __init__(
        self, sandbox: Sandbox, candidate: _Candidate, mode: str, job: dict[str, Any]
    ) -> None:
        self.sandbox = sandbox
        self.candidate = candidate
        self.mode = mode
        self.job = job
        self.processes = 0

    def run(self) -> tuple[list[Outcome], str | None]:
        """Runs the tests; returns their outcomes and why they could not run, if they could not."""
        limits = self.sandbox.limits
        order: list[str] = []
        outcomes: dict[str, Outcome] = {}
        skip: list[str] = []
        budget_end = self.candidate.budget_end
        while time.monotonic() < budget_end:
            job = {
                **self.job,
                "module": self.candidate.module,
                "names": self.candidate.names,
                "skip": skip,
                "load_timeout": max(limits.load_timeout, 10.0),
            }
            packages = TEST_PACKAGES if self.mode == "tests" else ()
            child = self.sandbox._start(self.mode, packages, job)
            self.processes += 1
            try:
                running, ended, load_error, done = self._follow(child, order, outcomes)
            finally:
                child.close()
            if ended is not None and ended.kind == "exited":
                tail = child.output.decode("utf-8", "replace").strip().splitlines()[-2:]
                ended.words += (": " + safe_text(" | ".join(tail), 500)) if tail else ""
            if load_error is not None:
                return self._ordered(order, outcomes), load_error
            if done:
                break
            if ended is None:
                continue
            victim = running or "session"
            status = "timeout" if ended.kind in ("timeout", "budget") else "crashed"
            words = ended.words
            if victim == "session":
                words += " between tests; the tests after it did not run"
            outcomes[victim] = Outcome(victim, status, error=f"the test process {words}")
            if victim not in order:
                order.append(victim)
            if victim == "session":
                break
            skip.append(victim)
        else:
            if not outcomes:
                return [], self.sandbox._spent
        return self._ordered(order, outcomes), None

    @staticmethod
    def _ordered(order: list[str], outcomes: dict[str, Outcome]) -> list[Outcome]:
        """Every collected test's outcome; one that never reported failed to run."""
        missing = "the test did not run: the test session ended before it"
        return [outcomes.get(name) or Outcome(name, "crashed", error=missing) for name in order]

    def _follow(
        self, child: _Child, order: list[str], outcomes: dict[str, Outcome]
    ) -> tuple[str | None, _Ended | None, str | None, bool]:
        """Reads one test process's events until it is done or ends.

        Returns the test running when it ended, why it ended, a load error, and whether it
        finished.
        """
        limits = self.sandbox.limits
        budget_end = self.candidate.budget_end
        deadline = time.monotonic() + _allowance(max(limits.load_timeout, 10.0))
        running: str | None = None
        while True:
            try:
                event = child.receive(min(deadline, budget_end))
            except _Ended as ended:
                return running, ended, None, False
            kind = event.get("event")
            name = event.get("name")
            if kind == "done":
                return None, None, None, True
            if kind == "collected" and isinstance(event.get("names"), list):
                order += [n for n in event["names"] if isinstance(n, str) and n not in order]
                continue
            if kind == "load_error":
                return None, None, _message(event.get("error")), False
            if kind == "call":
                child.send(self._relay(event, deadline))
            elif isinstance(name, str) and name not in outcomes:
                if kind == "start":
                    running = name
                    deadline = time.monotonic() + _allowance(limits.test_timeout)
                elif kind == "outcome":
                    running = None
                    status = _message(event.get("status")) or "crashed"
                    outcomes[name] = Outcome(name, status, error=_message(event.get("error")))
                    if name not in order:
                        order.append(name)

    def _relay(self, event: Mapping[str, Any], deadline: float) -> dict[str, Any]:
        """Makes the call a test asked for in the candidate's process; returns the answer."""
        function = event.get("function")
        if not isinstance(function, str) or function not in self.candidate.names["functions"]:
            return {"status": "raised", "error": f"AttributeError: no function {function!r}"}
        args = decode_value(event.get("args"))
        kwargs = decode_value(event.get("kwargs"))
        if (
            not isinstance(args, list)
            or not isinstance(kwargs, dict)
            or _has_opaque([args, kwargs])
        ):
            error = "TypeError: the arguments are not plain data"
            return {"status": "raised", "error": error, "bases": ["TypeError"]}
        reply = self.candidate.call(function, args, kwargs, deadline)
        return {
            "status": reply.status,
            "value": encode_value(reply.value),
            "args": encode_value(reply.args),
            "kwargs": encode_value(reply.kwargs if isinstance(reply.kwargs, dict) else {}),
            "error": reply.error,
            "bases": list(reply.bases),
        }


def _has_opaque(value: Any) -> bool:
    if isinstance(value, Opaque):
        return True
    if isinstance(value, dict):
        return any(_has_opaque(k) or _has_opaque(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return any(_has_opaque(item) for item in value)
    return False


def _checked_names(names: Any) -> dict[str, Any]:
    """The names a candidate says its module defines, cut to well-formed identifiers."""

    def identifiers(items: Any) -> list[str]:
        if not isinstance(items, list | dict):
            return []
        return [n for n in items if isinstance(n, str) and _IDENTIFIER.fullmatch(n)][:_MAX_NAMES]

    names = names if isinstance(names, dict) else {}
    exceptions = names.get("exceptions")
    exceptions = exceptions if isinstance(exceptions, dict) else {}
    values = names.get("values")
    values = values if isinstance(values, dict) else {}
    return {
        "functions": identifiers(names.get("functions")),
        "classes": identifiers(names.get("classes")),
        "exceptions": {
            name: [b for b in exceptions[name] if isinstance(b, str)][:50]
            if isinstance(exceptions[name], list)
            else []
            for name in identifiers(exceptions)
        },
        "values": {name: encode_value(decode_value(values[name])) for name in identifiers(values)},
    }


def _allowance(seconds: float) -> float:
    """The outer limit for an inner one of ``seconds``: the process enforces it with slack."""
    return seconds + max(0.5, seconds / 2)


def _message(value: object) -> str:
    """A message from a sandbox process, safe to print and store."""
    return safe_text(value, _MAX_MESSAGE) if isinstance(value, str) else ""


class _Child:
    """One sandbox process: requests go in on stdin, JSON lines come out on stdout."""

    def __init__(self, sandbox: Sandbox, argv: list[str], job: dict[str, Any]) -> None:
        self.limits = sandbox.limits
        self.job = job
        self.output = bytearray()
        self._buffer = bytearray()
        self._result_bytes = 0
        self._pending = bytearray()
        self._exited = False
        self._stack = contextlib.ExitStack()
        unisolated = sandbox.isolation == "unisolated"
        self._bwrap = not unisolated
        self._sandboxed: int | None = None  # a pidfd of the process bubblewrap started
        workdir = self._stack.enter_context(unisolated_workdir()) if unisolated else "/tmp"
        info_read, info_write = os.pipe() if self._bwrap else (-1, -1)
        if self._bwrap:  # bubblewrap says which process it started: kill that one directly
            argv = [argv[0], "--info-fd", str(info_write), *argv[1:]]
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=scrubbed_env(workdir),
                cwd=workdir if unisolated else None,
                start_new_session=True,
                close_fds=True,
                pass_fds=(info_write,) if self._bwrap else (),
            )
        except OSError as error:
            self._stack.close()
            raise SandboxError(f"could not start {argv[0]}: {error}") from error
        finally:
            if self._bwrap:
                os.close(info_write)
        self._stack.callback(self._kill)
        if self._bwrap:
            self._sandboxed = _sandboxed_pidfd(info_read, self.limits.startup_timeout)
        stdin = _frame(job)
        if argv[-1] == _BOOTSTRAP:
            code = _runner_bytecode()
            stdin = struct.pack(">I", len(code)) + code + stdin
        assert self.process.stdin and self.process.stdout and self.process.stderr
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            os.set_blocking(stream.fileno(), False)
        self._selector = selectors.DefaultSelector()
        self._stack.callback(self._selector.close)
        self._selector.register(self.process.stdout, selectors.EVENT_READ, "out")
        self._selector.register(self.process.stderr, selectors.EVENT_READ, "err")
        self._pidfd = _pidfd(self.process.pid)
        if self._pidfd is not None:
            self._selector.register(self._pidfd, selectors.EVENT_READ, "exit")
            self._stack.callback(os.close, self._pidfd)
        self.send_bytes(stdin)

    def send(self, message: Mapping[str, Any]) -> None:
        """Queues one request; it is written while the next reply is awaited."""
        self.send_bytes(_frame(message))

    def send_bytes(self, data: bytes) -> None:
        assert self.process.stdin is not None
        was_empty = not self._pending
        self._pending += data
        self._write()
        if was_empty and self._pending:
            self._selector.register(self.process.stdin, selectors.EVENT_WRITE, "in")

    def _write(self) -> None:
        assert self.process.stdin is not None
        try:
            while self._pending:
                written = os.write(self.process.stdin.fileno(), self._pending)
                del self._pending[:written]
        except BlockingIOError:
            return
        except OSError:
            self._pending.clear()  # the process is gone; reading tells how
        if not self._pending:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self.process.stdin)

    def receive(self, deadline: float) -> dict[str, Any]:
        """The next message the process sends.

        Raises:
            _Ended: It sent nothing well-formed before ``deadline``, or ended, or flooded.
        """
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                if not line.strip():
                    continue
                return self._parse(line)
            if len(self._buffer) > self.limits.max_line_bytes:
                raise _Ended("flood", "was stopped: it sent too much result data")
            if self._exited:
                raise _Ended("exited", self._exit_words())
            now = time.monotonic()
            if now >= deadline:
                raise _Ended("timeout", "timed out")
            wait = deadline - now if self._pidfd is not None else min(deadline - now, 0.02)
            for key, _ in self._selector.select(wait):
                if key.data == "in":
                    self._write()
                elif key.data == "exit":
                    self._drain()
                elif not self._take(key):
                    break
            if self._pidfd is None and not self._exited and self.process.poll() is not None:
                self._drain()

    def _parse(self, line: bytes) -> dict[str, Any]:
        if len(line) > self.limits.max_line_bytes:
            raise _Ended("flood", "was stopped: it sent too much result data")
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            raise _Ended("protocol", "sent a malformed message") from None
        if not isinstance(event, dict):
            raise _Ended("protocol", "sent a malformed message")
        return event

    def _take(self, key: selectors.SelectorKey) -> bool:
        """Reads what one stream has; False once the result stream is closed."""
        data = _read(key.fd)
        if key.data == "err":
            if data:
                self.output += data[: max(0, self.limits.max_output_bytes - len(self.output))]
            else:
                self._selector.unregister(key.fileobj)
            return True
        if not data:
            self._selector.unregister(key.fileobj)
            self._wait_exit()
            return False
        self._result_bytes += len(data)
        if self._result_bytes > self.limits.max_result_bytes:
            raise _Ended("flood", "was stopped: it sent too much result data")
        self._buffer += data
        return True

    def _wait_exit(self) -> None:
        """The result stream closed: give the process a moment to exit, then call it ended."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1.0)
        self._drain()

    def _drain(self) -> None:
        """The process ended: take what is left in its pipes."""
        self._exited = True
        assert self.process.stdout and self.process.stderr
        while data := _read(self.process.stdout.fileno()):
            self._result_bytes += len(data)
            if self._result_bytes > self.limits.max_result_bytes:
                break
            self._buffer += data
        if self._buffer and not self._buffer.endswith(b"\n"):
            self._buffer += b"\n"
        while data := _read(self.process.stderr.fileno()):
            self.output += data[: max(0, self.limits.max_output_bytes - len(self.output))]

    def _exit_words(self) -> str:
        code = self.process.poll()
        if code is None:
            return "closed its result channel"
        if code < 0:
            return _signal_words(-code, self.limits)
        if self._bwrap and code > 128:  # bubblewrap exits with 128 + the signal that killed it
            return _signal_words(code - 128, self.limits)
        return f"exited with status {code}"

    def _kill(self) -> None:
        # The sandboxed process first (its PID namespace dies with it, and bubblewrap reaps
        # it before exiting, so once bubblewrap is reaped nothing of the sandbox is left);
        # then the group, before reaping its leader, so that no id can have been reused.
        if self._sandboxed is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._sandboxed, signal.SIGKILL)
                # Readable once it has exited, which for a PID namespace's first process is
                # after every other process in the namespace is gone.
                select.select([self._sandboxed], [], [], 5.0)
            os.close(self._sandboxed)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def close(self) -> None:
        """Kills the process group and removes what the process left on the host."""
        self._stack.close()


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


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, _READ_CHUNK)
    except BlockingIOError:
        return b""
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EBADF):
            return b""
        raise


def _sandboxed_pidfd(info: int, timeout: float) -> int | None:
    """A pidfd of the process bubblewrap started, from what it writes on ``--info-fd``."""
    data = b""
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(info, selectors.EVENT_READ)
            while b"}" not in data and time.monotonic() < deadline:
                if selector.select(deadline - time.monotonic()):
                    chunk = os.read(info, 4096)
                    if not chunk:
                        break
                    data += chunk
    finally:
        os.close(info)
    try:
        pid = json.loads(data[: data.index(b"}") + 1])["child-pid"]
    except (ValueError, KeyError, TypeError):
        return None
    return _pidfd(pid) if isinstance(pid, int) else None


def _pidfd(pid: int) -> int | None:
    opener: Callable[[int], int] | None = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


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
