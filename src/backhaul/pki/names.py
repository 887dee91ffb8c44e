"""Choosing a certificate by the name a client asked for (TLS SNI, RFC 6066 3).

:class:`NameIndex` is built once per listener from each certificate's names; ``select`` maps
a server name to the certificate to present: an exact name first, then a ``*.`` wildcard that
covers exactly one left-most label (RFC 6125 6.4.3), each in config order; no match gives
None (the listener then uses its default certificate or refuses, as configured).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["NameIndex"]


class NameIndex:
    """Server name → index of the certificate that serves it."""

    __slots__ = ("_exact", "_wildcard")

    def __init__(self, names_per_certificate: Iterable[Iterable[str]]) -> None:
        self._exact: dict[str, int] = {}
        self._wildcard: dict[str, int] = {}  # "example.com" for "*.example.com"
        for i, names in enumerate(names_per_certificate):
            for raw in names:
                name = raw.lower().rstrip(".")
                if name.startswith("*."):
                    self._wildcard.setdefault(name[2:], i)
                else:
                    self._exact.setdefault(name, i)

    def select(self, server_name: str | None) -> int | None:
        """The certificate for ``server_name``, or None when no certificate names it."""
        if not server_name:
            return None
        name = server_name.lower().rstrip(".")
        found = self._exact.get(name)
        if found is not None:
            return found
        _, dot, parent = name.partition(".")
        if dot and parent:
            return self._wildcard.get(parent)
        return None

    def names(self) -> list[str]:
        """Every name the index answers for (wildcards as ``*.parent``)."""
        return [*self._exact, *(f"*.{p}" for p in self._wildcard)]
