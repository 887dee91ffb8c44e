"""The exchange's life as a state machine (issue 7): named states, one transition table,
one way to end with an outcome — driven with in-memory transports on both sides."""

from __future__ import annotations

from backhaul.edge.datapath import EXCHANGE_OUTCOMES, EXCHANGE_STATES, EXCHANGE_TRANSITIONS
from tests.unit.memory_edge import GET, OK_HEAD, Pair


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
