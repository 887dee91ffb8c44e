"""``endpoints_from`` through the real edge: one ``backhaul serve`` runs the DNS service
(a watched zone file) and an HTTP listener whose clusters take their endpoints from that
DNS server (A and SRV). Changing the zone moves new requests to the new endpoint while a
request in flight on the old one completes."""

from __future__ import annotations

import http.client
import http.server
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.services.dns_harness import free_port, start_backhaul


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server = self.server
        name = server.label  # type: ignore[attr-defined]
        if self.path == "/slow":
            server.slow_started.set()  # type: ignore[attr-defined]
            server.release.wait(20)  # type: ignore[attr-defined]
            name += "-slow"
        body = name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def origin(host: str, port: int, label: str) -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer((host, port), _Handler)
    server.label = label  # type: ignore[attr-defined]
    server.slow_started = threading.Event()  # type: ignore[attr-defined]
    server.release = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.release.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def get(port: int, path: str = "/", host: str = "a.local") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def wait_body(port: int, wanted: str, host: str = "a.local") -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            status, body = get(port, host=host)
        except ConnectionRefusedError:  # the edge's worker is still starting
            status, body = 0, "connection refused"
        if status == 200 and body == wanted:
            return
        assert time.monotonic() < deadline, f"still {status} {body!r}, expected {wanted!r}"
        time.sleep(0.1)


def zone_text(address: str) -> str:
    return (
        "$ORIGIN disc.test.\n$TTL 1\n@ SOA ns h 1 2 3 4 1\n"
        f"api A {address}\n"
        "b A 127.0.0.3\n"
        "_http._tcp.srv SRV 0 1 {port} b\n"
    )


def test_endpoints_follow_dns_without_dropping_requests(tmp_path: Path) -> None:
    port = free_port("127.0.0.2")
    http_port = free_port()
    zone = tmp_path / "disc.zone"
    zone.write_text(zone_text("127.0.0.2").replace("{port}", str(port)))
    dns_port = free_port()
    resolver = {"resolvers": [f"127.0.0.1:{dns_port}"], "refresh": "500ms"}
    extra = {
        "listeners": [{"address": f"127.0.0.1:{http_port}"}],
        "routes": [
            {"match": {"host": "srv.local"}, "proxy": {"cluster": "by-srv"}},
            {"proxy": {"cluster": "api"}},
        ],
        "clusters": {
            "api": {
                "endpoints_from": {"name": "api.disc.test", "type": "A", "port": port, **resolver}
            },
            "by-srv": {
                "endpoints_from": {"name": "_http._tcp.srv.disc.test", "type": "SRV", **resolver}
            },
        },
    }
    with origin("127.0.0.2", port, "A") as a, origin("127.0.0.3", port, "B"):
        server = start_backhaul(
            tmp_path, {"listen": [f"127.0.0.1:{dns_port}"], "zones": [{"file": str(zone)}]}, extra
        )
        try:
            wait_body(http_port, "A")
            assert [get(http_port)[1] for _ in range(4)] == ["A"] * 4
            wait_body(http_port, "B", host="srv.local")  # SRV target b -> 127.0.0.3
            result: dict[str, tuple[int, str]] = {}
            slow = threading.Thread(target=lambda: result.update(slow=get(http_port, "/slow")))
            slow.start()
            assert a.slow_started.wait(20)  # type: ignore[attr-defined]
            zone.write_text(zone_text("127.0.0.3").replace("{port}", str(port)))
            later = time.time_ns() + 5_000_000_000
            os.utime(zone, ns=(later, later))
            wait_body(http_port, "B")  # new requests go to the new address, and only there
            assert [get(http_port)[1] for _ in range(6)] == ["B"] * 6
            a.release.set()  # type: ignore[attr-defined]
            slow.join(timeout=30)
            assert result["slow"] == (200, "A-slow")  # the one in flight was not dropped
        finally:
            server.stop()
