from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from openai_server import OpenAIServer

SECRET = "sk-test-PLANTED-SECRET-0123456789abcdef"


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    """A real OpenAI-compatible server on 127.0.0.1."""
    with OpenAIServer() as running:
        yield running


def strict() -> bool:
    """Whether a missing component fails the run instead of skipping (``make test``, CI)."""
    return bool(os.environ.get("CI") or os.environ.get("MOA_TEST_STRICT"))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under ``make test`` or CI, stops the run first and loudly when a component cannot start."""
    if not strict():
        return
    from graders import check_isolation

    isolation = check_isolation()
    if isolation.level != "bwrap":
        pytest.exit(f"bubblewrap cannot run here: {isolation.detail}", returncode=3)
    if not os.environ.get("MOA_TEST_POSTGRES_URL"):
        pytest.exit("PostgreSQL did not start: MOA_TEST_POSTGRES_URL is not set", returncode=3)
    if shutil.which("chromium") is None:
        pytest.exit("Chromium is not installed: scripts/setup chromium", returncode=3)


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium, for tests that render HTML; outside ``make test`` they skip without."""
    found = shutil.which("chromium")
    if found is None:
        if strict():
            pytest.fail("Chromium is not installed: run the tests with `make test`")
        pytest.skip("no Chromium (scripts/setup chromium installs it)")
    return found


@pytest.fixture
def postgres_url() -> str:
    """The PostgreSQL server `make test` starts; there it must run, elsewhere the test skips."""
    url = os.environ.get("MOA_TEST_POSTGRES_URL")
    if not url:
        if strict():
            pytest.fail("MOA_TEST_POSTGRES_URL is not set: run the tests with `make test`")
        pytest.skip("no PostgreSQL: run the tests with `make test`")
    return url
