"""The exchange's life as a state machine (issue 7): named states, one transition table,
one way to end with an outcome — driven here with in-memory transports on both sides, so
each step is one call and each state can be looked at between calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop

from backhaul.config import load_text
from backhaul.edge.datapath import (
    EXCHANGE_OUTCOMES,
    EXCHANGE_STATES,
    EXCHANGE_TRANSITIONS,
    HttpConnection,
    UpstreamConnection,
)
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


@pytest.fixture
def pair() -> Iterator[Pair]:
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


def test_the_table_names_every_state_and_done_is_final() -> None:
    assert set(EXCHANGE_TRANSITIONS) == set(EXCHANGE_STATES)
    for targets in EXCHANGE_TRANSITIONS.values():
        assert set(targets) <= set(EXCHANGE_STATES)
    assert EXCHANGE_TRANSITIONS["done"] == ()
    # every state but the first is reachable, and every state can reach done
    reachable = {"queued"}
    frontier = ["queued"]
    while frontier:
        for nxt in EXCHANGE_TRANSITIONS[frontier.pop()]:
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(EXCHANGE_STATES)
    assert all("done" in t for s, t in EXCHANGE_TRANSITIONS.items() if s != "done")
    assert EXCHANGE_OUTCOMES[0] == ""


def test_a_proxied_exchange_waits_streams_and_completes(pair: Pair) -> None:
    pair.client.data_received(GET)
    ex = pair.client.tx
    assert (ex.state, ex.outcome) == ("waiting", "")
    up, _ = pair.upstream_asked()
    up.data_received(OK_HEAD)
    assert ex.state == "streaming"
    assert pair.down.text().startswith(b"HTTP/1.1 200 OK\r\n")
    up.data_received(b"hello")
    assert (ex.state, ex.outcome) == ("done", "completed")
    assert pair.client.tx is None and not pair.down.closed
    assert pair.down.text().endswith(b"\r\n\r\nhello")


def test_a_direct_answer_is_done_at_once(pair: Pair) -> None:
    pair.client.data_received(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert pair.client.tx is None  # already done and handed back
    assert pair.down.text().endswith(b"\r\n\r\nhi")


def test_a_pipelined_request_is_queued_until_the_first_is_answered(pair: Pair) -> None:
    pair.client.data_received(GET + b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    first, second = pair.client.tx, pair.client.pending[0]
    assert (first.state, second.state) == ("waiting", "queued")
    up, _ = pair.upstream_asked()
    up.data_received(OK_HEAD + b"hello")
    assert (first.outcome, second.outcome) == ("completed", "completed")
    sent = pair.down.text()
    assert sent.index(b"\r\n\r\nhello") < sent.index(b"\r\n\r\nhi")  # in request order


def test_a_client_gone_mid_response_ends_client_gone_and_drops_the_upstream(
    pair: Pair,
) -> None:
    pair.client.data_received(GET)
    ex = pair.client.tx
    up, up_transport = pair.upstream_asked()
    up.data_received(OK_HEAD + b"he")
    pair.client.connection_lost(None)
    assert (ex.state, ex.outcome) == ("done", "client_gone")
    assert up_transport.closed == "aborted"  # never reused mid-response


def test_a_broken_response_after_its_head_aborts_the_client_connection(pair: Pair) -> None:
    pair.client.data_received(GET)
    ex = pair.client.tx
    up, _ = pair.upstream_asked()
    up.data_received(OK_HEAD)
    up.connection_lost(None)  # the upstream closed with 5 body bytes still owed
    assert (ex.state, ex.outcome) == ("done", "aborted")
    assert pair.down.closed == "aborted"


def test_a_retryable_status_waits_in_backoff(pair: Pair) -> None:
    pair.client.data_received(GET)
    ex = pair.client.tx
    up, _ = pair.upstream_asked()
    up.data_received(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    assert ex.state == "backoff"
    assert pair.down.text() == b""  # nothing reached the client
    pair.client.connection_lost(None)
    assert (ex.state, ex.outcome) == ("done", "client_gone")


def test_an_answer_the_edge_makes_before_the_body_arrives_is_responded(pair: Pair) -> None:
    pair.client.data_received(b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
    # answered before the body was read: the connection closes afterwards
    assert pair.down.text().endswith(b"\r\n\r\nhi")
    assert b"Connection: close" in pair.down.text()
