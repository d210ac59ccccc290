# The two commands of the README: `make search` (the main job) and `make test`.
.PHONY: setup search test lint

setup:
	scripts/setup

search: setup
	.venv/bin/moa-opt search $(ARGS)

test:
	scripts/setup postgresql chromium
	url=$$(scripts/postgres) && MOA_TEST_POSTGRES_URL=$$url MOA_TEST_STRICT=1 .venv/bin/python -m pytest

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
