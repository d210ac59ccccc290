"""How sandbox processes are isolated: bubblewrap with least privilege, or not at all on request.

Under bubblewrap a sandbox process sees only ``/usr`` (read-only, with ``/bin``, ``/lib``...
as the host has them), ``/etc/ld.so.cache``, the interpreter's prefix (read-only, its own
site-packages hidden), the few packages a run allows (read-only, under ``/opt/moa-site``), a
minimal ``/dev``, and size-limited tmpfs mounts at ``/tmp`` and ``/dev/shm``. There is no
``/proc``, no home directory, nothing of the project and nothing of other users. It runs as
uid and gid 65534 with no capabilities and no supplementary groups, in its own PID, IPC, UTS,
network and cgroup namespaces. When the grader runs as root, bubblewrap runs privileged and
``setpriv`` drops to 65534 before Python starts, so the process is unprivileged on the host
too (a uid 0 in a user namespace may still write ``/proc/sys``); otherwise bubblewrap runs
unprivileged and maps 65534 in its user namespace to the grader's uid.

Without working bubblewrap nothing untrusted runs, unless the user opts in with
``MOA_UNISOLATED=1`` (the CLI's ``--unisolated``). Unisolated processes still get rlimits and
the seccomp filter (no processes, no network sockets, no tracing), but they run as the grader's
own user: they can read what it can read, including its environment. That mode promises
nothing against a hostile candidate.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.resources
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "SANDBOX_UID",
    "UNISOLATED_ENV",
    "IsolationCheck",
    "bwrap_command",
    "check_isolation",
    "interpreter",
    "package_paths",
    "remove_tree",
    "runner_source",
    "scrubbed_env",
    "unisolated_allowed",
    "unisolated_workdir",
]

SANDBOX_UID = 65534
"""The uid and gid of sandbox processes (``nobody``)."""
UNISOLATED_ENV = "MOA_UNISOLATED"
"""Set to 1 to let untrusted code run without isolation where bubblewrap does not work."""
SITE_DIR = "/opt/moa-site"
"""Where the packages a sandbox process may import appear inside bubblewrap."""
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_TOP_LEVEL = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class IsolationCheck:
    """Which isolation this machine offers, checked by running a process.

    Attributes:
        level: ``bwrap`` if bubblewrap started a least-privilege Python here, else ``none``.
        detail: Why, in words.
    """

    level: Literal["bwrap", "none"]
    detail: str


def unisolated_allowed() -> bool:
    """Whether the user opted in to running untrusted code without isolation."""
    return os.environ.get(UNISOLATED_ENV, "").strip().lower() in ("1", "true", "yes")


def interpreter(python: str) -> str:
    """The real interpreter binary behind ``python`` (a virtualenv's python is a link to it)."""
    return os.path.realpath(python)


def scrubbed_env(home: str) -> dict[str, str]:
    """The whole environment of a sandbox process: nothing but what Python needs."""
    return {
        "PATH": _SAFE_PATH,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": home,
        "TMPDIR": home,
    }


def package_paths(distributions: Sequence[str]) -> tuple[Path, ...]:
    """The top-level modules and packages of installed ``distributions`` and what they require.

    Distributions that are not installed are left out. The answer is kept for the life of the
    process: reading the installed files' lists scans site-packages, about a quarter of a
    search's CPU time when it was done for every sandbox process (BENCHMARKS.md).
    """
    return _package_paths(tuple(distributions))


@functools.cache
def _package_paths(distributions: tuple[str, ...]) -> tuple[Path, ...]:
    found: dict[str, Path] = {}
    for distribution in _with_requirements(distributions):
        for file in distribution.files or ():
            top = file.parts[0]
            if top in ("..", "__pycache__") or top.endswith((".dist-info", ".pth")):
                continue
            if len(file.parts) == 1 and not top.endswith(".py"):
                continue
            path = Path(str(distribution.locate_file(top)))
            if path.exists():
                found.setdefault(top, path)
    return tuple(found.values())


def _with_requirements(names: Sequence[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``names`` and, recursively, the ones they require here."""
    from packaging.requirements import InvalidRequirement, Requirement

    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen[key] = distribution
        for text in distribution.requires or ():
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(seen.values())


def bwrap_command(bwrap: str, python: str, packages: Sequence[Path], tmp_bytes: int) -> list[str]:
    """bubblewrap's command line that runs ``python`` with least privilege (see the module)."""
    binary = interpreter(python)
    prefix = os.path.dirname(os.path.dirname(binary))
    command = [
        bwrap,
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname", "sandbox",
        "--die-with-parent",
        "--ro-bind", "/usr", "/usr",
    ]  # fmt: skip
    for path in _TOP_LEVEL:
        if os.path.islink(path):
            command += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            command += ["--ro-bind", path, path]
    command += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    command += ["--dev", "/dev"]
    for tmpfs in ("/tmp", "/dev/shm"):
        command += ["--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", tmpfs]
    binds = [(prefix, prefix)] if prefix != "/usr" else []
    binds += [(str(path), f"{SITE_DIR}/{path.name}") for path in packages]
    made: set[str] = {"/", "/usr", "/tmp", "/dev", *_TOP_LEVEL}
    for source, target in binds:
        for parent in reversed(Path(target).parents):
            if str(parent) not in made:
                made.add(str(parent))
                command += ["--perms", "0755", "--dir", str(parent)]
        command += ["--ro-bind", source, target]
    for hidden in sorted(Path(prefix).glob("lib/python3*/site-packages")):
        if prefix != "/usr":
            command += ["--size", "4096", "--tmpfs", str(hidden), "--remount-ro", str(hidden)]
    command += ["--chdir", "/tmp"]
    if os.geteuid() == 0:
        command += ["--cap-drop", "ALL"]
        command += [
            arg for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP") for arg in ("--cap-add", cap)
        ]
        setpriv = shutil.which("setpriv", path=_SAFE_PATH) or "/usr/bin/setpriv"
        command += [
            "--",
            setpriv,
            f"--reuid={SANDBOX_UID}",
            f"--regid={SANDBOX_UID}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ]
    else:
        command += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
        command += ["--cap-drop", "ALL"]
    return [*command, "--", binary]


_isolation_lock = threading.Lock()
_isolation_checks: dict[str, IsolationCheck] = {}


def check_isolation(python: str | None = None) -> IsolationCheck:
    """Returns the isolation available for ``python`` (default: this interpreter); cached."""
    python = python or sys.executable
    with _isolation_lock:
        if python not in _isolation_checks:
            _isolation_checks[python] = _probe_bwrap(python)
        return _isolation_checks[python]


@functools.cache
def runner_source() -> str:
    """The source of the program that runs inside the sandbox (``_sandbox_runner``)."""
    return importlib.resources.files("graders").joinpath("_sandbox_runner.py").read_text("utf-8")


_PROBE = (
    "import os, sys\n"
    "runner = {'__name__': 'probe'}\n"
    "exec(sys.stdin.read(), runner)\n"
    "print(os.getuid(), os.getgid(), os.getgroups(), runner['_install_seccomp']())\n"
)


def _probe_bwrap(python: str) -> IsolationCheck:
    """Starts a sandboxed Python as the sandbox would and has it install the seccomp filter."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return IsolationCheck("none", "bubblewrap (bwrap) is not installed")
    runner = runner_source()
    argv = [*bwrap_command(bwrap, python, (), 1 << 20), "-I", "-S", "-c", _PROBE]
    try:
        probe = subprocess.run(
            argv, input=runner, capture_output=True, text=True, timeout=30, env=scrubbed_env("/tmp")
        )
    except (OSError, subprocess.SubprocessError) as error:
        return IsolationCheck("none", f"bubblewrap could not run: {error}")
    expected = f"{SANDBOX_UID} {SANDBOX_UID} []"
    answer = probe.stdout.strip()
    if probe.returncode != 0 or not answer.startswith(expected):
        reason = (probe.stderr.strip().splitlines() or [answer or "no output"])[-1]
        return IsolationCheck("none", f"bubblewrap does not work here: {reason[:500]}")
    if not answer.endswith("True"):
        machine = os.uname().machine
        return IsolationCheck("none", f"the seccomp filter cannot be installed on {machine}")
    return IsolationCheck("bwrap", f"bubblewrap works ({bwrap}), uid {SANDBOX_UID}, seccomp")


@contextlib.contextmanager
def unisolated_workdir() -> Iterator[str]:
    """A private directory for one unisolated process, removed whatever it did to it."""
    outer = tempfile.mkdtemp(prefix="moa-sandbox-")
    try:
        inner = os.path.join(outer, "work")
        os.mkdir(inner, 0o700)
        yield inner
    finally:
        remove_tree(outer)


def remove_tree(path: str) -> None:
    """Removes ``path`` without following links and whatever its permissions; never raises."""
    with contextlib.suppress(OSError):
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
            return

    def writable(function: Any, failed: str, info: Any) -> None:
        with contextlib.suppress(OSError):
            parent = os.path.dirname(failed)
            if not os.path.islink(parent):
                os.chmod(parent, 0o700)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
            function(failed)

    for _ in range(3):
        if not os.path.lexists(path):
            return
        with contextlib.suppress(OSError):
            shutil.rmtree(path, onerror=writable)
