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
(:class:`HeaderEditFilter`, a route's ``headers:`` block); the guard, the cache and
compression are meant to become filters of the same shape.

Policy code: no I/O; heads are bytes in, bytes out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

__all__ = [
    "CONTINUE",
    "RESPOND",
    "STOP",
    "Answer",
    "Filter",
    "FilterChain",
    "HeadEdit",
    "HeaderEditFilter",
    "RequestInfo",
    "ResponseInfo",
    "build_chain",
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
    upstream, and (for :data:`RESPOND`) the answer."""

    __slots__ = ("answer", "client_ip", "headers", "method", "path", "query", "upstream_edit")

    def __init__(
        self,
        method: bytes,
        path: str,
        query: str,
        headers: list[tuple[bytes, bytes]],
        client_ip: str,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.client_ip = client_ip
        self.upstream_edit = HeadEdit()
        self.answer: Answer | None = None


class ResponseInfo:
    """What ``on_response`` sees: the status, the request it answers, and the edits."""

    __slots__ = ("edit", "request", "status")

    def __init__(self, status: int, request: RequestInfo | None) -> None:
        self.status = status
        self.request = request
        self.edit = HeadEdit()


class Filter:
    """One step of a chain. Subclasses override what they need."""

    name: str = "filter"

    def on_request(self, request: RequestInfo) -> int:
        return CONTINUE

    def on_response(self, response: ResponseInfo) -> int:
        return CONTINUE


class FilterChain:
    """A route's filters, in order (see the module docstring)."""

    __slots__ = ("filters",)

    def __init__(self, filters: Iterable[Filter]) -> None:
        self.filters = tuple(filters)

    def request(
        self,
        method: bytes,
        path: str,
        query: str,
        headers: list[tuple[bytes, bytes]],
        client_ip: str,
    ) -> RequestInfo:
        """Run ``on_request``; the result's ``answer`` is set when a filter responded."""
        info = RequestInfo(method, path, query, headers, client_ip)
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
        """Run ``on_response`` and return ``head`` with the edits made."""
        info = ResponseInfo(status, request)
        for step in self.filters:
            if step.on_response(info) == STOP:
                break
        return info.edit.apply(head)


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
    return FilterChain(filters) if filters else None


def _pairs(mapping: Any) -> list[tuple[bytes, bytes]]:
    return [(str(k).encode("latin-1"), str(v).encode("latin-1")) for k, v in mapping.items()]


def _names(names: Any) -> list[bytes]:
    return [str(n).encode("latin-1") for n in names]
