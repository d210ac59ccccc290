"""A user's own task, as the README's "Your own task" section writes it, for the CLI tests."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from moa_cli import ROOT

README = ROOT / "README.md"
GOOD_ANSWER = (
    "Here it is:\n\n```python\nimport re\n\n\ndef slugify(text):\n"
    '    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")\n```\n'
)
"""A model answer that passes every test of the README's slugify task."""


def section() -> str:
    """The README's "Your own task" section."""
    text = README.read_text(encoding="utf-8")
    start = text.index("### Your own task\n")
    return text[start : text.index("\n### ", start + 1)]


def files() -> dict[str, str]:
    """The files the section shows, by path under ``my-task/``."""
    pattern = re.compile(r"^`my-task/([^`]+)`[^`]*?:\n\n(`{3,})\w*\n(.*?)\n\2$", re.M | re.S)
    return {m.group(1): m.group(3) + "\n" for m in pattern.finditer(section())}


def commands() -> list[list[str]]:
    """The commands the section runs in ``my-task``, without ``moa-opt`` and comments."""
    text = section()
    start = text.index("Then, in `my-task`")
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert block is not None
    lines = [
        re.split(r"\s#\s", line, maxsplit=1)[0].strip() for line in block.group(1).splitlines()
    ]
    return [shlex.split(line)[1:] for line in lines if line.startswith("moa-opt ")]


def yaml_blocks() -> list[str]:
    """Every YAML block of the section."""
    return re.findall(r"```yaml\n(.*?)```", section(), re.S)


def write_task(folder: Path) -> Path:
    """Writes the section's files into ``folder/my-task``; returns that folder."""
    task = folder / "my-task"
    task.mkdir(parents=True, exist_ok=True)
    for name, text in files().items():
        (task / name).write_text(text, encoding="utf-8")
    return task


def good_responder(body: dict[str, Any]) -> str:
    """Every agent answers with the correct slugify."""
    return GOOD_ANSWER


def missing_responder(body: dict[str, Any]) -> str:
    """No agent ever writes the function."""
    return "I would rather not write code today."
