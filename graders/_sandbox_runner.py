"""The program that runs inside the sandbox: it serves calls of candidate code, or runs tests.

The grader runs this file in a fresh ``python -I -S`` process (inside bubblewrap): a short
bootstrap reads this module's code object, compiled once by the grader, from stdin and runs
it. The grader never imports it. Standard library only, and no ``json`` (start-up time).

Before any candidate code runs it lowers its own rlimits, sends what the candidate prints to
stderr (capped), and installs a seccomp filter that refuses new processes, program execution,
signals to other processes, tracing, namespaces, mounts, keyrings, BPF and non-Unix sockets.

Nothing this process says is trusted beyond plain data. The grader (the driver) sends
requests on stdin as length-prefixed ``marshal`` frames; this process answers each with one
JSON line on the result descriptor (the original stdout) that repeats the request's nonce and
sequence number. Two modes:

- ``candidate``: loads the candidate's code, answers ``loaded`` (with the names it defines) or
  ``load_error``, then serves one call per request: ``{status, value, args, kwargs, error}``.
  The candidate can rewrite this code once its own runs, so the most it can do is answer a
  call with a value of its choosing, which a function returning that value could do too.
- ``tests``: runs pytest on the task's test file with the candidate's module replaced by a
  proxy whose functions send ``call`` events and read the driver's plain-data answer. No
  candidate code ever runs in this process, so its per-test verdicts are the task's own.

Values are sent in a tagged form that only plain data can take: scalars as JSON, and
``["list", [...]]``, ``["tuple", [...]]``, ``["dict", [[k, v], ...]]``, ``["set", [...]]``,
``["frozenset", [...]]``, ``["opaque", type_name, reason]``. Containers and scalars are read
through the built-in types' own methods, so subclasses that override ``__eq__``, ``get``,
``__len__``, ``__iter__`` and so on are sent as the plain data they hold.
"""

from __future__ import annotations

import builtins
import marshal
import os
import resource
import signal
import struct
import sys
from collections.abc import Callable
from types import FrameType, ModuleType
from typing import Any, NamedTuple

try:  # the C string encoder; importing json would cost more than the rest of start-up
    from _json import encode_basestring_ascii as _json_string
except ImportError:  # pragma: no cover - CPython always has _json
    from json.encoder import encode_basestring_ascii as _json_string

_TYPE_NAME = type.__dict__["__name__"]
_CANDIDATE_FILE = "<candidate>"
_CHECK_FILE = "<tests>"
_ALARM_REPEAT = 0.05
_MAX_ERROR_CHARS = 500
_MAX_INT_BITS = 10_000


class _Timeout(BaseException):
    """A test ran past its time limit."""


class CandidateFailure(BaseException):
    """A call of the candidate timed out or took its process down (raised in the tests)."""


class _Guard:
    """Raises ``_Timeout`` in the guarded code once a test's time is up, and repeatedly after.

    The alarm raises only while armed and only into the guarded code (frames compiled from its
    files), never into the runner or pytest, whose bookkeeping must not be torn.

    Args:
        is_guarded: Whether a code object's file name is one of the guarded code's.
    """

    def __init__(self, is_guarded: Callable[[str], bool]) -> None:
        self.armed = False
        self.fired = False
        self._is_guarded = is_guarded
        signal.signal(signal.SIGALRM, self._on_alarm)

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self.armed and frame is not None and self._is_guarded(frame.f_code.co_filename):
            self.fired = True
            raise _Timeout

    def arm(self, seconds: float) -> None:
        self.fired = False
        self.armed = True
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001), _ALARM_REPEAT)

    def disarm(self) -> None:
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)


class _Channel:
    """Requests in (length-prefixed marshal frames on stdin), JSON lines out."""

    def __init__(self, in_fd: int, out_fd: int, max_line_bytes: int) -> None:
        self._in = in_fd
        self._out = out_fd
        self.max_line_bytes = max_line_bytes

    def receive(self) -> Any:
        """The next request, or None once the driver closed the channel."""
        header = self._read(4)
        if header is None:
            return None
        body = self._read(struct.unpack(">I", header)[0])
        return None if body is None else marshal.loads(body)

    def _read(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = os.read(self._in, size - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def send(self, message: dict[str, Any]) -> None:
        data = (_to_json(message) + "\n").encode()
        if len(data) > self.max_line_bytes and "value" in message:
            big = ["opaque", "result", "too large to send back"]
            data = (_to_json({**message, "value": big, "args": big, "kwargs": big}) + "\n").encode()
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._out, view) :]
        except OSError:
            os._exit(3)


def _to_json(value: Any) -> str:
    """JSON for the runner's own messages: dicts with str keys, lists and exact scalars."""
    kind = type(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    if kind is str:
        return str(_json_string(value))
    if kind is list:
        return "[" + ",".join(_to_json(item) for item in value) + "]"
    if kind is dict:
        return "{" + ",".join(_json_string(k) + ":" + _to_json(v) for k, v in value.items()) + "}"
    raise TypeError(f"cannot send {kind!r}")


class _CappedOutput:
    """Stands in for ``sys.stdout``/``sys.stderr``: forwards to fd 2 up to a byte budget."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, limit: int) -> None:
        self._left = limit

    def write(self, text: str) -> int:
        if type(text) is not str:
            raise TypeError("write() argument must be str")
        if self._left > 0:
            data = text.encode("utf-8", "replace")[: self._left]
            self._left -= len(data)
            view = memoryview(data)
            while view:
                view = view[os.write(2, view) :]
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return 2

    def writable(self) -> bool:
        return True


class _TooLarge(Exception):
    """The value holds more data than may be sent back."""


class _Encoder:
    """Turns a value into the tagged plain form, within a budget of values and characters.

    A value over budget is sent as one opaque value as a whole: a cut-down copy would compare
    as something it is not.
    """

    def __init__(self, max_values: int, max_chars: int, max_depth: int) -> None:
        self._max_values = max_values
        self._max_chars = max_chars
        self._max_depth = max_depth
        self._values_left = max_values
        self._chars_left = max_chars

    def encode(self, value: Any) -> Any:
        self._values_left, self._chars_left = self._max_values, self._max_chars
        try:
            return self._encode(value, 0)
        except _TooLarge:
            return _opaque(type(value), "too large to send back")

    def _encode(self, value: Any, depth: int) -> Any:
        kind = type(value)
        self._values_left -= 1
        if self._values_left < 0:
            raise _TooLarge
        if value is None or kind is bool:
            return value
        if issubclass(kind, int):
            number = int.__index__(value)
            if number.bit_length() > _MAX_INT_BITS:
                return _opaque(kind, "integer too large to send back")
            return number
        if issubclass(kind, float):
            return float.__float__(value)
        if issubclass(kind, str):
            text = str.__str__(value)
            self._chars_left -= len(text)
            if self._chars_left < 0:
                raise _TooLarge
            return text
        if depth >= self._max_depth:
            return _opaque(kind, "nested too deeply to send back")
        inner = depth + 1
        if issubclass(kind, dict):
            pairs = dict.items(value)
            return ["dict", [[self._encode(k, inner), self._encode(v, inner)] for k, v in pairs]]
        if issubclass(kind, list):
            return ["list", [self._encode(x, inner) for x in list.__iter__(value)]]
        if issubclass(kind, tuple):
            return ["tuple", [self._encode(x, inner) for x in tuple.__iter__(value)]]
        if issubclass(kind, frozenset):
            return ["frozenset", [self._encode(x, inner) for x in frozenset.__iter__(value)]]
        if issubclass(kind, set):
            return ["set", [self._encode(x, inner) for x in set.__iter__(value)]]
        return _opaque(kind, "not plain data")


def _opaque(kind: type, reason: str) -> list[str]:
    return ["opaque", str(_TYPE_NAME.__get__(kind)), reason]


def _describe(error: BaseException) -> str:
    """Returns ``Type: message`` for an exception; printing it may run candidate code."""
    name = str(_TYPE_NAME.__get__(type(error)))
    try:
        text = str(error)
    except _Timeout:
        raise
    except BaseException:
        text = "<the exception could not be printed>"
    if type(text) is not str:
        text = ""
    text = text[:_MAX_ERROR_CHARS]
    return f"{name}: {text}" if text else name


def _builtin_bases(kind: type) -> list[str]:
    """The built-in exception classes ``kind`` derives from, nearest first."""
    names = []
    for base in type.__dict__["__mro__"].__get__(kind):
        name = str(_TYPE_NAME.__get__(base))
        if getattr(builtins, name, None) is base:
            names.append(name)
    return names


def _run_guarded(
    guard: _Guard, seconds: float, action: Callable[[], Any]
) -> tuple[str, Any, str, list[str]]:
    """Runs ``action`` under the time limit; returns ``(status, result, error, bases)``.

    Status is ``returned``, ``raised`` (any BaseException, SystemExit included) or ``timeout``;
    ``bases`` names the built-in exception classes of what was raised.
    """
    try:
        guard.arm(seconds)
        try:
            result = action()
            guard.disarm()
            return "returned", result, "", []
        except _Timeout:
            guard.disarm()
            return "timeout", None, f"timed out after {seconds:g} s", []
        except BaseException as error:
            message = _describe(error)
            bases = _builtin_bases(type(error))
            guard.disarm()
            return "raised", None, message, bases
    except _Timeout:
        while True:
            try:
                guard.disarm()
                break
            except _Timeout:
                continue
        return "timeout", None, f"timed out after {seconds:g} s", []


def _public_names(namespace: dict[str, Any], encoder: _Encoder) -> dict[str, Any]:
    """What the candidate's module offers a test: functions, exception classes, plain values."""
    functions: list[str] = []
    exceptions: dict[str, list[str]] = {}
    classes: list[str] = []
    values: dict[str, Any] = {}
    for name, value in list(dict.items(namespace)):
        if type(name) is not str or name.startswith("_") or isinstance(value, ModuleType):
            continue
        if isinstance(value, type):
            if issubclass(value, BaseException):
                exceptions[name] = _builtin_bases(value)
            else:
                classes.append(name)
        elif callable(value):
            functions.append(name)
        else:
            encoded = encoder.encode(value)
            if not (type(encoded) is list and encoded and encoded[0] == "opaque"):
                values[name] = encoded
    return {"functions": functions, "exceptions": exceptions, "classes": classes, "values": values}


def _serve_candidate(job: dict[str, Any], channel: _Channel) -> None:
    """Loads the candidate, then answers one call per request until the channel closes."""
    guard = _Guard(lambda name: name == _CANDIDATE_FILE)
    budget = job["budget"]
    encoder = _Encoder(budget["values"], budget["chars"], budget["depth"])
    namespace: dict[str, Any] = {"__name__": job["module"], "__builtins__": builtins}
    code = job["code"]
    status, _, error, _ = _run_guarded(
        guard,
        job["load_timeout"],
        lambda: exec(compile(code, _CANDIDATE_FILE, "exec"), namespace),
    )
    reply = {"nonce": job["nonce"], "seq": 0}
    if status != "returned":
        channel.send({**reply, "event": "load_error", "error": error})
        return
    for required in job["functions"]:
        if not callable(namespace.get(required)):
            message = f"the code defines no function named {required!r}"
            channel.send({**reply, "event": "load_error", "error": message})
            return
    channel.send({**reply, "event": "loaded", "names": _public_names(namespace, encoder)})
    while (request := channel.receive()) is not None:
        function = namespace.get(request["function"])
        args = marshal.loads(request["args"])
        kwargs = marshal.loads(request["kwargs"])

        def action(
            args: list[Any] = args, kwargs: dict[str, Any] = kwargs, function: Any = function
        ) -> list[Any]:
            returned = function(*args, **kwargs)
            return [encoder.encode(returned), encoder.encode(args), encoder.encode(kwargs)]

        status, result, error, bases = _run_guarded(guard, job["test_timeout"], action)
        value, args_after, kwargs_after = result if status == "returned" else (None, None, None)
        channel.send(
            {
                "nonce": request["nonce"],
                "seq": request["seq"],
                "status": status,
                "value": value,
                "args": args_after,
                "kwargs": kwargs_after,
                "error": error,
                "bases": bases,
            }
        )


def _decode(data: Any) -> Any:
    """The tagged plain form back into built-in values (the driver checked it already)."""
    if type(data) is not list:
        return data
    tag, body = data[0], data[1]
    if tag == "list":
        return [_decode(item) for item in body]
    if tag == "tuple":
        return tuple(_decode(item) for item in body)
    if tag == "set":
        return {_decode(item) for item in body}
    if tag == "frozenset":
        return frozenset(_decode(item) for item in body)
    if tag == "dict":
        return {_decode(k): _decode(v) for k, v in body}
    return _Opaque(str(body), str(data[2]) if len(data) > 2 else "not plain data")


class _Opaque:
    """A value of the candidate's that was not plain data; it equals nothing."""

    def __init__(self, type_name: str, reason: str) -> None:
        self.type_name = type_name
        self.reason = reason

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"<{self.type_name}: {self.reason}>"


def _update_in_place(target: Any, after: Any) -> None:
    """Makes a caller's list, dict or set hold what the call left in its copy."""
    if type(target) is list and type(after) is list:
        target[:] = after
    elif type(target) in (dict, set) and type(after) is type(target):
        target.clear()
        target.update(after)


class _Proxy:
    """The candidate's module as the tests see it: every call is a plain-data request."""

    def __init__(
        self, channel: _Channel, encoder: _Encoder, module: str, names: dict[str, Any]
    ) -> None:
        self._channel = channel
        self._encoder = encoder
        self._calls = 0
        self.exceptions: dict[str, type[Exception]] = {}
        for name, bases in names["exceptions"].items():
            base = _builtin_exception(bases)
            self.exceptions[name] = type(name, (base,), {"__module__": module})

    def module(self, name: str, names: dict[str, Any]) -> ModuleType:
        module = ModuleType(name, "The candidate's code, called across the sandbox boundary.")
        for function in names["functions"]:
            setattr(module, function, self._function(function))
        for cls in names["classes"]:
            setattr(module, cls, self._class(cls))
        for value_name, value in names["values"].items():
            setattr(module, value_name, _decode(value))
        for exception_name, exception in self.exceptions.items():
            setattr(module, exception_name, exception)
        return module

    def _function(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return self.call(name, list(args), kwargs)

        call.__name__ = call.__qualname__ = name
        return call

    def _class(self, name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise TypeError(
                f"{name} is a class of the candidate's: only its functions, exceptions and "
                "plain-data values cross the sandbox boundary"
            )

        refuse.__name__ = name
        return refuse

    def call(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        self._calls += 1
        sent_args, sent_kwargs = self._encoder.encode(args), self._encoder.encode(kwargs)
        for label, sent in (("an argument", sent_args), ("a keyword argument", sent_kwargs)):
            if "opaque" in _tags(sent):
                raise TypeError(
                    f"{name}() got {label} that is not plain data (None, bool, int, float, str, "
                    "list, tuple, dict, set): it cannot be passed to the candidate's process"
                )
        message = {"event": "call", "id": self._calls, "function": name}
        self._channel.send({**message, "args": sent_args, "kwargs": sent_kwargs})
        reply = self._channel.receive()
        if reply is None:
            raise CandidateFailure("the grader closed the channel")
        status = reply["status"]
        if status == "returned":
            for target, after in zip(args, _decode(reply["args"]), strict=False):
                _update_in_place(target, after)
            after_kwargs = _decode(reply["kwargs"])
            for key, target in kwargs.items():
                _update_in_place(target, after_kwargs.get(key))
            return _decode(reply["value"])
        error = str(reply["error"])
        if status != "raised":
            raise CandidateFailure(error)
        type_name, _, text = error.partition(": ")
        kind = self.exceptions.get(type_name)
        if kind is None:
            kind = _builtin_exception(reply["bases"])
            text = error if getattr(builtins, type_name, None) is not kind else text
        try:
            raised = kind(text)
        except Exception:  # a built-in exception that takes other arguments
            raised = Exception(error)
        raise raised


def _builtin_exception(names: list[str]) -> type[Exception]:
    """The first of ``names`` that is a built-in ``Exception`` class, else ``Exception``.

    Never a bare ``BaseException`` such as ``KeyboardInterrupt``: raised into the tests, that
    would stop the session, not fail one test.
    """
    for name in names:
        kind = getattr(builtins, name, None)
        if isinstance(kind, type) and issubclass(kind, Exception):
            return kind
    return Exception


def _tags(encoded: Any) -> set[str]:
    """The tags used anywhere in an encoded value."""
    if type(encoded) is not list:
        return set()
    found = {encoded[0]}
    body = encoded[1] if len(encoded) > 1 else None
    if type(body) is list:
        for item in body:
            if type(item) is list and encoded[0] == "dict":
                for part in item:
                    found |= _tags(part)
            else:
                found |= _tags(item)
    return found


def _run_tests(job: dict[str, Any], channel: _Channel) -> None:
    """Runs pytest on the task's test file, reporting each test as it starts and ends."""
    import tempfile

    workdir = tempfile.mkdtemp(prefix="tests-")
    guard = _Guard(lambda name: name.startswith(workdir + os.sep))
    for name, text in job["files"].items():
        with builtins.open(os.path.join(workdir, name), "w", encoding="utf-8") as handle:
            handle.write(text)
    ini = os.path.join(workdir, "pytest.ini")
    with builtins.open(ini, "w", encoding="utf-8") as handle:
        handle.write("[pytest]\n")
    os.chdir(workdir)
    sys.path.insert(0, workdir)
    sys.dont_write_bytecode = True
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    budget = job["budget"]
    encoder = _Encoder(budget["values"], budget["chars"], budget["depth"])
    proxy = _Proxy(channel, encoder, job["module"], job["names"])
    sys.modules[job["module"]] = proxy.module(job["module"], job["names"])
    skip = set(job["skip"])
    test_timeout = job["test_timeout"]

    class Plugin:
        status = "passed"
        error = ""

        def pytest_collection_modifyitems(self, config: Any, items: list[Any]) -> None:
            guard.disarm()
            kept = [item for item in items if item.nodeid not in skip]
            dropped = [item for item in items if item.nodeid in skip]
            if dropped:
                config.hook.pytest_deselected(items=dropped)
            items[:] = kept
            channel.send({"event": "collected", "names": [item.nodeid for item in kept]})

        def pytest_collectreport(self, report: Any) -> None:
            if report.failed:
                channel.send(
                    {
                        "event": "outcome",
                        "name": report.nodeid or "collection",
                        "status": "error",
                        "error": _tail(report.longreprtext),
                    }
                )

        def pytest_runtest_logstart(self, nodeid: str, location: object) -> None:
            self.status, self.error = "passed", ""
            channel.send({"event": "start", "name": nodeid})
            guard.arm(test_timeout)

        def pytest_runtest_logreport(self, report: Any) -> None:
            if self.status != "passed":
                return
            if report.failed:
                self.status = "failed" if report.when == "call" else "error"
                self.error = _tail(report.longreprtext)
            elif report.skipped:
                self.status, self.error = "skipped", "skipped"

        def pytest_runtest_logfinish(self, nodeid: str, location: object) -> None:
            guard.disarm()
            status, error = self.status, self.error
            if guard.fired:
                status, error = "timeout", f"timed out after {test_timeout:g} s"
            elif "CandidateFailure: " in error:
                cause = error.rsplit("CandidateFailure: ", 1)[1].strip().splitlines()[0]
                status = "timeout" if "timed out" in cause else "crashed"
                error = f"the call into the candidate failed: {cause}"
            channel.send({"event": "outcome", "name": nodeid, "status": status, "error": error})

    guard.arm(job["load_timeout"])
    try:
        import pytest

        pytest.main(
            [
                job["test_file"],
                "-q",
                "--color=no",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:faulthandler",
                "-c",
                ini,
                "--rootdir",
                workdir,
            ],
            plugins=[Plugin()],
        )
    except _Timeout:
        channel.send({"event": "load_error", "error": "pytest timed out while collecting"})
    finally:
        guard.disarm()


def _run_check(job: dict[str, Any], channel: _Channel) -> None:
    """Runs HumanEval-style test code: ``check(candidate)`` with the proxied entry point."""
    guard = _Guard(lambda name: name == _CHECK_FILE)
    budget = job["budget"]
    encoder = _Encoder(budget["values"], budget["chars"], budget["depth"])
    proxy = _Proxy(channel, encoder, job["module"], job["names"])
    module = proxy.module(job["module"], job["names"])
    namespace: dict[str, Any] = {"__name__": "tests", "__builtins__": builtins}
    test = job["test"]
    status, _, error, _ = _run_guarded(
        guard, job["load_timeout"], lambda: exec(compile(test, _CHECK_FILE, "exec"), namespace)
    )
    check = namespace.get("check")
    if status != "returned" or not callable(check):
        error = error or "the test code defines no function check(candidate)"
        channel.send({"event": "load_error", "error": f"the test code could not run: {error}"})
        return
    candidate = getattr(module, job["entry_point"])
    namespace[job["entry_point"]] = candidate  # a check may call it by name, as HumanEval/33's
    channel.send({"event": "collected", "names": ["check"]})
    channel.send({"event": "start", "name": "check"})

    def run_check() -> None:
        try:
            check(candidate)
        except AssertionError as failed:  # name the assertion: a bare one says nothing
            line = _failing_line(failed.__traceback__, test)
            raise AssertionError(f"{line}: {failed}" if str(failed) else line) from None

    status, _, error, _ = _run_guarded(guard, job["test_timeout"], run_check)
    if status == "returned":
        outcome = "passed"
    elif status == "timeout":
        outcome = "timeout"
    elif error.startswith("CandidateFailure: "):
        error = "the call into the candidate failed: " + error.split(": ", 1)[1]
        outcome = "timeout" if "timed out" in error else "crashed"
    else:
        outcome = "failed"
    channel.send({"event": "outcome", "name": "check", "status": outcome, "error": error})


def _failing_line(traceback: Any, source: str) -> str:
    """The line of the test code where an assertion failed (cut to 300 characters)."""
    lineno = 0
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == _CHECK_FILE:
            lineno = traceback.tb_lineno
        traceback = traceback.tb_next
    lines = source.splitlines()
    line = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else "an assertion"
    return line if len(line) <= 300 else line[:297] + "..."


def _tail(text: str, limit: int = 1500) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


def _apply_limits(limits: dict[str, int]) -> None:
    """Lowers this process's rlimits; raising is never attempted."""
    wanted = [
        (resource.RLIMIT_CPU, limits["cpu_seconds"], limits["cpu_seconds"] + 1),
        (resource.RLIMIT_AS, limits["memory_bytes"], limits["memory_bytes"]),
        (resource.RLIMIT_NPROC, limits["processes"], limits["processes"]),
        (resource.RLIMIT_FSIZE, limits["file_bytes"], limits["file_bytes"]),
        (resource.RLIMIT_NOFILE, limits["open_files"], limits["open_files"]),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    for which, soft, hard in wanted:
        _, current = resource.getrlimit(which)
        if current != resource.RLIM_INFINITY:
            hard = min(hard, current)
            soft = min(soft, hard)
        resource.setrlimit(which, (soft, hard))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write fails instead of killing


# Seccomp: a classic BPF program over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}.
class _Syscalls(NamedTuple):
    """Syscall numbers the filter looks at, for one architecture."""

    clone: int
    clone3: int
    kill: int
    tgkill: int
    socket: int
    denied: tuple[int, ...]


_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_SYSCALLS = {
    # denied: fork vfork execve execveat ptrace tkill process_vm_readv/writev pidfd_send_signal
    # unshare setns mount umount2 pivot_root chroot keyctl add_key request_key bpf userfaultfd
    # perf_event_open io_uring_setup/enter/register open_by_handle_at name_to_handle_at
    # kexec_load init_module finit_module delete_module personality fsopen fsmount move_mount
    # open_tree
    "x86_64": _Syscalls(
        56,
        435,
        62,
        234,
        41,
        (
            *(57, 58, 59, 322, 101, 200, 310, 311, 424),
            *(272, 308, 165, 166, 155, 161, 250, 248, 249, 321, 323, 298, 425, 426, 427),
            *(304, 303, 246, 175, 313, 176, 135, 430, 432, 429, 428),
        ),
    ),
    "aarch64": _Syscalls(
        220,
        435,
        129,
        131,
        198,
        (
            *(221, 281, 117, 130, 270, 271, 424),
            *(97, 268, 40, 39, 41, 51, 219, 217, 218, 280, 282, 241, 425, 426, 427),
            *(265, 264, 104, 105, 273, 106, 92, 430, 432, 429, 428),
        ),
    ),
}
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS = 1, 38
_CLONE_THREAD, _AF_UNIX = 0x00010000, 1
_X32_BIT = 0x40000000


def _seccomp_program(machine: str, pid: int) -> bytes | None:
    """Assembles the filter for ``machine``; None where the syscall table is not known."""
    arch = _AUDIT_ARCH.get(machine)
    table = _SYSCALLS.get(machine)
    if arch is None or table is None:
        return None
    code: list[tuple[int, int | str, int | str, int]] = [
        (_LD_ABS, 0, 0, 4),
        (_JEQ, 0, "deny", arch),  # another ABI (int 0x80 from x86_64) is refused outright
        (_LD_ABS, 0, 0, 0),
    ]
    if machine == "x86_64":
        code.append((_JGE, "deny", 0, _X32_BIT))
    code += [
        (_JEQ, "enosys", 0, table.clone3),  # libc falls back to clone
        (_JEQ, "clone", 0, table.clone),
        (_JEQ, "self", 0, table.kill),
        (_JEQ, "self", 0, table.tgkill),
        (_JEQ, "unix", 0, table.socket),
    ]
    code += [(_JEQ, "deny", 0, number) for number in table.denied]
    labels: dict[str, int] = {}
    code.append((_RET, 0, 0, _ALLOW))
    labels["clone"] = len(code)
    code += [(_LD_ABS, 0, 0, 16), (_JSET, "allow", "deny", _CLONE_THREAD)]
    labels["self"] = len(code)
    code += [(_LD_ABS, 0, 0, 16), (_JEQ, "allow", "deny", pid)]
    labels["unix"] = len(code)
    code += [(_LD_ABS, 0, 0, 16), (_JEQ, "allow", "deny", _AF_UNIX)]
    labels["allow"] = len(code)
    code.append((_RET, 0, 0, _ALLOW))
    labels["deny"] = len(code)
    code.append((_RET, 0, 0, _ERRNO | _EPERM))
    labels["enosys"] = len(code)
    code.append((_RET, 0, 0, _ERRNO | _ENOSYS))

    def offset(target: int | str, index: int) -> int:
        return labels[target] - index - 1 if isinstance(target, str) else target

    return b"".join(
        struct.pack("=HBBI", op, offset(jt, i), offset(jf, i), k)
        for i, (op, jt, jf, k) in enumerate(code)
    )


def _install_seccomp() -> bool:
    """Installs the filter on this process; returns whether it is in force."""
    program = _seccomp_program(os.uname().machine, os.getpid())
    if program is None:
        return False
    import ctypes

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return False
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    buffer = ctypes.create_string_buffer(program, len(program))
    filter_program = Program(len(program) // 8, ctypes.addressof(buffer))
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        return False
    address = ctypes.addressof(filter_program)
    return bool(prctl(pr_set_seccomp, seccomp_mode_filter, address, 0, 0) == 0)


def main() -> None:
    """Runs one job: reads it from stdin, answers on the original stdout, then exits."""
    # Own copies of the channel's descriptors: pytest points 0 and 1 elsewhere while it captures.
    channel = _Channel(os.dup(0), os.dup(1), 1 << 20)
    job = channel.receive()
    channel.max_line_bytes = job["max_line_bytes"]
    os.dup2(2, 1)  # raw writes to fd 1 land with the rest of the output
    _apply_limits(job["limits"])
    seccomp = _install_seccomp()
    sys.path[:0] = job["paths"]
    if job["mode"] == "candidate":
        sys.stdout = sys.stderr = _CappedOutput(job["max_output_bytes"])
    channel.send({"nonce": job["nonce"], "event": "ready", "seccomp": seccomp})
    if job["mode"] == "candidate":
        _serve_candidate(job, channel)
    else:
        (_run_tests if job["mode"] == "tests" else _run_check)(job, channel)
        channel.send({"event": "done"})
    os._exit(0)  # skip atexit handlers and finalizers the candidate may have left


if __name__ == "__main__":
    main()
