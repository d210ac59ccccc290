from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from openai_server import OpenAIServer

SECRET = "sk-test-PLANTED-SECRET-0123456789abcdef"


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    """A real OpenAI-compatible server on 127.0.0.1."""
    with OpenAIServer() as running:
        yield running


@pytest.fixture
def postgres_url() -> str:
    """The PostgreSQL server `make test` starts; CI must have it, elsewhere the test skips."""
    url = os.environ.get("MOA_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("MOA_TEST_POSTGRES_URL is not set: run the tests with `make test`")
        pytest.skip("no PostgreSQL: run the tests with `make test`")
    return url
