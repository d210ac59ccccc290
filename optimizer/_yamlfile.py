"""Reading a user's YAML file, with one-line errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from optimizer._errors import UserError

__all__ = ["dump_yaml", "kind_of", "read_text", "read_yaml"]


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


class _LiteralDumper(yaml.SafeDumper):
    """A safe dumper that writes multi-line strings as literal blocks (``|-``)."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _string)


def dump_yaml(data: Any, *, width: int = 100) -> str:
    """``data`` as YAML in the order given, multi-line strings as literal blocks (``|-``).

    A string PyYAML cannot write as a block (trailing spaces on a line, tabs, control
    characters) falls back to a quoted scalar, so the text always loads back the same.
    """
    text: str = yaml.dump(
        data, Dumper=_LiteralDumper, sort_keys=False, allow_unicode=True, width=width
    )
    return text
