"""Reading a user's YAML file, with one-line errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from optimizer._errors import UserError

__all__ = ["kind_of", "read_text", "read_yaml"]


def read_text(path: Path, error: type[UserError]) -> str:
    """Returns the UTF-8 text of ``path``.

    Raises:
        error: The file is missing, a directory, unreadable or not UTF-8 text; the message
            names the file.
    """
    try:
        data = path.read_bytes()
    except OSError as problem:
        raise error(f"{path}: cannot read: {problem.strerror or problem}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as problem:
        raise error(
            f"{path}: not a UTF-8 text file (byte 0x{data[problem.start]:02x} at offset "
            f"{problem.start})"
        ) from None


def read_yaml(path: Path, error: type[UserError]) -> Any:
    """Returns the parsed contents of ``path``.

    Raises:
        error: The file cannot be read or is not YAML; the message names the file and line.
    """
    text = read_text(path, error)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        what = getattr(problem, "problem", None) or str(problem).splitlines()[0]
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise error(f"{path}: invalid YAML: {where}{what}") from None


def kind_of(value: Any) -> str:
    """What a parsed file holds, for a message: ``a list``, ``nothing (an empty file)``..."""
    if value is None:
        return "nothing (an empty file)"
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "a number" if isinstance(value, int | float) else type(value).__name__
