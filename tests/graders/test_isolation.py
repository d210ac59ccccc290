from __future__ import annotations

import importlib.metadata

import pytest

from graders._isolation import package_paths


def test_package_paths_are_looked_up_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    first = package_paths(("pytest",))
    assert first and all(path.exists() for path in first)
    assert "pytest" in {path.name for path in first}
    looked_up: list[str] = []
    real = importlib.metadata.distribution

    def distribution(name: str) -> importlib.metadata.Distribution:
        looked_up.append(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    assert package_paths(["pytest"]) == first
    assert looked_up == []  # every sandbox process starts without scanning site-packages again
