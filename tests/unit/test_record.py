"""``Record``: value objects without dataclasses (equality, hash, repr, frozen, pickle)."""

from __future__ import annotations

import copy
import pickle
from typing import Final

import pytest

from backhaul.state.record import FrozenRecordError, Record


class Point(Record):
    __slots__ = ("x", "y")

    def __init__(self, x: int, y: int) -> None:
        self.x: Final = x
        self.y: Final = y


class Span(Record):
    """A record with a derived field left out of equality."""

    __slots__ = ("start", "end", "length")
    _compared = ("start", "end")

    def __init__(self, start: int, end: int) -> None:
        self.start: Final = start
        self.end: Final = end
        self.length: Final = end - start


def test_compared_by_value_and_type() -> None:
    assert Point(1, 2) == Point(1, 2)
    assert Point(1, 2) != Point(2, 1)
    assert hash(Point(1, 2)) == hash(Point(1, 2))
    assert Point(1, 2) != (1, 2)
    assert Span(1, 2) != Point(1, 2)
    assert {Point(1, 2), Point(1, 2)} == {Point(1, 2)}


def test_repr_and_as_dict_name_the_compared_fields() -> None:
    assert repr(Point(1, 2)) == "Point(x=1, y=2)"
    assert repr(Span(3, 7)) == "Span(start=3, end=7)"
    assert Span(3, 7).as_dict() == {"start": 3, "end": 7}
    assert Span(3, 7).length == 4


def test_fields_are_set_once() -> None:
    point = Point(1, 2)
    with pytest.raises(FrozenRecordError, match="set once"):
        point.x = 5  # type: ignore[misc]
    with pytest.raises(FrozenRecordError, match="cannot be deleted"):
        del point.y
    with pytest.raises(AttributeError):
        point.z = 1  # type: ignore[attr-defined]
    assert (point.x, point.y) == (1, 2)


def test_replace_makes_a_changed_copy() -> None:
    span = Span(3, 7)
    longer = span.replace(end=9)
    assert (longer.start, longer.end, longer.length) == (3, 9, 6)
    assert span == Span(3, 7)
    with pytest.raises(TypeError):
        span.replace(length=1)


def test_pickled_and_copied_whole() -> None:
    span = Span(3, 7)
    for again in (pickle.loads(pickle.dumps(span, protocol=5)), copy.copy(span)):
        assert again == span and again.length == 4
        with pytest.raises(FrozenRecordError):
            again.start = 0  # type: ignore[misc]
