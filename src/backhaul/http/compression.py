"""Response compression: which content coding a client accepts, which responses are worth
compressing, and the encoder that compresses one body piece by piece.

- :func:`accepted_coding` reads ``Accept-Encoding`` as RFC 9110 12.5.3 says: q-values,
  ``q=0`` refusals, ``*`` for codings not named, ``identity`` always acceptable unless
  refused; ``x-gzip`` is ``gzip`` (RFC 9110 8.4.1.3).
- :class:`MediaTypes` matches a response's ``Content-Type`` against a route's list
  (``text/html``, ``text/*`` or ``*``), parameters and case ignored.
- :class:`GzipEncoder` is one body's compressor (stdlib zlib, gzip framing). Its memory is
  fixed when it is made: a window and hash sized to the body when its length is known and
  small (as nginx sizes ``gzip_window``/``gzip_hash``), at most zlib's 128 KiB + 128 KiB;
  each piece's output is at most about the piece's size, and nothing is flushed before the
  end, so a stream gains at most one window of delay (nginx's gzip does the same).

The filter that uses these (a route's ``compress:`` block) is
:class:`backhaul.http.filters.CompressFilter`. Policy code: no I/O.

Only gzip is offered: brotli and zstd need libraries that are not dependencies of backhaul
(Python 3.11's stdlib has zlib only).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Final

__all__ = [
    "CODINGS",
    "DEFAULT_LEVEL",
    "DEFAULT_MIN_LENGTH",
    "DEFAULT_TYPES",
    "GzipEncoder",
    "MediaTypes",
    "accepted_coding",
    "coding_weights",
]

CODINGS: Final = ("gzip",)
"""The content codings the edge can apply, in the order it prefers them."""

DEFAULT_TYPES: Final = (
    "text/html",
    "text/plain",
    "text/css",
    "text/javascript",
    "text/xml",
    "text/markdown",
    "text/csv",
    "application/javascript",
    "application/json",
    "application/problem+json",
    "application/xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/manifest+json",
    "image/svg+xml",
)
"""Media types compressed when a route lists none: the text, JSON, JavaScript and SVG set
that nginx users put in ``gzip_types`` (already-compressed formats such as images, video
and archives gain nothing)."""

DEFAULT_MIN_LENGTH: Final = 20
"""Bodies whose Content-Length is smaller are sent as they are (nginx's
``gzip_min_length`` default); a body of unknown length is compressed."""

DEFAULT_LEVEL: Final = 1
"""zlib's level 1 to 9; 1 is nginx's ``gzip_comp_level`` default (the least CPU)."""

_NOT_LISTED: Final = -1.0


def coding_weights(values: Iterable[bytes]) -> dict[str, float]:
    """The codings of ``Accept-Encoding`` field values, lower-cased, each with its q-value
    (RFC 9110 12.4.2; 1 when absent). The first mention of a coding counts; an element
    whose weight is not a valid qvalue is ignored (a client error, not ours to guess)."""
    weights: dict[str, float] = {}
    for value in values:
        for element in value.split(b","):
            coding, _, params = element.partition(b";")
            name = coding.strip().lower().decode("latin-1")
            if not name:
                continue
            q = _weight(params)
            if q is None:
                continue
            if name == "x-gzip":
                name = "gzip"
            weights.setdefault(name, q)
    return weights


def _weight(params: bytes) -> float | None:
    """The q of ``;q=0.5`` parameters (1.0 without one), None when it is not a qvalue."""
    q = 1.0
    for param in params.split(b";"):
        key, eq, text = param.partition(b"=")
        if not eq:
            if key.strip():
                return None
            continue
        if key.strip().lower() != b"q":
            continue  # not a weight: codings have no other parameters, ignore it
        text = text.strip()
        # qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
        whole, dot, frac = text.partition(b".")
        if (
            whole not in (b"0", b"1")
            or len(frac) > 3
            or (dot and frac and not frac.isdigit())
            or (whole == b"1" and frac.strip(b"0"))
        ):
            return None
        q = float(text)
    return q


def accepted_coding(values: Sequence[bytes], codings: Sequence[str] = CODINGS) -> str | None:
    """The coding of ``codings`` to apply for a request whose ``Accept-Encoding`` field
    values are ``values``, or None to send the body as it is.

    No ``Accept-Encoding`` at all: None (RFC 9110 allows any coding then, but clients that
    decode send the field; nginx and Caddy do not compress either). A coding is acceptable
    when its q (or that of ``*`` when it is not named) is above 0; the highest q wins, the
    order of ``codings`` breaks ties. It is used unless the client prefers ``identity``
    (``identity;q=1, gzip;q=0.5``): identity is acceptable with the lowest preference unless
    named or refused (``identity;q=0``, or ``*;q=0`` without ``identity``), and a tie goes to
    the coding.
    """
    if not values:
        return None
    weights = coding_weights(values)
    star = weights.get("*", _NOT_LISTED)
    best: str | None = None
    best_q = 0.0
    for coding in codings:
        q = weights.get(coding, star)
        if q > best_q:
            best, best_q = coding, q
    if best is None:
        return None
    identity = weights.get("identity", star)
    return best if best_q >= identity else None


class MediaTypes:
    """A route's compressible media types: exact (``text/html``), a whole top-level type
    (``text/*``) or everything (``*``); matched without parameters, in any case."""

    __slots__ = ("any", "exact", "tops")

    def __init__(self, patterns: Iterable[str]) -> None:
        exact: set[bytes] = set()
        tops: set[bytes] = set()
        self.any = False
        for pattern in patterns:
            text = pattern.strip().lower().encode("latin-1")
            if text in (b"*", b"*/*"):
                self.any = True
            elif text.endswith(b"/*"):
                tops.add(text[:-2])
            else:
                exact.add(text)
        self.exact = frozenset(exact)
        self.tops = frozenset(tops)

    def match(self, content_type: bytes | None) -> bool:
        """Whether a response with this ``Content-Type`` value is compressible (one without
        a Content-Type is not: its content is unknown)."""
        if content_type is None:
            return False
        media = content_type.partition(b";")[0].strip().lower()
        if not media:
            return False
        if self.any or media in self.exact:
            return True
        return media.partition(b"/")[0] in self.tops


class GzipEncoder:
    """One response body compressed with gzip (RFC 1952 framing around deflate), piece by
    piece: :meth:`piece` returns the compressed bytes ready so far (often empty),
    :meth:`finish` the rest and the gzip trailer."""

    __slots__ = ("_z",)

    def __init__(self, level: int = DEFAULT_LEVEL, length: int | None = None) -> None:
        window, mem_level = 15, 8
        if length is not None and length < 1 << 15:
            # A small body needs no 32 KiB window nor a 128 KiB hash (nginx sizes its own the
            # same way): 1 KiB body -> 1 KiB window + 2 KiB hash instead of 256 KiB.
            window = max(9, length.bit_length())
            mem_level = max(1, min(8, window - 8))
        self._z = zlib.compressobj(level, zlib.DEFLATED, 16 + window, mem_level)

    def piece(self, data: bytes) -> bytes:
        return self._z.compress(data)

    def finish(self) -> bytes:
        return self._z.flush()
