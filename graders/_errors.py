"""The error graders raise for bad user input."""

from __future__ import annotations

__all__ = ["GraderError"]


class GraderError(ValueError):
    """Bad user input to the graders: an unknown grader or task, or an invalid task file.

    The message is one line naming the file, field or flag at fault.
    """
