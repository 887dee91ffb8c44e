"""Asking an upstream (backhaul.services.dns.upstream) against loopback servers written
here: a forged answer (wrong ID, wrong question) is ignored and the real one taken; a
silent upstream times out; a truncated answer is asked again over TCP."""

from __future__ import annotations

import asyncio
import socket
import threading

import dns.flags
import dns.message
import dns.rrset
import pytest

from backhaul.services.dns.upstream import ask_upstream


def _serve_once(sock: socket.socket, replies: list[bytes] | None, truncate: bool) -> None:
    sock.settimeout(5)
    data, addr = sock.recvfrom(4096)
    query = dns.message.from_wire(data)
    if replies is None:
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.TC
        sock.sendto(reply.to_wire(), addr)
        return
    forged = dns.message.make_response(query)
    forged.id = (query.id + 1) % 65536
    forged.answer.append(dns.rrset.from_text(query.question[0].name, 5, "IN", "A", "6.6.6.6"))
    other = dns.message.make_response(dns.message.make_query("other.test", "A", id=query.id))
    real = dns.message.make_response(query)
    real.answer.append(dns.rrset.from_text(query.question[0].name, 5, "IN", "A", "10.0.0.1"))
    for wire in (b"junk", forged.to_wire(), other.to_wire(), real.to_wire()):
        sock.sendto(wire, addr)


def test_forged_answers_are_ignored() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        thread = threading.Thread(target=_serve_once, args=(sock, [], False))
        thread.start()
        query = dns.message.make_query("name.test", "A")
        reply = asyncio.run(ask_upstream(query, "127.0.0.1", sock.getsockname()[1], 5.0))
        thread.join(timeout=10)
    assert [r.address for r in reply.answer[0]] == ["10.0.0.1"]


def test_silent_upstream_times_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        query = dns.message.make_query("name.test", "A")
        with pytest.raises(TimeoutError):
            asyncio.run(ask_upstream(query, "127.0.0.1", sock.getsockname()[1], 0.2))


def _udp_and_tcp_on_one_port() -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same free port (a TCP listener of another
    process may hold the UDP port's number: then try another)."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket()
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        return udp, tcp
    raise AssertionError("no port free for both UDP and TCP in 50 tries")


def test_truncated_answer_is_asked_again_over_tcp() -> None:
    udp, tcp = _udp_and_tcp_on_one_port()
    with udp, tcp:
        port = udp.getsockname()[1]
        tcp.listen(1)
        tcp.settimeout(5)

        def tcp_answer() -> None:
            conn, _ = tcp.accept()
            with conn:
                conn.settimeout(5)
                size = int.from_bytes(conn.recv(2), "big")
                query = dns.message.from_wire(conn.recv(size))
                reply = dns.message.make_response(query)
                reply.answer.append(
                    dns.rrset.from_text(query.question[0].name, 5, "IN", "TXT", '"over tcp"')
                )
                wire = reply.to_wire()
                conn.sendall(len(wire).to_bytes(2, "big") + wire)

        threads = [
            threading.Thread(target=_serve_once, args=(udp, None, True)),
            threading.Thread(target=tcp_answer),
        ]
        for t in threads:
            t.start()
        query = dns.message.make_query("big.test", "TXT")
        reply = asyncio.run(ask_upstream(query, "127.0.0.1", port, 5.0))
        for t in threads:
            t.join(timeout=10)
    assert reply.answer[0][0].strings == (b"over tcp",)
    assert not reply.flags & dns.flags.TC
