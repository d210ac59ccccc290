"""Shared helpers of the grader tests (a plain module: conftest.py cannot be imported by name)."""

from __future__ import annotations

import os

import pytest

from graders import SandboxLimits, check_isolation

SECRET = "sk-planted-GRADER-SECRET-5e1f0c2a9b7d"
SECRET_VARIABLES = ("MOA_TEST_SECRET", "CEREBRAS_API_KEY", "OPENAI_API_KEY", "MOA_API_KEY")
FAST = SandboxLimits(test_timeout=0.75, load_timeout=2.0, candidate_timeout=20.0)


def require_bwrap() -> None:
    """Skips a test that needs bubblewrap where it does not work; `make test` and CI fail."""
    check = check_isolation()
    if check.level != "bwrap":
        if os.environ.get("CI") or os.environ.get("MOA_TEST_STRICT"):
            pytest.fail(f"bubblewrap must work under `make test`: {check.detail}")
        pytest.skip(check.detail)
