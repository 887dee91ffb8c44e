"""Service discovery through the real edge: ``backhaul serve`` with listeners, a cluster
with TCP health checks and a ``dns.services`` section. The edge's workers publish each
endpoint's health in shared memory; the DNS service answers only the healthy ones. An
endpoint that stops listening disappears from the answers, one that starts appears."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.rdatatype

from tests.services.dns_harness import ask, free_port, start_backhaul


@contextmanager
def listening(host: str, port: int) -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(16)
    try:
        yield sock
    finally:
        sock.close()


def scrape_admin(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body.decode()


def _addresses(port: int) -> list[str]:
    reply = ask(port, "api.service.internal")
    return sorted(r.address for rrset in reply.answer for r in rrset if rrset.rdtype == 1)


def _wait_for(port: int, wanted: list[str]) -> None:
    deadline = time.monotonic() + 30
    while (got := _addresses(port)) != wanted:
        assert time.monotonic() < deadline, f"answers stayed {got}, expected {wanted}"
        time.sleep(0.1)


def test_only_healthy_endpoints_are_published(tmp_path: Path) -> None:
    port_a, port_b = free_port("127.0.0.2"), free_port("127.0.0.3")
    http, admin = free_port(), free_port()
    extra = {
        "admin": {"address": f"127.0.0.1:{admin}"},
        "listeners": [{"address": f"127.0.0.1:{http}"}],
        "routes": [{"proxy": {"cluster": "api"}}],
        "clusters": {
            "api": {
                "endpoints": [
                    f"127.0.0.2:{port_a}",
                    {"address": f"127.0.0.3:{port_b}", "weight": 3},
                ],
                "health_checks": {
                    "type": "tcp",
                    "interval": "200ms",
                    "timeout": "200ms",
                    "healthy_threshold": 1,
                    "unhealthy_threshold": 1,
                },
            }
        },
    }
    with listening("127.0.0.2", port_a) as a:
        server = start_backhaul(
            tmp_path, {"services": {"domain": "service.internal", "ttl": 2}}, extra
        )
        try:
            _wait_for(server.port, ["127.0.0.2"])  # B does not listen: unhealthy, not published
            reply = ask(server.port, "_http._tcp.api.service.internal", "SRV")
            srv = [r for rrset in reply.answer for r in rrset]
            assert [(r.port, r.weight) for r in srv] == [(port_a, 1)]
            assert reply.answer[0].ttl == 2
            assert any(rrset.rdtype == dns.rdatatype.A for rrset in reply.additional)
            with listening("127.0.0.3", port_b):
                _wait_for(server.port, ["127.0.0.2", "127.0.0.3"])
                a.close()
                _wait_for(server.port, ["127.0.0.3"])
                reply = ask(server.port, "_http._tcp.api.service.internal", "SRV")
                assert [(r.port, r.weight) for rrset in reply.answer for r in rrset] == [
                    (port_b, 3)
                ]
            # the edge's admin /metrics carries the DNS service's figures too
            deadline = time.monotonic() + 15  # the DNS worker publishes on its tick
            while 'backhaul_dns_queries_total{qtype="SRV"}' not in (text := scrape_admin(admin)):
                assert time.monotonic() < deadline, text
                time.sleep(0.1)
            assert text.index("# HELP backhaul_dns") > 0  # after the edge's own figures
        finally:
            server.stop()
