"""Fixtures for the grader tests: sandboxes with short limits and a planted fake secret."""

from __future__ import annotations

import pytest
from grader_helpers import FAST, SECRET, SECRET_VARIABLES, require_bwrap

from graders import Sandbox


@pytest.fixture
def planted_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """Puts a fake API key into the grader's environment under the usual names."""
    for name in SECRET_VARIABLES:
        monkeypatch.setenv(name, SECRET)
    return SECRET


@pytest.fixture(scope="session")
def bwrap_sandbox() -> Sandbox:
    """A sandbox with bubblewrap and short limits."""
    require_bwrap()
    return Sandbox(FAST, isolation="bwrap")


@pytest.fixture(scope="session")
def unisolated_sandbox() -> Sandbox:
    """A sandbox without bubblewrap (the fallback) and short limits."""
    return Sandbox(FAST, isolation="unisolated")


@pytest.fixture(params=["bwrap", "unisolated"])
def any_sandbox(request: pytest.FixtureRequest) -> Sandbox:
    """Each isolation level in turn."""
    name = "bwrap_sandbox" if request.param == "bwrap" else "unisolated_sandbox"
    sandbox: Sandbox = request.getfixturevalue(name)
    return sandbox
