"""Text that came from untrusted code, made safe to print, store as JSON and show in a terminal."""

from __future__ import annotations

import re

__all__ = ["safe_text"]

# C0 and C1 controls but tab and newline, DEL, and lone surrogates (not encodable as UTF-8).
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_MAX_LINE = 2000


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: str, limit: int | None = None) -> str:
    """Escapes control characters and lone surrogates; cuts very long lines and the whole text.

    Args:
        text: Text written by untrusted code (an exception message, printed output).
        limit: Most characters kept, if any; a cut text ends with ``...``.
    """
    text = _UNSAFE.sub(_escape, text)
    lines = [
        line if len(line) <= _MAX_LINE else line[:_MAX_LINE] + "... (line cut)"
        for line in text.split("\n")
    ]
    text = "\n".join(lines)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    return text
