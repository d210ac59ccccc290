"""Errors that mean the user gave bad input (shown as one line, never a traceback)."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Bad input from the user: a file, field or flag. The message names which."""
