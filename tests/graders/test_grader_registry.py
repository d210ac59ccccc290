"""Finding graders by name, by entry point and by module:attribute."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from graders import (
    ENTRY_POINT_GROUP,
    ExactGrader,
    Function120Grader,
    GraderError,
    JudgeGrader,
    PytestGrader,
    Task,
    get_grader,
    list_graders,
)

PLUGIN = '''
from graders import BaseGrader, GradeResult


class LengthGrader(BaseGrader):
    """Scores a response by its length, up to a limit."""

    name = "length"

    def __init__(self, limit=10):
        self.limit = limit

    def grade(self, response, task):
        return GradeResult(min(len(response), self.limit), self.limit)


READY = LengthGrader(limit=3)


def make(limit=5):
    return LengthGrader(limit)


NOT_A_GRADER = 42
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module ``moa_test_plugin`` with graders, and an installed distribution naming one."""
    (tmp_path / "moa_test_plugin.py").write_text(PLUGIN)
    info = tmp_path / "moa_test_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: moa-test-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""
            [{ENTRY_POINT_GROUP}]
            length = moa_test_plugin:LengthGrader
            broken = moa_test_plugin:missing
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "moa_test_plugin"
    sys.modules.pop("moa_test_plugin", None)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("function120", Function120Grader),
        ("pytest", PytestGrader),
        ("exact", ExactGrader),
        ("judge", JudgeGrader),
    ],
)
def test_builtin_graders_by_name(name: str, kind: type) -> None:
    grader = get_grader(name)
    assert type(grader) is kind and grader.name == name


def test_options_reach_the_grader() -> None:
    with pytest.raises(GraderError, match="judge: samples must be at least 1, got 0"):
        get_grader("judge", samples=0)
    with pytest.raises(GraderError, match=r"grader 'exact': ExactGrader\(\) takes no arguments"):
        get_grader("exact", colour="red")


def test_module_attribute_paths(plugin: str) -> None:
    task = Task("t", "p", "x")
    assert get_grader(f"{plugin}:LengthGrader", limit=4).grade("abcdef", task).score == 4
    assert get_grader(f"{plugin}:READY").grade("abcdef", task).score == 3
    assert get_grader(f"{plugin}:make").grade("abcdef", task).score == 5
    with pytest.raises(GraderError, match="takes no options"):
        get_grader(f"{plugin}:READY", limit=1)
    with pytest.raises(GraderError, match="is not a BaseGrader subclass, instance or factory"):
        get_grader(f"{plugin}:NOT_A_GRADER")
    with pytest.raises(GraderError, match="has no 'Nope'"):
        get_grader(f"{plugin}:Nope")
    with pytest.raises(GraderError, match="cannot import 'no_such_module_here'"):
        get_grader("no_such_module_here:X")


def test_entry_points(plugin: str) -> None:
    assert get_grader("length", limit=2).grade("abc", Task("t", "p", "length")).score == 2
    listed = {info.name: info for info in list_graders()}
    assert listed["length"].origin == "entry point from moa-test-plugin"
    assert listed["length"].summary == "Scores a response by its length, up to a limit."
    assert listed["broken"].summary.startswith("could not be loaded: grader 'broken'")
    with pytest.raises(GraderError, match="its entry point failed to load"):
        get_grader("broken")


def test_list_graders_starts_with_the_builtins() -> None:
    infos = list_graders()
    assert [i.name for i in infos[:4]] == ["function120", "pytest", "exact", "judge"]
    assert all(i.origin == "built-in" and i.summary for i in infos[:4])


def test_unknown_grader_lists_the_known_ones() -> None:
    with pytest.raises(
        GraderError, match="unknown grader 'nosuch'; known graders: function120, pytest"
    ):
        get_grader("nosuch")
