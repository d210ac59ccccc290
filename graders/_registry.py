"""Finding graders: by built-in name, by ``moa_optimizer.graders`` entry point, or by path.

A third-party package registers a grader in its ``pyproject.toml``::

    [project.entry-points."moa_optimizer.graders"]
    rubric = "my_package.graders:RubricGrader"

The object named may be a ``BaseGrader`` subclass (built with the options given), a
ready-made ``BaseGrader`` instance, or a callable returning one.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from typing import Any

from graders._base import BaseGrader
from graders._errors import GraderError

__all__ = ["ENTRY_POINT_GROUP", "GraderInfo", "get_grader", "grader_type", "list_graders"]

ENTRY_POINT_GROUP = "moa_optimizer.graders"

_BUILTIN = {
    "function120": "graders._function120:Function120Grader",
    "pytest": "graders._pytest_grader:PytestGrader",
    "exact": "graders._exact:ExactGrader",
    "judge": "graders._judge:JudgeGrader",
    "humaneval": "graders._humaneval:HumanEvalGrader",
}


@dataclass(frozen=True)
class GraderInfo:
    """A grader that can be named.

    Attributes:
        name: What to pass to ``get_grader`` or ``--grader``.
        origin: ``built-in`` or ``entry point from <distribution>``.
        summary: The first line of its docstring, or why it could not be loaded.
    """

    name: str
    origin: str
    summary: str


def get_grader(name: str, **options: Any) -> BaseGrader:
    """Returns the grader called ``name``, built with ``options``.

    Args:
        name: A built-in name, an entry point name, or ``module:attribute``.
        **options: Passed to the grader class.

    Raises:
        GraderError: Unknown name, an object that is not a grader, or options it does not take.
    """
    target = _resolve(name)
    if isinstance(target, type) and issubclass(target, BaseGrader):
        try:
            return target(**options)
        except TypeError as error:
            raise GraderError(f"grader {name!r}: {error}") from error
    if isinstance(target, BaseGrader):
        if options:
            raise GraderError(f"grader {name!r} is a ready-made instance and takes no options")
        return target
    if callable(target) and not isinstance(target, type):
        try:
            made = target(**options)
        except TypeError as error:
            raise GraderError(f"grader {name!r}: {error}") from error
        if isinstance(made, BaseGrader):
            return made
    raise GraderError(f"grader {name!r} is not a BaseGrader subclass, instance or factory")


def grader_type(name: str) -> type[BaseGrader] | None:
    """Returns the class of the grader called ``name``; None for a factory (known only once built).

    Raises:
        GraderError: Unknown name, or an object that is not a grader.
    """
    target = _resolve(name)
    if isinstance(target, type) and issubclass(target, BaseGrader):
        return target
    if isinstance(target, BaseGrader):
        return type(target)
    if callable(target):
        return None
    raise GraderError(f"grader {name!r} is not a BaseGrader subclass, instance or factory")


def list_graders() -> tuple[GraderInfo, ...]:
    """Returns the built-in graders, then those registered by entry points."""
    infos = [GraderInfo(name, "built-in", _summary(name)) for name in _BUILTIN]
    for entry in sorted(_entry_points(), key=lambda e: e.name):
        if entry.name in _BUILTIN:
            continue
        dist = entry.dist.name if entry.dist is not None else "unknown distribution"
        infos.append(GraderInfo(entry.name, f"entry point from {dist}", _summary(entry.name)))
    return tuple(infos)


def _summary(name: str) -> str:
    try:
        target = _resolve(name)
    except GraderError as error:
        return f"could not be loaded: {error}"
    doc = (getattr(target, "__doc__", None) or "").replace("``", "").strip()
    return doc.splitlines()[0] if doc else ""


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _resolve(name: str) -> object:
    if name in _BUILTIN:
        return _load(_BUILTIN[name], name)
    for entry in _entry_points():
        if entry.name == name:
            try:
                return entry.load()
            except Exception as error:
                message = f"grader {name!r}: its entry point failed to load: {error}"
                raise GraderError(message) from error
    if ":" in name:
        return _load(name, name)
    known = ", ".join([*_BUILTIN, *(e.name for e in _entry_points() if e.name not in _BUILTIN)])
    raise GraderError(f"unknown grader {name!r}; known graders: {known}; or give module:attribute")


def _load(path: str, name: str) -> object:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise GraderError(f"grader {name!r}: expected module:attribute")
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as error:
        raise GraderError(f"grader {name!r}: cannot import {module_name!r}: {error}") from error
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as error:
            raise GraderError(f"grader {name!r}: {module_name!r} has no {attribute!r}") from error
    return target
