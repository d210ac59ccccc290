"""Plain values sent back by the sandbox, decoded in the grader's process.

The sandbox sends a tagged form (see ``_sandbox_runner``); decoding gives built-in values only:
None, bool, int, float, str, list, tuple, dict, set, frozenset, and ``Opaque`` for anything that
was not plain data. Checks on these values run no candidate code.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Opaque", "decode_value", "encode_value"]

_MAX_DEPTH = 200


class Opaque:
    """A value the sandbox could not send back as plain data. It equals nothing.

    Attributes:
        type_name: The candidate's type name.
        reason: Why it was not sent (not plain data, too large, nested too deeply).
    """

    __slots__ = ("reason", "type_name")

    def __init__(self, type_name: str, reason: str) -> None:
        self.type_name = type_name
        self.reason = reason

    def __eq__(self, other: object) -> bool:
        return False

    def __ne__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"<{self.type_name}: {self.reason}>"


def decode_value(data: Any, depth: int = 0) -> Any:
    """Decodes the sandbox's tagged form into built-in values.

    Anything malformed decodes to an ``Opaque`` rather than raising.
    """
    if data is None or isinstance(data, bool | int | float | str):
        return data
    if depth > _MAX_DEPTH:
        return Opaque("value", "nested too deeply")
    if not isinstance(data, list) or len(data) < 2 or not isinstance(data[0], str):
        return Opaque("value", "malformed")
    tag, body = data[0], data[1]
    if tag == "opaque":
        reason = data[2] if len(data) > 2 and isinstance(data[2], str) else "not plain data"
        return Opaque(str(body), reason)
    if not isinstance(body, list):
        return Opaque("value", "malformed")
    inner = depth + 1
    if tag == "list":
        return [decode_value(item, inner) for item in body]
    if tag == "tuple":
        return tuple(decode_value(item, inner) for item in body)
    if tag in ("set", "frozenset"):
        items = frozenset(_hashable(decode_value(item, inner)) for item in body)
        return items if tag == "frozenset" else set(items)
    if tag == "dict":
        result: dict[Any, Any] = {}
        for pair in body:
            if not isinstance(pair, list) or len(pair) != 2:
                return Opaque("dict", "malformed")
            result[_hashable(decode_value(pair[0], inner))] = decode_value(pair[1], inner)
        return result
    return Opaque("value", f"unknown tag {tag!r}")


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return Opaque(type(value).__name__, "unhashable key")
    return value


def encode_value(value: Any) -> Any:
    """The tagged form of a decoded value (the inverse of ``decode_value``)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Opaque):
        return ["opaque", value.type_name, value.reason]
    if isinstance(value, list):
        return ["list", [encode_value(item) for item in value]]
    if isinstance(value, tuple):
        return ["tuple", [encode_value(item) for item in value]]
    if isinstance(value, frozenset):
        return ["frozenset", [encode_value(item) for item in value]]
    if isinstance(value, set):
        return ["set", [encode_value(item) for item in value]]
    if isinstance(value, dict):
        return ["dict", [[encode_value(k), encode_value(v)] for k, v in value.items()]]
    return ["opaque", type(value).__name__, "not plain data"]
