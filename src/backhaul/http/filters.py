"""A route's filter chain: steps that see a request's head and its response's head, each
answering with a verdict.

The chain is built once per route when the config is loaded (:func:`build_chain`); a route
without filters has none (``None``), and the data plane's only cost for it is that test.
At the request head every filter's ``on_request`` runs in order and returns:

- :data:`CONTINUE`: the next filter runs, then the route's action;
- :data:`RESPOND`: answer now with the :class:`Answer` the filter put on the request (a
  guard refusing, a cache hit), without running the action or the filters after it;
- :data:`STOP`: the filters after it do not run; the action does.

At the response head (the upstream's, or the answer a ``respond``/``redirect`` route makes)
every filter's ``on_response`` may edit the head through :class:`HeadEdit`, and returns
:data:`CONTINUE` or :data:`STOP` the same way. Header edits are the first filter
(:class:`HeaderEditFilter`, a route's ``headers:`` block), compression the second
(:class:`CompressFilter`, ``compress:``); the guard and the cache are meant to become filters
of the same shape.

Body hooks: a filter whose class says ``transforms_body`` may, in ``on_response``, hand the
response a :class:`BodyStep` (:meth:`ResponseInfo.transform`): an object made for this one
response that gets each piece of the body and returns the bytes to send instead (possibly
none), then, at the end, returns the tail. The chain puts the steps of one response in a
:class:`BodyRelay` (on the request's :attr:`RequestInfo.body`), which the data plane feeds
through its usual output path, so flow control is the same as for any body. Whether a
route's chain has such a filter is known at load (:attr:`FilterChain.body_filters`); a
route without one never has a relay, and the data plane's cost is one ``is None`` test per
body piece.

A transformed body changes the framing (:func:`transformed_head`): Content-Length is
dropped and the body goes chunked to an HTTP/1.1 client, or delimited by closing the
connection for HTTP/1.0 (RFC 9112 6); a strong ETag becomes weak (RFC 9110 8.8.1: the bytes
differ) and Accept-Ranges is dropped (ranges of the transformed bytes are not served). Some
responses are never transformed (:func:`transform_refusal`): those without a body (HEAD,
1xx, 204, 304), a part of a representation (206), one already content-coded, and one whose
Cache-Control says ``no-transform`` (RFC 9110 7.7, RFC 9111 5.2.2.6).

Policy code: no I/O; heads are bytes in, bytes out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol

from backhaul.http.compression import (
    CODINGS,
    DEFAULT_LEVEL,
    DEFAULT_MIN_LENGTH,
    DEFAULT_TYPES,
    GzipEncoder,
    MediaTypes,
    accepted_coding,
)

__all__ = [
    "CONTINUE",
    "RESPOND",
    "STOP",
    "Answer",
    "BodyRelay",
    "BodyStep",
    "CompressFilter",
    "Filter",
    "FilterChain",
    "HeadEdit",
    "HeaderEditFilter",
    "RequestInfo",
    "ResponseInfo",
    "build_chain",
    "transform_refusal",
    "transformed_head",
]

CONTINUE: Final = 0
RESPOND: Final = 1
STOP: Final = 2

NOT_EDITABLE: Final = frozenset(
    {
        b"connection",
        b"content-length",
        b"host",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
"""Names a filter may not set or remove: framing and hop-by-hop headers are the edge's own
(RFC 9112 6, RFC 9110 7.6.1), and Host is the route's ``host_rewrite``."""


class Answer:
    """What a filter answers with when it returns :data:`RESPOND`."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: bytes | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = list(headers)


class HeadEdit:
    """Edits to one encoded head: header names to remove (every line of that name), then
    lines to add. Applied in one pass by :meth:`apply`."""

    __slots__ = ("add", "remove")

    def __init__(self) -> None:
        self.remove: set[bytes] = set()
        self.add: list[tuple[bytes, bytes]] = []

    def __bool__(self) -> bool:
        return bool(self.remove or self.add)

    def set(self, name: bytes, value: bytes) -> None:
        """Replace every ``name`` line with one ``name: value`` line."""
        self.remove.add(name.lower())
        self.add.append((name, value))

    def update(self, remove: Iterable[bytes], set_lines: Iterable[tuple[bytes, bytes]]) -> None:
        """Remove every line of the ``remove`` names, then ``set`` each pair."""
        self.remove.update(remove)
        for name, value in set_lines:
            self.set(name, value)

    def apply(self, head: bytes) -> bytes:
        """``head`` (a status or request line, header lines, CRLF CRLF) edited."""
        if not self:
            return head
        lines = head[:-4].split(b"\r\n")
        kept = [lines[0]]
        remove = self.remove
        for line in lines[1:]:
            name = line.partition(b":")[0].lower()
            if name not in remove:
                kept.append(line)
        kept.extend(name + b": " + value for name, value in self.add)
        return b"\r\n".join(kept) + b"\r\n\r\n"


class RequestInfo:
    """What ``on_request`` sees: the request's head, the edits to make to the head sent
    upstream, and (for :data:`RESPOND`) the answer. It lives as long as the exchange: once
    the response head went through the chain, ``body`` holds the response body's
    transformation (None: the body is relayed as it is)."""

    __slots__ = (
        "answer",
        "body",
        "client_ip",
        "headers",
        "method",
        "path",
        "query",
        "upstream_edit",
        "version",
    )

    def __init__(
        self,
        method: bytes,
        path: str,
        query: str,
        headers: list[tuple[bytes, bytes]],
        client_ip: str,
        version: bytes = b"1.1",
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.client_ip = client_ip
        self.version = version  # the client's HTTP version (b"1.1", b"1.0")
        self.upstream_edit = HeadEdit()
        self.answer: Answer | None = None
        self.body: BodyRelay | None = None

    def values(self, name: bytes) -> list[bytes]:
        """The values of every request header line named ``name`` (lower case)."""
        return [v for n, v in self.headers if n.lower() == name]


class BodyStep(Protocol):
    """One response body's transformation, made by a filter for that response."""

    def piece(self, data: bytes) -> bytes:
        """The bytes to send for the next piece of the body (possibly empty)."""

    def finish(self) -> bytes:
        """The bytes to send after the last piece (possibly empty)."""


class BodyRelay:
    """The body steps of one response, in chain order, and the framing they need:
    ``chunked`` (HTTP/1.1 client) or else delimited by closing the connection."""

    __slots__ = ("chunked", "steps")

    def __init__(self, steps: Sequence[BodyStep], chunked: bool) -> None:
        self.steps = tuple(steps)
        self.chunked = chunked

    def piece(self, data: bytes) -> bytes:
        """What to send for one piece of the body (each step's output feeds the next)."""
        for step in self.steps:
            if not data:
                break
            data = step.piece(data)
        return data

    def finish(self) -> bytes:
        """What to send after the last piece: each step's tail goes through the steps
        after it."""
        tail = b""
        for step in self.steps:
            tail = (step.piece(tail) if tail else b"") + step.finish()
        return tail


class ResponseInfo:
    """What ``on_response`` sees: the status, the request it answers, the head as the edge
    would send it (read with :meth:`values`), and the edits."""

    __slots__ = ("_lower", "edit", "head", "request", "status", "steps")

    def __init__(self, status: int, request: RequestInfo | None, head: bytes = b"") -> None:
        self.status = status
        self.request = request
        self.head = head
        self.edit = HeadEdit()
        self.steps: list[BodyStep] = []
        self._lower: bytes | None = None

    def values(self, name: bytes) -> list[bytes]:
        """The values of every line of the head named ``name`` (lower case), as the head
        came to the chain (before its edits)."""
        lower = self._lower
        if lower is None:
            lower = self._lower = self.head.lower()  # same offsets as the head
        key = b"\r\n" + name + b":"  # at a line start: the first line is the status line
        found = []
        at = lower.find(key)
        while at >= 0:
            start = at + len(key)
            end = lower.find(b"\r\n", start)  # the head ends with CRLF CRLF
            found.append(self.head[start:end].strip())
            at = lower.find(key, end)
        return found

    def content_length(self) -> int | None:
        """The body's length when the head says it (None: chunked or until close)."""
        found = self.values(b"content-length")
        return int(found[0]) if found and found[0].isdigit() else None

    def transform_refusal(self) -> str | None:
        """Why this response's body must not be transformed, or None when it may be."""
        if self.request is None:
            return "the request is not known (a filter answer made without one)"
        return transform_refusal(self.request.method, self.status, self.values)

    def transform(self, step: BodyStep) -> None:
        """Send the body through ``step`` (made for this response). Only for filters whose
        class sets ``transforms_body``, and only when :meth:`transform_refusal` is None."""
        reason = self.transform_refusal()
        if reason is not None:
            raise ValueError(f"this response's body must not be transformed: {reason}")
        self.steps.append(step)


def transform_refusal(method: bytes, status: int, values: Any) -> str | None:
    """Why the body of a response to ``method`` with ``status`` and header ``values``
    (a function of a lower-case name) must not be transformed, or None when it may be."""
    if method == b"HEAD":
        return "a response to HEAD has no body"
    if status < 200 or status == 204 or status == 304:
        return f"a {status} response has no body"
    if status == 206:
        return "a 206 response is a range of the representation (RFC 9110 15.3.7)"
    if values(b"content-encoding"):
        return "the body already has a Content-Encoding"
    for value in values(b"cache-control"):
        for directive in value.split(b","):
            if directive.partition(b"=")[0].strip().lower() == b"no-transform":
                return "Cache-Control says no-transform (RFC 9110 7.7)"
    return None


_REFRAMED: Final = frozenset(
    {b"content-length", b"transfer-encoding", b"accept-ranges", b"etag", b"connection"}
)


def transformed_head(head: bytes, chunked: bool, length: int | None = None) -> bytes:
    """``head`` (as the edge would send it) framed for a transformed body: ``length`` when
    the whole new body is known, else chunked (``chunked``) or delimited by closing the
    connection; ETag weakened, Accept-Ranges dropped (see the module docstring)."""
    lines = head[:-4].split(b"\r\n")
    kept = [lines[0]]
    for line in lines[1:]:
        name = line.partition(b":")[0].strip().lower()
        if name not in _REFRAMED:
            kept.append(line)
        elif name == b"etag":
            value = line.partition(b":")[2].strip()
            kept.append(b"ETag: " + (value if value.startswith(b"W/") else b"W/" + value))
        elif name == b"connection" and (length is not None or chunked):
            kept.append(line)
    if length is not None:
        kept.append(b"Content-Length: %d" % length)
    elif chunked:
        kept.append(b"Transfer-Encoding: chunked")
    else:
        kept.append(b"Connection: close")
    return b"\r\n".join(kept) + b"\r\n\r\n"


class Filter:
    """One step of a chain. Subclasses override what they need; one that may transform
    response bodies sets ``transforms_body`` (read once, when the chain is built)."""

    name: str = "filter"
    transforms_body: bool = False

    def on_request(self, request: RequestInfo) -> int:
        return CONTINUE

    def on_response(self, response: ResponseInfo) -> int:
        return CONTINUE


class FilterChain:
    """A route's filters, in order (see the module docstring). ``body_filters``: whether
    one of them may transform response bodies."""

    __slots__ = ("body_filters", "filters")

    def __init__(self, filters: Iterable[Filter]) -> None:
        self.filters = tuple(filters)
        self.body_filters = any(f.transforms_body for f in self.filters)

    def request(
        self,
        method: bytes,
        path: str,
        query: str,
        headers: list[tuple[bytes, bytes]],
        client_ip: str,
        version: bytes = b"1.1",
    ) -> RequestInfo:
        """Run ``on_request``; the result's ``answer`` is set when a filter responded."""
        info = RequestInfo(method, path, query, headers, client_ip, version)
        for step in self.filters:
            verdict = step.on_request(info)
            if verdict == RESPOND:
                if info.answer is None:
                    raise ValueError(f"filter {step.name!r} responded without an Answer")
                break
            if verdict == STOP:
                break
        return info

    def response_head(self, status: int, head: bytes, request: RequestInfo | None) -> bytes:
        """Run ``on_response`` and return ``head`` with the edits made. When a filter
        transforms the body, ``request.body`` is set and the head is framed for it."""
        info = self._on_response(status, head, request)
        head = info.edit.apply(head)
        if info.steps and request is not None:
            chunked = request.version == b"1.1"
            request.body = BodyRelay(info.steps, chunked)
            head = transformed_head(head, chunked)
        return head

    def whole_response(
        self, status: int, head: bytes, body: bytes, request: RequestInfo | None
    ) -> tuple[bytes, bytes]:
        """:meth:`response_head` for an answer whose whole body is at hand (the route's
        own): a transformed body is made at once and framed by its length."""
        info = self._on_response(status, head, request)
        head = info.edit.apply(head)
        if info.steps:
            relay = BodyRelay(info.steps, False)
            body = relay.piece(body) + relay.finish()
            head = transformed_head(head, False, len(body))
        return head, body

    def _on_response(self, status: int, head: bytes, request: RequestInfo | None) -> ResponseInfo:
        info = ResponseInfo(status, request, head)
        steps = info.steps
        for step in self.filters:
            before = len(steps)
            verdict = step.on_response(info)
            if len(steps) != before and not step.transforms_body:
                raise ValueError(f"filter {step.name!r} transformed a body without transforms_body")
            if verdict == STOP:
                break
        return info


class HeaderEditFilter(Filter):
    """A route's ``headers:`` block: set and remove headers on the request sent upstream
    and on the response sent to the client."""

    name = "headers"

    def __init__(
        self,
        request_set: Sequence[tuple[bytes, bytes]] = (),
        request_remove: Iterable[bytes] = (),
        response_set: Sequence[tuple[bytes, bytes]] = (),
        response_remove: Iterable[bytes] = (),
    ) -> None:
        self.request_set = tuple(request_set)
        self.request_remove = frozenset(n.lower() for n in request_remove)
        self.response_set = tuple(response_set)
        self.response_remove = frozenset(n.lower() for n in response_remove)
        for name, _ in (*self.request_set, *self.response_set):
            _editable(name)
        for name in (*self.request_remove, *self.response_remove):
            _editable(name)

    def on_request(self, request: RequestInfo) -> int:
        request.upstream_edit.update(self.request_remove, self.request_set)
        return CONTINUE

    def on_response(self, response: ResponseInfo) -> int:
        response.edit.update(self.response_remove, self.response_set)
        return CONTINUE


class CompressFilter(Filter):
    """A route's ``compress:`` block: a response whose Content-Type is one of ``types`` and
    whose Content-Length (if it has one) is at least ``min_length`` is compressed with the
    coding the client accepts best (:func:`~backhaul.http.compression.accepted_coding`),
    unless it must not be transformed (:func:`transform_refusal`). Such a response gets
    ``Vary: Accept-Encoding`` whether the client accepted a coding or not (caches must key
    on it), as nginx's ``gzip_vary`` does."""

    name = "compress"
    transforms_body = True

    def __init__(
        self,
        types: Iterable[str] = DEFAULT_TYPES,
        min_length: int = DEFAULT_MIN_LENGTH,
        level: int = DEFAULT_LEVEL,
        codings: Sequence[str] = CODINGS,
    ) -> None:
        unknown = [c for c in codings if c not in CODINGS]
        if unknown:
            raise ValueError(f"unknown content codings {unknown}: expected {list(CODINGS)}")
        self.types = MediaTypes(types)
        self.min_length = min_length
        self.level = level
        self.codings = tuple(codings)

    def on_response(self, response: ResponseInfo) -> int:
        request = response.request
        if request is None:
            return CONTINUE
        content_type = response.values(b"content-type")  # first: what most often says no
        if not self.types.match(content_type[0] if content_type else None):
            return CONTINUE
        if response.transform_refusal() is not None:
            return CONTINUE
        length = response.content_length()
        if length is not None and length < self.min_length:
            return CONTINUE
        _vary_on_accept_encoding(response)
        coding = accepted_coding(request.values(b"accept-encoding"), self.codings)
        if coding is None:
            return CONTINUE
        response.edit.set(b"Content-Encoding", coding.encode())
        response.transform(GzipEncoder(self.level, length))
        return CONTINUE


def _vary_on_accept_encoding(response: ResponseInfo) -> None:
    vary = response.values(b"vary")
    names = {n.strip().lower() for v in vary for n in v.split(b",")}
    if b"*" in names or b"accept-encoding" in names:
        return
    response.edit.set(b"Vary", b", ".join([*vary, b"Accept-Encoding"]))


def _editable(name: bytes) -> None:
    if name.lower() in NOT_EDITABLE:
        raise ValueError(
            f"header {name.decode('latin-1')!r} is the edge's own (framing, hop-by-hop or "
            "Host): filters cannot set or remove it"
        )


def build_chain(route: Any) -> FilterChain | None:
    """The chain of a validated route config (``None`` when it has no filters)."""
    filters: list[Filter] = []
    headers = getattr(route, "headers", None)
    if headers is not None:
        filters.append(
            HeaderEditFilter(
                request_set=_pairs(headers.request.set) if headers.request else (),
                request_remove=_names(headers.request.remove) if headers.request else (),
                response_set=_pairs(headers.response.set) if headers.response else (),
                response_remove=_names(headers.response.remove) if headers.response else (),
            )
        )
    compress = getattr(route, "compress", None)
    if compress is not None:
        filters.append(
            CompressFilter(
                types=compress.types,
                min_length=compress.min_length,
                level=compress.level,
                codings=compress.encodings,
            )
        )
    return FilterChain(filters) if filters else None


def _pairs(mapping: Any) -> list[tuple[bytes, bytes]]:
    return [(str(k).encode("latin-1"), str(v).encode("latin-1")) for k, v in mapping.items()]


def _names(names: Any) -> list[bytes]:
    return [str(n).encode("latin-1") for n in names]
