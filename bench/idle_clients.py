"""Hold N idle keep-alive connections to a proxy, for its memory measurement.

    python -m bench.idle_clients HOST PORT COUNT PATH [BUDGET_SECONDS]

Opens COUNT connections one after another with plain blocking sockets, sends one GET on each
and reads its whole response (so every connection is a served keep-alive connection, not a
half-open one), prints ``held N`` and keeps them all open until stdin is closed. Stops early
(and says how many it holds) when the time budget is spent or a connection fails.
"""

from __future__ import annotations

import re
import resource
import socket
import sys
import time

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard one; return the new soft limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def read_response(sock: socket.socket) -> None:
    """Read one response with a Content-Length body; raise ConnectionError otherwise."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    match = _CONTENT_LENGTH.search(head)
    if not head.startswith(b"HTTP/1.1 200") or match is None:
        raise ConnectionError(f"unexpected response head {head[:80]!r}")
    remaining = int(match.group(1)) - len(body)
    while remaining > 0:
        chunk = sock.recv(min(remaining, 65536))
        if not chunk:
            raise ConnectionError("closed inside the body")
        remaining -= len(chunk)


def main(argv: list[str]) -> int:
    host, port, count, path = argv[0], int(argv[1]), int(argv[2]), argv[3]
    budget = float(argv[4]) if len(argv) > 4 else 60.0
    raise_nofile_limit()
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: bench\r\n\r\n".encode()
    deadline = time.monotonic() + budget
    held: list[socket.socket] = []
    problem = ""
    try:
        while len(held) < count and time.monotonic() < deadline:
            sock = socket.create_connection((host, port), timeout=10)
            sock.sendall(request)
            read_response(sock)
            held.append(sock)
    except OSError as exc:
        problem = f" (stopped: {exc})"
    print(f"held {len(held)}{problem}", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    for sock in held:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
