"""Responses the edge makes itself: ``application/problem+json`` (RFC 9457).

The body is ``{"type": "about:blank", "title": ..., "status": ..., "detail": ...}`` plus
``instance`` and ``request_id`` when known. ``type`` stays ``about:blank``: backhaul
publishes no problem-type documents, and RFC 9457 4.2.1 then wants ``title`` to be the
status phrase, which is the default. ``detail`` tells the operator what happened; it must
never carry internals or a traceback (the callers pass RemoteProtocolError.detail and the
like). Responses carry ``Cache-Control: no-store`` so no cache keeps an edge error.
"""

from __future__ import annotations

import json

__all__ = ["REASONS", "problem_response"]

REASONS: dict[int, bytes] = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    204: b"No Content",
    206: b"Partial Content",
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    304: b"Not Modified",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    406: b"Not Acceptable",
    408: b"Request Timeout",
    409: b"Conflict",
    410: b"Gone",
    411: b"Length Required",
    412: b"Precondition Failed",
    413: b"Content Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    416: b"Range Not Satisfiable",
    417: b"Expectation Failed",
    421: b"Misdirected Request",
    422: b"Unprocessable Content",
    426: b"Upgrade Required",
    428: b"Precondition Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    request_id: str | None = None,
    close: bool = True,
    server: bytes | None = b"backhaul",
    head_only: bool = False,
    date: bytes | None = None,
    instance: str | None = None,
) -> bytes:
    """A complete HTTP/1.1 problem+json response for ``status`` as one bytes object.

    ``date`` is an IMF-fixdate (the caller owns the clock); ``head_only`` leaves the body
    out (answer to HEAD) while Content-Length still gives its size; ``close`` adds
    ``Connection: close`` (the caller then closes the connection).
    """
    reason = REASONS.get(status, b"Unknown")
    problem: dict[str, object] = {
        "type": "about:blank",
        "title": title if title is not None else reason.decode("ascii"),
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        problem["instance"] = instance
    if request_id is not None:
        problem["request_id"] = request_id
    body = json.dumps(problem, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    lines = [
        b"HTTP/1.1 %d %s" % (status, reason),
        b"Content-Type: application/problem+json",
        b"Content-Length: %d" % len(body),
        b"Cache-Control: no-store",
    ]
    if date is not None:
        lines.append(b"Date: " + date)
    if server is not None:
        lines.append(b"Server: " + server)
    if request_id is not None and request_id.isprintable() and request_id.isascii():
        lines.append(b"X-Request-Id: " + request_id.encode("ascii"))
    if close:
        lines.append(b"Connection: close")
    lines.append(b"")
    lines.append(b"" if head_only else body)
    return b"\r\n".join(lines)
