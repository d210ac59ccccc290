"""One-line messages for pydantic validation errors: field paths, unknown fields, wrong types."""

from __future__ import annotations

import dataclasses
import difflib
import types
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from pydantic import ValidationError

__all__ = ["format_validation_error"]

_UNKNOWN = frozenset({"extra_forbidden", "unexpected_keyword_argument"})
_MISSING = frozenset({"missing", "missing_argument"})


def format_validation_error(
    source: str, error: ValidationError, schema: Any, extra_fields: Sequence[str] = ()
) -> str:
    """Formats every pydantic error as ``source: field.path: message``, joined by ``; ``.

    An unknown field is named with the nearest known field of ``schema`` (the validated
    dataclass) as a suggestion; the "required field is missing" of the field it suggests is
    then left out, since the typo explains it. A wrong type says what it got.

    Args:
        source: The file (or flag) the data came from.
        error: The error pydantic raised.
        schema: The dataclass the data was validated as, to list the known fields.
        extra_fields: Top-level fields the file may hold that ``schema`` does not.
    """
    suggested: set[str] = set()
    messages = []
    for item in error.errors():
        loc = tuple(item["loc"])
        path = ".".join(str(part) for part in loc)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] in _UNKNOWN:
            known = _fields_at(schema, loc[:-1])
            if not loc[:-1]:
                known += list(extra_fields)
            message, guess = _unknown_field(str(loc[-1]), known)
            if guess is not None:
                suggested.add(".".join(str(part) for part in (*loc[:-1], guess)))
        elif item["type"] in _MISSING:
            message = "required field is missing"
        elif item["type"] == "dataclass_type":
            message = f"expected a mapping of fields, got {_shown(item.get('input'))}"
        elif item["type"].endswith(("_type", "_parsing")) and "input" in item:
            message = message.replace("a valid tuple", "a list")  # YAML has lists only
            message = f"{message}, got {_shown(item['input'])}"
        # a cross-field check has no path; its message starts with the field path
        messages.append((path, f"{path}: {message}" if path else message, item["type"]))
    kept = [text for path, text, kind in messages if not (kind in _MISSING and path in suggested)]
    return f"{source}: " + "; ".join(dict.fromkeys(kept))


def _unknown_field(name: str, known: Sequence[str]) -> tuple[str, str | None]:
    """The message for unknown field ``name``, and the known field it suggests if any."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"unknown field (did you mean {close[0]}?)", close[0]
    if known:
        return f"unknown field (known fields: {', '.join(known)})", None
    return "unknown field", None


def _shown(value: Any) -> str:
    """A short ``repr`` of a value the user wrote (its type's name for containers)."""
    if isinstance(value, dict | list | tuple):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fields_at(schema: Any, path: Sequence[int | str]) -> list[str]:
    """The field names of the dataclass found at ``path`` inside ``schema`` ([] if none)."""
    kind = _unwrap(schema)
    for part in path:
        if isinstance(part, int):
            args = [a for a in get_args(kind) if a is not Ellipsis]
            kind = _unwrap(args[0]) if args else None
        elif dataclasses.is_dataclass(kind) and isinstance(kind, type):
            kind = _unwrap(get_type_hints(kind, include_extras=True).get(part))
        else:
            return []
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return [field.name for field in dataclasses.fields(kind)]
    return []


def _unwrap(kind: Any) -> Any:
    """``kind`` without ``Annotated`` and, for an optional or a union, its dataclass arm."""
    while get_origin(kind) is Annotated:
        kind = get_args(kind)[0]
    if get_origin(kind) in (Union, types.UnionType):
        arms = [_unwrap(arm) for arm in get_args(kind)]
        classes = [arm for arm in arms if dataclasses.is_dataclass(arm)]
        return classes[0] if classes else kind
    return kind
