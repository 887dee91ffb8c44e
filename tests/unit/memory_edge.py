"""The data plane driven with in-memory transports on both sides: a client connection and
one pooled upstream connection per endpoint, so each step is one call and the state can be
looked at between calls (tests of the exchange's states and of filter chains)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import uvloop

from backhaul.config import load_text
from backhaul.edge.datapath import HttpConnection, UpstreamConnection
from backhaul.edge.settings import freeze, thaw
from backhaul.edge.worker import Worker

CONFIG = """
access_log: {path: /dev/null}
listeners: [{name: main, address: "127.0.0.1:0"}]
routes:
  - {name: hello, match: {prefix: /hello}, respond: {body: hi}}
  - {name: up, match: {prefix: /}, proxy: {cluster: up}}
clusters:
  up:
    endpoints: ["127.0.0.1:9", "127.0.0.2:9"]
    retries: {max_retries: 1, retry_on: [503], backoff: {base: 10s, max: 10s}}
"""

GET = b"GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n"
OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"


class MemoryTransport(asyncio.Transport):
    """A transport that keeps what is written and records how it was closed."""

    def __init__(self, peer: tuple[str, int]) -> None:
        super().__init__()
        self.peer = peer
        self.out: list[bytes] = []
        self.closed = ""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.out.append(bytes(data))

    def writelines(self, parts: Any) -> None:
        self.out.extend(bytes(p) for p in parts)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return bool(self.closed)

    def close(self) -> None:
        self.closed = self.closed or "closed"

    def abort(self) -> None:
        self.closed = self.closed or "aborted"

    def text(self) -> bytes:
        return b"".join(self.out)


class Pair:
    """A client connection and the pooled upstream connections of each endpoint."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.upstreams: list[tuple[UpstreamConnection, MemoryTransport]] = []
        for endpoint in worker.clusters["up"].endpoints:
            up = UpstreamConnection(endpoint)
            transport = MemoryTransport((endpoint.host, endpoint.port))
            up.connection_made(transport)
            endpoint.idle.append(up)
            self.upstreams.append((up, transport))
        self.client = HttpConnection(worker.context, worker.listeners[0])
        self.down = MemoryTransport(("127.0.0.1", 40000))
        self.client.connection_made(self.down)

    def upstream_asked(self) -> tuple[UpstreamConnection, MemoryTransport]:
        """The upstream connection the current request was written to."""
        asked = [(up, t) for up, t in self.upstreams if t.out]
        assert len(asked) == 1, asked
        return asked[0]


@contextlib.contextmanager
def memory_pair() -> Iterator[Pair]:
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = Worker(thaw(freeze(load_text(CONFIG, "<states>"))), loop)
    loop.run_until_complete(worker.start())
    try:
        yield Pair(worker)
    finally:
        loop.run_until_complete(worker.aclose())
        asyncio.set_event_loop(None)
        loop.close()
