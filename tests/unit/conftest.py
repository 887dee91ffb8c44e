"""Fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.memory_edge import Pair, memory_pair


@pytest.fixture
def pair() -> Iterator[Pair]:
    """The data plane with in-memory transports (see tests/unit/memory_edge.py)."""
    with memory_pair() as p:
        yield p
