"""Tasks as data: YAML files shipped in ``graders/data/tasks`` or given by path.

A task file::

    name: arithmetic            # required
    grader: exact               # required: a grader name (see ``list_graders``)
    description: ...            # optional
    prompt: ...                 # the prompt; instances may give their own instead
    function_name: ...          # optional: the function a code task asks for
    reference: ...              # optional: a known good answer; it must score the maximum
    params: {...}               # optional: grader parameters; ``*_file`` entries name files
                                # next to the task file, read into ``*_source``
    instances:                  # optional: several problems sharing the above
      - name: easy              # each becomes a Task named ``arithmetic/easy``
        prompt: ...             # overrides the file's prompt
        reference: ...          # overrides the file's reference
        params: {...}           # merged over the file's params

Tasks shipped with the package are found by name (``challenge``); one instance of a task with
several by ``name/instance``.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from graders._base import BaseGrader, Task
from graders._errors import GraderError
from graders._registry import grader_type
from graders._suite import is_suite, load_suite

__all__ = ["list_tasks", "load_task", "load_tasks"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_FILE_KEYS = frozenset(
    {"name", "grader", "description", "prompt", "function_name", "params", "reference", "instances"}
)
_INSTANCE_KEYS = frozenset({"name", "prompt", "function_name", "params", "reference"})


def _task_dir() -> Traversable:
    return importlib.resources.files("graders").joinpath("data", "tasks")


def list_tasks() -> tuple[str, ...]:
    """Returns the names of the tasks shipped with the package, sorted."""
    names = (
        entry.name.rsplit(".", 1)[0]
        for entry in _task_dir().iterdir()
        if entry.is_file() and entry.name.endswith((".yaml", ".yml"))
    )
    return tuple(sorted(names))


def load_tasks(name_or_path: str | os.PathLike[str]) -> tuple[Task, ...]:
    """Loads a task: a shipped task's name, ``name/instance``, a YAML file, or a suite.

    A suite is ``humaneval`` or a ``.jsonl`` file (see ``graders._suite``).

    Returns:
        One Task per instance (one Task for a file without instances).

    Raises:
        GraderError: Unknown task or instance, or an invalid task file; the message names the
            file and the field.
    """
    text = os.fspath(name_or_path)
    if is_suite(text):
        return load_suite(text)
    if isinstance(name_or_path, os.PathLike) or text.endswith((".yaml", ".yml")):
        path = Path(text)
        if not path.is_file():
            raise GraderError(f"{text}: no such task file")
        return _parse(path, path.name)
    if Path(text).exists() or text.startswith(("/", ".")) or text.count("/") > 1:
        # a path, not ``name`` or ``name/instance``: say what a task file must be
        raise GraderError(f"{text}: not a task file (a .yaml task or a .jsonl suite)")
    name, _, instance = text.partition("/")
    shipped = list_tasks()
    if name not in shipped:
        raise GraderError(
            f"unknown task {name!r}; shipped tasks: {', '.join(shipped)}; suites: humaneval; "
            "or give a .yaml or .jsonl path"
        )
    source = next(
        _task_dir().joinpath(f"{name}{suffix}")
        for suffix in (".yaml", ".yml")
        if _task_dir().joinpath(f"{name}{suffix}").is_file()
    )
    tasks = _parse(source, source.name)
    if not instance:
        return tasks
    chosen = tuple(task for task in tasks if task.name == text)
    if not chosen:
        listing = ", ".join(task.name for task in tasks)
        raise GraderError(f"task {name!r} has no instance {instance!r}; it has: {listing}")
    return chosen


def load_task(name_or_path: str | os.PathLike[str]) -> Task:
    """Loads exactly one task; like ``load_tasks`` but a file with several instances is an error.

    Raises:
        GraderError: As ``load_tasks``, or the file holds several instances.
    """
    tasks = load_tasks(name_or_path)
    if len(tasks) != 1:
        listing = ", ".join(task.name for task in tasks)
        raise GraderError(
            f"task {os.fspath(name_or_path)!r} has {len(tasks)} instances; pick one: {listing}"
        )
    return tasks[0]


def _parse(source: Traversable, label: str) -> tuple[Task, ...]:
    try:
        data = yaml.safe_load(source.read_text("utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise GraderError(f"{label}: cannot read: {error}") from error
    except yaml.YAMLError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "invalid YAML"
        raise GraderError(f"{label}: not valid YAML: {first}") from error
    if not isinstance(data, dict):
        raise GraderError(f"{label}: expected a mapping of task fields at the top level")
    _check_keys(data, _FILE_KEYS, label, "")
    name = _name(data, "name", label)
    grader = _string(data, "grader", label, required=True)
    assert grader is not None
    kind = _grader_kind(grader, label)
    prompt = _string(data, "prompt", label)
    function_name = _string(data, "function_name", label)
    params = _params(data, "params", label, source)
    reference = _string(data, "reference", label)
    raw_instances = data.get("instances")
    if raw_instances is None:
        if prompt is None:
            raise GraderError(f"{label}: prompt: required")
        if kind is not None:
            kind.check_params(params, f"{label}: params")
        return (Task(name, prompt, grader, function_name, params, reference),)
    if not isinstance(raw_instances, list) or not raw_instances:
        raise GraderError(f"{label}: instances: expected a non-empty list")
    tasks = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_instances):
        where = f"instances[{index}]"
        if not isinstance(raw, dict):
            raise GraderError(f"{label}: {where}: expected a mapping")
        _check_keys(raw, _INSTANCE_KEYS, label, f"{where}.")
        instance = _name(raw, "name", label, prefix=f"{where}.", default=str(index + 1))
        if instance in seen:
            raise GraderError(f"{label}: {where}.name: {instance!r} is used twice")
        seen.add(instance)
        own_prompt = _string(raw, "prompt", label, prefix=f"{where}.") or prompt
        if own_prompt is None:
            raise GraderError(f"{label}: {where}.prompt: required (the file gives no prompt)")
        merged = {**params, **_params(raw, "params", label, source, prefix=f"{where}.")}
        if kind is not None:
            kind.check_params(merged, f"{label}: {where}.params")
        own_function = _string(raw, "function_name", label, prefix=f"{where}.") or function_name
        own_reference = _string(raw, "reference", label, prefix=f"{where}.") or reference
        tasks.append(
            Task(f"{name}/{instance}", own_prompt, grader, own_function, merged, own_reference)
        )
    return tuple(tasks)


def _grader_kind(grader: str, label: str) -> type[BaseGrader] | None:
    try:
        return grader_type(grader)
    except GraderError as error:
        raise GraderError(f"{label}: grader: {error}") from error


def _check_keys(data: Mapping[str, Any], allowed: frozenset[str], label: str, prefix: str) -> None:
    unknown = sorted(str(key) for key in data if key not in allowed)
    if unknown:
        raise GraderError(
            f"{label}: {prefix}{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})"
        )


def _string(
    data: Mapping[str, Any], key: str, label: str, *, prefix: str = "", required: bool = False
) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise GraderError(f"{label}: {prefix}{key}: required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise GraderError(f"{label}: {prefix}{key}: expected a non-empty string, got {value!r}")
    return value


def _name(
    data: Mapping[str, Any], key: str, label: str, *, prefix: str = "", default: str | None = None
) -> str:
    value = data.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise GraderError(
            f"{label}: {prefix}{key}: expected a name of letters, digits, '_', '-' or '.', "
            f"got {value!r}"
        )
    return value


def _params(
    data: Mapping[str, Any], key: str, label: str, source: Traversable, *, prefix: str = ""
) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise GraderError(f"{label}: {prefix}{key}: expected a mapping with string keys")
    params = dict(value)
    for name, reference in value.items():
        if not name.endswith("_file"):
            continue
        field = f"{prefix}{key}.{name}"
        if not isinstance(reference, str) or not reference or Path(reference).is_absolute():
            raise GraderError(f"{label}: {field}: expected a file name relative to the task file")
        parent: Traversable = source.parent if isinstance(source, Path) else _task_dir()
        target = parent.joinpath(*Path(reference).parts)
        if not target.is_file():
            raise GraderError(f"{label}: {field}: no such file {reference!r} next to the task file")
        params[name] = Path(reference).name
        params[name.removesuffix("_file") + "_source"] = target.read_text("utf-8")
    return params
