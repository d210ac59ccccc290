"""Reading grader parameters from task files, with errors that name the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graders._errors import GraderError
from graders._rules import NO_RULES, WORKSHOP_RULES, CodeRules

__all__ = ["number_param", "rules_param", "str_param"]

_RULES = {"workshop": WORKSHOP_RULES, "none": NO_RULES}


def str_param(params: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    """Returns ``params[key]`` as a non-empty string.

    Raises:
        GraderError: Missing without a default, or not a non-empty string.
    """
    value = params.get(key, default)
    if value is None:
        raise GraderError(f"{where}.{key}: required")
    if not isinstance(value, str) or not value.strip():
        raise GraderError(f"{where}.{key}: expected a non-empty string, got {value!r}")
    return value


def number_param(params: Mapping[str, Any], key: str, where: str, default: float) -> float:
    """Returns ``params[key]`` as a positive number, or ``default`` when absent.

    Raises:
        GraderError: Not a positive number.
    """
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise GraderError(f"{where}.{key}: expected a positive number, got {value!r}")
    return float(value)


def rules_param(params: Mapping[str, Any], where: str, default: CodeRules) -> CodeRules:
    """Returns the code rules named by ``params["rules"]`` (``workshop`` or ``none``).

    Raises:
        GraderError: Another value.
    """
    value = params.get("rules")
    if value is None:
        return default
    if value not in _RULES:
        raise GraderError(f"{where}.rules: expected one of {', '.join(_RULES)}, got {value!r}")
    return _RULES[value]
