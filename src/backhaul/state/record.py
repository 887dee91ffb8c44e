"""``Record``: a small value object for the data the supervisor holds and hands over.

A record names its fields in ``__slots__`` (in constructor order), sets each once in its
``__init__`` (declared ``Final`` for mypy; at run time a field set once cannot be set again
or deleted: :class:`FrozenRecordError`), and is compared, hashed, shown and turned into a
dict by those values, as ``@dataclass(frozen=True, slots=True)`` would do. It exists for
memory (issue 7: the RSS of all the edge's processes). The supervisor, whose memory every
worker inherits and which is counted once more for each process, does not import
``dataclasses``: that module imports ``inspect`` and with it ``ast``, ``dis`` and
``tokenize``, ~1.6 MB of RSS (measured on top of the supervisor's other imports). And a class
made by ``dataclass`` carries eight generated methods and a ``Field`` per field: the runtime
config's ~60 classes (:mod:`backhaul.edge.runtime_config`) took 1.1 MB in every worker as
dataclasses, 0.2 MB as records. Records pickle as any slotted class does (protocol 2 and
later), so they cross from the validating child to the supervisor, and from the supervisor to
the processes it forks, unchanged.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the same RSS reason)
if TYPE_CHECKING:
    from typing import Any, Self

__all__ = ["FrozenRecordError", "Record"]


class FrozenRecordError(AttributeError):
    """A field of a record was set a second time, or deleted."""


class Record:
    """Fields in ``__slots__``; ``_compared`` (default: all of them) are what equality, the
    hash and ``repr`` use: derived fields a subclass computes in ``__init__`` stay out."""

    __slots__ = ()
    _compared: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, name):
            raise FrozenRecordError(f"{type(self).__name__}.{name} is set once, at creation")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise FrozenRecordError(f"{type(self).__name__}.{name} cannot be deleted")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._compared or self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        names = self._compared or self.__slots__
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{type(self).__name__}({fields})"

    def as_dict(self) -> dict[str, Any]:
        """The compared fields by name (``dataclasses.asdict`` for a flat record)."""
        return {name: getattr(self, name) for name in self._compared or self.__slots__}

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (``dataclasses.replace``): the compared fields are the
        constructor's arguments."""
        return type(self)(**{**self.as_dict(), **changes})
