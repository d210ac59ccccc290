"""Runs ``moa-opt`` in a subprocess, as a user would, with no cloud keys in its environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def moa_env() -> dict[str, str]:
    """This environment without cloud keys or ``MOA_BASE_URL``, importing this checkout."""
    env = {
        k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "MOA_BASE_URL"
    }
    env["PYTHONPATH"] = str(ROOT)
    return env


def moa_opt(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    stdin: str | None = None,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m optimizer ARGS`` in ``cwd`` (``stdin`` its input); returns its output.

    ``prefix`` is a command that runs it (``setpriv ...``).
    """
    full_env = {**moa_env(), **(env or {})}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "optimizer", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
