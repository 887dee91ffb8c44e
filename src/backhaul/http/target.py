"""The request target (RFC 9112 3.2) and the one normalised path the edge routes and forwards.

Forms: origin-form (``/path?query``) for every method but CONNECT; absolute-form
(``http://host/path``, schemes http and https only) for every method but CONNECT, its
authority then replacing Host (RFC 9112 3.2.2); authority-form (``host:port``) for CONNECT
only (RFC 9112 3.2.3); asterisk-form (``*``) for OPTIONS only (RFC 9112 3.2.4).

Refused with 400: a fragment (``#``, RFC 9112 3.2 never sends one), bytes outside printable
ASCII (CTLs, space, DEL, non-ASCII: RFC 3986 2), bad percent-encoding in the path (``%`` not
followed by two hex digits), userinfo in an absolute-form authority.

Path normalisation, decided once (RFC 3986 6.2.2) so the router and the upstream see the same
path:

1. percent-encoding: ``%XX`` of an unreserved character (``A-Z a-z 0-9 - . _ ~``) is decoded,
   every other ``%XX`` is kept with upper-case hex (6.2.2.1, 6.2.2.2). ``%2F`` stays encoded:
   an encoded slash is data inside one segment, not a separator; decoding it would let
   ``/public%2F..%2Fadmin`` reach a route the router never saw. Printable characters that
   RFC 3986 does not allow in a path (``"<>\\^`{|}``) are percent-encoded, so an upstream that
   treats ``\\`` as ``/`` cannot see a different path than the router.
2. dot segments are removed (RFC 3986 5.2.4) after step 1, so ``%2E%2E`` counts as ``..``;
   a ``..`` that would climb above the root stays at ``/``.
3. repeated slashes are merged (``//a///b`` -> ``/a/b``), like nginx's ``merge_slashes``.

The query is not normalised: it is opaque to the edge and forwarded byte for byte (only the
checks above that apply to the whole target apply to it).

Special forms have special paths: asterisk-form gives path ``*``, authority-form gives path
``""``; every other target gives a path that starts with ``/``.
"""

from __future__ import annotations

from typing import NamedTuple

from backhaul.errors import RemoteProtocolError
from backhaul.http.authority import show, split_authority

__all__ = ["PLAIN_TARGET_BYTES", "Target", "parse_target"]

_ALNUM = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_UNRESERVED = _ALNUM + b"-._~"
# Bytes that need no work in an origin-form target: unreserved, sub-delims, ":@/?=" and
# friends. "%" (decoding), "#" (refused), and the characters encoded in step 1 are absent.
PLAIN_TARGET_BYTES = _UNRESERVED + b"!$&'()*+,;=:@/?"
"""An origin-form target made only of these bytes, with no ``//`` and no ``/.`` and a method
other than CONNECT, is already normal: its path is the part before the first ``?`` and its
query the rest, unchanged (the data plane takes that shortcut in C; a property test holds it
equal to :func:`parse_target`)."""
# Printable ASCII: the whole target must be made of these (space and "#" handled apart).
_PRINTABLE = bytes(range(0x21, 0x7F))
_HEX = frozenset(b"0123456789abcdefABCDEF")
_UNRESERVED_SET = frozenset(_UNRESERVED)
# Printable characters RFC 3986 does not allow raw in a path; encoded during normalisation.
_ENCODE_TABLE = {c: f"%{c:02X}" for c in list(b'"<>\\^`{|}')}
_RFC_TARGET = "RFC 9112 3.2"


class Target(NamedTuple):
    """A parsed request target: normalised ``path``, raw ``query`` (no ``?``), and the
    ``authority`` of an absolute-form or authority-form target (None for origin-form)."""

    path: str
    query: str
    authority: bytes | None


def _reject(detail: str, rfc: str = _RFC_TARGET) -> RemoteProtocolError:
    return RemoteProtocolError(detail, 400, rfc=rfc)


def _normalise_path(raw: bytes) -> str:
    """RFC 3986 6.2.2 normalisation of an origin-form path that starts with ``/``."""
    text = raw.decode("ascii")
    segments = text.split("/")
    out: list[str] = []
    last = ""
    for segment in segments[1:]:
        if "%" in segment:
            segment = _normalise_segment(segment, raw)
        else:
            segment = segment.translate(_ENCODE_TABLE)
        last = segment
        if not segment or segment == ".":
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    path = "/" + "/".join(out)
    if out and (not last or last == "." or last == ".."):
        path += "/"
    return path


def _normalise_segment(segment: str, raw: bytes) -> str:
    """Percent-encoding normalisation of one segment; raises on a bad ``%``."""
    parts = segment.split("%")
    pieces = [parts[0].translate(_ENCODE_TABLE)]
    for part in parts[1:]:
        if len(part) < 2 or ord(part[0]) not in _HEX or ord(part[1]) not in _HEX:
            raise _reject(
                f"request target {show(raw)} has a '%' that is not followed by two hex "
                "digits; encode a literal '%' as %25",
                "RFC 3986 2.1",
            )
        code = int(part[:2], 16)
        if code in _UNRESERVED_SET:
            pieces.append(chr(code))
        else:
            pieces.append("%" + part[:2].upper())
        pieces.append(part[2:].translate(_ENCODE_TABLE))
    return "".join(pieces)


def _check_bytes(target: bytes) -> None:
    """Refuse fragments and bytes outside printable ASCII anywhere in the target."""
    if b"#" in target:
        raise _reject(
            f"request target {show(target)} has a fragment ('#'); clients must not send one",
            "RFC 9112 3.2",
        )
    if target.translate(None, _PRINTABLE):
        raise _reject(
            f"request target {show(target)} holds a space, a control character or a "
            "non-ASCII byte; percent-encode them",
            "RFC 3986 2",
        )


def _origin(target: bytes, authority: bytes | None) -> Target:
    path_b, _, query_b = target.partition(b"?")
    return Target(_normalise_path(path_b), query_b.decode("ascii"), authority)


def parse_target(method: bytes, target: bytes) -> Target:
    """Parse and normalise a request target (see the module docstring) or raise
    RemoteProtocolError (status_hint 400)."""
    if not target:
        raise _reject("request target is empty")
    _check_bytes(target)
    if method == b"CONNECT":
        return _authority_form(target)
    first = target[0]
    if first == 0x2F:  # "/"
        return _origin(target, None)
    if target == b"*":
        if method != b"OPTIONS":
            raise _reject(
                f"{show(method)} request has the asterisk-form target '*'; only OPTIONS may use it",
                "RFC 9112 3.2.4",
            )
        return Target("*", "", None)
    scheme, sep, rest = target.partition(b"://")
    if sep:
        lowered = scheme.lower()
        if lowered != b"http" and lowered != b"https":
            raise _reject(
                f"request target {show(target)} has scheme {show(scheme, 16)}; the edge "
                "serves http and https only",
                "RFC 9112 3.2.2",
            )
        cut = len(rest)
        for stop in (b"/", b"?"):
            index = rest.find(stop)
            if 0 <= index < cut:
                cut = index
        authority, remainder = rest[:cut], rest[cut:]
        if not authority:
            raise _reject(f"absolute-form target {show(target)} has no host", "RFC 9112 3.2.2")
        split_authority(authority, 400, "absolute-form target authority")
        if remainder[:1] != b"/":
            remainder = b"/" + remainder
        return _origin(remainder, authority)
    raise _reject(
        f"request target {show(target)} is neither '/path' nor an absolute http(s) URL"
        + ("; authority-form is for CONNECT only" if b"/" not in target else ""),
        "RFC 9112 3.2",
    )


def _authority_form(target: bytes) -> Target:
    """CONNECT's ``host:port`` target (RFC 9112 3.2.3): the port is required."""
    if b"/" in target or b"?" in target:
        raise _reject(
            f"CONNECT target {show(target)} is not 'host:port'; CONNECT takes authority-form",
            "RFC 9112 3.2.3",
        )
    host, port = split_authority(target, 400, "CONNECT target")
    if port is None or not host:
        raise _reject(
            f"CONNECT target {show(target)} is not 'host:port'; CONNECT takes authority-form "
            "with a port",
            "RFC 9112 3.2.3",
        )
    return Target("", "", target)
