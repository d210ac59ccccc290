"""A task's identity and fingerprint: what a study and an exported config remember of it.

A study stores the task it searches (study user attr ``task``) with one digest per part
(each instance's prompt, grader, function name, reference, parameters, and the content of
every file a parameter names, such as the pytest file), so a resumed study whose task was
edited is refused with the part that changed. An exported config (``best.yaml``, or the
``best.task.yaml`` beside ``best.json``) names the task, so ``reproduce`` and ``run`` grade on
it by default.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graders._base import Task
from graders._suite import is_suite, suite_name

__all__ = ["TASK_ATTR", "TaskRef", "changed_parts", "task_location", "task_ref"]

TASK_ATTR = "task"
"""Study user attr: the task the study searches (:meth:`TaskRef.to_dict`)."""


@dataclass(frozen=True)
class TaskRef:
    """Which task, and what it held.

    Attributes:
        name: The task's name (``slugify``).
        source: A shipped task's name, or the absolute path of the task file.
        fingerprint: ``sha256:`` digest of every part.
        parts: Part label (``prompt``, ``test_file test_slug.py``...) to a digest of it.
    """

    name: str
    source: str
    fingerprint: str
    parts: Mapping[str, str] = field(default_factory=dict, compare=False)

    def to_dict(self, *, parts: bool = True) -> dict[str, Any]:
        """The stored form; with ``parts`` for a study, without for a config file."""
        data: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "fingerprint": self.fingerprint,
        }
        if parts:
            data["parts"] = dict(self.parts)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> TaskRef | None:
        """Reads the stored form; None if ``data`` is not one."""
        if not isinstance(data, Mapping):
            return None
        fields = [data.get(key) for key in ("name", "source", "fingerprint")]
        if not all(isinstance(value, str) and value for value in fields):
            return None
        parts = data.get("parts")
        stored = {str(k): str(v) for k, v in parts.items()} if isinstance(parts, Mapping) else {}
        return cls(str(fields[0]), str(fields[1]), str(fields[2]), stored)


def task_location(task: str, base: Path | None = None) -> str:
    """Where a task comes from: a shipped name as given, or a file's absolute path.

    Args:
        task: A shipped task's name (``name/instance`` too), ``humaneval``, or a path to a
            task file (``.yaml``) or a suite (``.jsonl``).
        base: The folder a relative path is taken from (a space file's folder); None: the
            working directory.
    """
    if not task.endswith((".yaml", ".yml", ".jsonl")):
        return task
    path = Path(task).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return str(path.resolve())


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _task_parts(task: Task, prefix: str) -> dict[str, Any]:
    parts: dict[str, Any] = {
        f"{prefix}prompt": task.prompt,
        f"{prefix}grader": task.grader,
        f"{prefix}function_name": task.function_name,
        f"{prefix}reference": task.reference,
    }
    for key, value in task.params.items():
        if key.endswith("_source"):
            file_key = key.removesuffix("_source") + "_file"
            parts[f"{prefix}{file_key} {task.params.get(file_key, '')}".rstrip()] = value
        else:
            parts[f"{prefix}params.{key}"] = value
    return parts


def task_ref(tasks: Sequence[Task], source: str) -> TaskRef:
    """The identity and fingerprint of a task's instances, loaded from ``source``."""
    raw: dict[str, Any] = {"instances": [task.name for task in tasks]}
    suite = is_suite(source)
    for task in tasks:
        if suite:  # a suite's task ids need not share a prefix: one part per problem
            raw[f"problem {task.name}"] = _task_parts(task, "")
            continue
        _, _, instance = task.name.partition("/")
        raw.update(_task_parts(task, f"instance {instance}: " if len(tasks) > 1 else ""))
    parts = {label: _digest(value)[:16] for label, value in raw.items()}
    name = suite_name(source) if suite else tasks[0].name.partition("/")[0] if tasks else ""
    return TaskRef(name, source, f"sha256:{_digest(parts)}", parts)


def changed_parts(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """The labels of the parts that differ, were added or were removed, in order."""
    labels = list(dict.fromkeys([*old, *new]))
    return [label for label in labels if old.get(label) != new.get(label)]
