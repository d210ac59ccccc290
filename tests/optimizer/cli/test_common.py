from __future__ import annotations

import re
from pathlib import Path

from optimizer.cli._common import run_folder


def test_runs_started_in_one_second_get_folders_of_their_own(tmp_path: Path) -> None:
    parent = tmp_path / "runs" / "reproduce"
    folders = [run_folder(parent) for _ in range(3)]
    assert len(set(folders)) == 3 and all(f.is_dir() and f.parent == parent for f in folders)
    assert re.fullmatch(r"\d{8}-\d{6}", folders[0].name)
    (folders[0] / "0-c.jsonl").write_text("kept\n")
    again = run_folder(parent)
    assert again not in folders and (folders[0] / "0-c.jsonl").read_text() == "kept\n"
