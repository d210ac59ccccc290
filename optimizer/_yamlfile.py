"""Reading a user's YAML file, with one-line errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from optimizer._errors import UserError

__all__ = ["read_yaml"]


def read_yaml(path: Path, error: type[UserError]) -> Any:
    """Returns the parsed contents of ``path``.

    Raises:
        error: The file cannot be read or is not YAML; the message names the file and line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as problem:
        raise error(f"{path}: cannot read: {problem.strerror or problem}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        what = getattr(problem, "problem", None) or str(problem).splitlines()[0]
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise error(f"{path}: invalid YAML: {where}{what}") from None
