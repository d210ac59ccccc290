"""Tests for the fizzbuzz task; the candidate's code is importable as ``solution``."""

from __future__ import annotations

import pytest
from solution import fizzbuzz  # type: ignore[import-not-found]


def test_plain_numbers() -> None:
    assert [fizzbuzz(n) for n in (1, 2, 4, 7)] == ["1", "2", "4", "7"]


def test_multiples_of_three() -> None:
    assert [fizzbuzz(n) for n in (3, 6, 9)] == ["Fizz"] * 3


def test_multiples_of_five() -> None:
    assert [fizzbuzz(n) for n in (5, 10, 20)] == ["Buzz"] * 3


def test_multiples_of_fifteen() -> None:
    assert [fizzbuzz(n) for n in (15, 30, 45)] == ["FizzBuzz"] * 3


@pytest.mark.parametrize("bad", [0, -3, 2.5, "15"])
def test_rejects_what_is_not_a_positive_integer(bad: object) -> None:
    with pytest.raises(ValueError):
        fizzbuzz(bad)
