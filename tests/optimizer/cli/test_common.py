from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest
from rich.table import Table

from optimizer.cli._common import console, run_folder


def test_runs_started_in_one_second_get_folders_of_their_own(tmp_path: Path) -> None:
    parent = tmp_path / "runs" / "reproduce"
    folders = [run_folder(parent) for _ in range(3)]
    assert len(set(folders)) == 3 and all(f.is_dir() and f.parent == parent for f in folders)
    assert re.fullmatch(r"\d{8}-\d{6}", folders[0].name)
    (folders[0] / "0-c.jsonl").write_text("kept\n")
    again = run_folder(parent)
    assert again not in folders and (folders[0] / "0-c.jsonl").read_text() == "kept\n"


CONFIG = "1 cycle: qwen2.5-coder-1.5b@0.3 + qwen2.5-coder-1.5b@1 -> qwen2.5-coder-1.5b@0.4"


def wrapped_lines(width: str | None, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # piped: not a terminal, even under -s
    for forcing in ("FORCE_COLOR", "TTY_COMPATIBLE"):  # which would make rich call it one
        monkeypatch.delenv(forcing, raising=False)
    if width is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", width)
    table = Table("trial", "config")
    table.add_row("23", CONFIG)
    out = console()
    with out.capture() as captured:
        out.print(table)
    return captured.get().splitlines()


def test_piped_tables_are_not_cut_to_80_columns_unless_columns_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    piped = wrapped_lines(None, monkeypatch)
    assert any(CONFIG in line for line in piped), piped
    narrow = wrapped_lines("60", monkeypatch)
    assert max(len(line) for line in narrow) <= 60
    assert not any(CONFIG in line for line in narrow), narrow
