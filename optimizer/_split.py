"""A suite's dev/test split: fixed when a study is created, kept for its whole life.

The search (trials, mutation feedback, the confirm stage) only ever sees ``dev``; ``validate``
is the one door to ``test``. The split is stored in the study user attr ``split`` as
``{"seed": S, "dev": [task ids], "test": [task ids]}``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage

from graders._base import Task
from optimizer._errors import UserError

__all__ = [
    "SPLIT_ATTR",
    "Split",
    "SplitError",
    "choose_split",
    "make_split",
    "split_tasks",
    "store_split",
    "stored_attr",
]

SPLIT_ATTR = "split"
"""Study user attr: the suite's split (:meth:`Split.to_dict`)."""


class SplitError(UserError):
    """A split cannot be made or kept as asked (a flag differs from the study's split)."""


@dataclass(frozen=True)
class Split:
    """Which problems of a suite the search may see (dev), and which it may not (test).

    Attributes:
        seed: The seed the split was drawn with.
        dev: Task ids the search evaluates, in suite order.
        test: Task ids kept for ``validate``, in suite order.
    """

    seed: int
    dev: tuple[str, ...]
    test: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The stored form."""
        return {"seed": self.seed, "dev": list(self.dev), "test": list(self.test)}

    @classmethod
    def from_dict(cls, data: Any) -> Split | None:
        """Reads the stored form; None if ``data`` is not one."""
        if not isinstance(data, Mapping) or not isinstance(data.get("seed"), int):
            return None
        dev, test = data.get("dev"), data.get("test")
        if not isinstance(dev, list) or not isinstance(test, list):
            return None
        return cls(int(data["seed"]), tuple(map(str, dev)), tuple(map(str, test)))

    def ids(self, part: str) -> tuple[str, ...]:
        """The task ids of ``dev`` or ``test``."""
        return self.dev if part == "dev" else self.test


def make_split(ids: Sequence[str], dev_size: int | None, seed: int) -> Split:
    """Draws ``dev_size`` ids for dev (default a quarter, at least 1); the rest are test.

    The draw depends only on the ids, the size and the seed.

    Raises:
        SplitError: Fewer than two problems, or a dev size that leaves no test problem.
    """
    if len(ids) < 2:
        raise SplitError(f"--dev-size: a split needs at least 2 problems; the suite has {len(ids)}")
    size = max(1, len(ids) // 4) if dev_size is None else dev_size
    if not 1 <= size < len(ids):
        raise SplitError(
            f"--dev-size: must be between 1 and {len(ids) - 1} (the suite has {len(ids)} "
            f"problems), got {size}"
        )
    drawn = set(random.Random(seed).sample(sorted(ids), size))
    return Split(
        seed,
        tuple(i for i in ids if i in drawn),
        tuple(i for i in ids if i not in drawn),
    )


def choose_split(
    stored: Any, ids: Sequence[str], dev_size: int | None, seed: int | None, study: str
) -> Split:
    """The study's split if it has one (flags must agree with it), else a new one.

    Args:
        stored: The study's ``split`` user attr, or None for a new study.
        ids: The suite's task ids.
        dev_size: ``--dev-size``, or None.
        seed: ``--split-seed``, or None (0 for a new split).
        study: The study's name, for messages.

    Raises:
        SplitError: A flag differs from the stored split, or it names problems the suite
            no longer has.
    """
    before = Split.from_dict(stored)
    if before is None:
        return make_split(ids, dev_size, 0 if seed is None else seed)
    if dev_size is not None and dev_size != len(before.dev):
        raise SplitError(
            f"--dev-size: study {study!r} was split with --dev-size {len(before.dev)}, not "
            f"{dev_size}; drop the flag to keep its split, or use a new --study name"
        )
    if seed is not None and seed != before.seed:
        raise SplitError(
            f"--split-seed: study {study!r} was split with --split-seed {before.seed}, not "
            f"{seed}; drop the flag to keep its split, or use a new --study name"
        )
    known = set(ids)
    missing = [i for i in (*before.dev, *before.test) if i not in known]
    if missing:
        raise SplitError(
            f"study {study!r}: its split names task id {missing[0]!r}, which the suite does "
            "not hold"
        )
    return before


def split_tasks(tasks: Sequence[Task], ids: Sequence[str]) -> tuple[Task, ...]:
    """The tasks named by ``ids``, in that order."""
    by_name = {task.name: task for task in tasks}
    return tuple(by_name[i] for i in ids)


def stored_attr(storage: BaseStorage, study_name: str, key: str) -> Any:
    """A study's user attr ``key``; None if the study or the attr does not exist."""
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return None
    return study.user_attrs.get(key)


def store_split(study: optuna.Study, split: Split) -> None:
    """Stores ``split`` in a new study; refuses one whose stored split differs.

    Call it under the storage lock, when the study is opened.

    Raises:
        SplitError: The study holds another split (a worker started with other flags).
    """
    stored = Split.from_dict(study.user_attrs.get(SPLIT_ATTR))
    if stored is None:
        study.set_user_attr(SPLIT_ATTR, split.to_dict())
    elif stored != split:
        raise SplitError(
            f"--dev-size/--split-seed: study {study.study_name!r} holds another split (seed "
            f"{stored.seed}, {len(stored.dev)} dev problems); use the same flags or a new --study"
        )
