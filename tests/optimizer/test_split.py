"""A suite's dev/test split: deterministic, disjoint, kept by the study."""

from __future__ import annotations

import pytest

from optimizer._split import Split, SplitError, choose_split, make_split

IDS = [f"p{i}" for i in range(40)]


def test_split_is_deterministic_disjoint_and_covers_the_suite() -> None:
    split = make_split(IDS, 10, 3)
    assert split == make_split(IDS, 10, 3)
    assert len(split.dev) == 10 and len(split.test) == 30
    assert set(split.dev).isdisjoint(split.test)
    assert sorted([*split.dev, *split.test]) == sorted(IDS)
    assert list(split.dev) == [i for i in IDS if i in split.dev]  # suite order
    assert make_split(IDS, 10, 4).dev != split.dev  # another seed, another draw
    assert make_split(list(reversed(IDS)), 10, 3).dev == tuple(reversed(split.dev))


def test_default_dev_size_is_a_quarter_and_at_least_one() -> None:
    assert len(make_split(IDS, None, 0).dev) == 10
    assert len(make_split(["a", "b", "c"], None, 0).dev) == 1


@pytest.mark.parametrize(
    ("ids", "size", "message"),
    [
        (["a"], None, "--dev-size: a split needs at least 2 problems; the suite has 1"),
        (["a", "b"], 2, "--dev-size: must be between 1 and 1 (the suite has 2 problems), got 2"),
    ],
)
def test_impossible_splits_are_one_line_errors(
    ids: list[str], size: int | None, message: str
) -> None:
    with pytest.raises(SplitError) as error:
        make_split(ids, size, 0)
    assert str(error.value) == message


def test_a_resumed_study_keeps_its_split_and_refuses_other_flags() -> None:
    stored = make_split(IDS, 8, 5).to_dict()
    assert Split.from_dict(stored) == make_split(IDS, 8, 5)
    assert choose_split(stored, IDS, None, None, "s") == make_split(IDS, 8, 5)
    assert choose_split(stored, IDS, 8, 5, "s") == make_split(IDS, 8, 5)
    with pytest.raises(SplitError, match=r"^--dev-size: study 's' was split with --dev-size 8, "):
        choose_split(stored, IDS, 9, None, "s")
    with pytest.raises(SplitError, match=r"^--split-seed: study 's' was split with --split-seed 5"):
        choose_split(stored, IDS, None, 6, "s")
    with pytest.raises(SplitError, match="its split names task id 'p0', which the suite"):
        choose_split(stored, IDS[1:], None, None, "s")
