"""Endpoints from DNS (``endpoints_from``) resolved and checked once per machine: a real
edge with two workers, a real DNS server on loopback that the test starts and changes
(dnspython messages over UDP, counting the queries it gets), real upstreams counting the
probes and requests they get, and the admin API's merged view.

Nothing here asks the machine's resolver: every ``endpoints_from`` names the test's server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import yaml

from tests.edge.harness import BACKHAUL, Edge, RawUpstream, free_port, wait_port
from tests.edge.test_admin_api import call, get_json
from tests.edge.waiting import scrape, wait_log, wait_until

ZONE = "app.test."
SRV_NAME = f"_http._tcp.{ZONE}"


class ZoneServer:
    """A loopback UDP DNS server for ``app.test.``: an SRV record per upstream port in
    :attr:`ports` (target ``e<port>.app.test.``, glue ``127.0.0.1`` in the additional
    section), TTL 1. It counts the queries it gets; while :attr:`silent` it answers nothing
    (a DNS outage). A thread with a bounded life: ``close()`` ends it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.lock = threading.Lock()
        self.ports: list[int] = []
        self.queries = 0
        self.silent = False
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_ports(self, *ports: int) -> None:
        with self.lock:
            self.ports = list(ports)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        reply = dns.message.make_response(query)
        question = query.question[0]
        with self.lock:
            ports = list(self.ports)
        if question.name.to_text().lower() == SRV_NAME and question.rdtype == dns.rdatatype.SRV:
            if ports:
                reply.answer.append(
                    dns.rrset.from_text_list(
                        SRV_NAME, 1, "IN", "SRV", [f"0 1 {p} e{p}.{ZONE}" for p in ports]
                    )
                )
                for p in ports:
                    reply.additional.append(
                        dns.rrset.from_text(f"e{p}.{ZONE}", 1, "IN", "A", "127.0.0.1")
                    )
            return reply
        reply.set_rcode(dns.rcode.NXDOMAIN)
        return reply

    def _serve(self) -> None:
        deadline = time.monotonic() + 180
        while self.running and time.monotonic() < deadline:
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except dns.exception.DNSException:
                continue
            with self.lock:
                self.queries += 1
                if self.silent:
                    continue
            with contextlib.suppress(OSError):
                self.sock.sendto(self._answer(query).to_wire(), peer)

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=5)
        self.sock.close()


@contextlib.contextmanager
def zone_server() -> Iterator[ZoneServer]:
    server = ZoneServer()
    try:
        yield server
    finally:
        server.close()


class Backend:
    """An upstream that answers ``{"upstream": PORT}``; ``/probe`` (the health check) gets
    503 while :attr:`failing` is set. It keeps every request head it got."""

    def __init__(self) -> None:
        self.failing = threading.Event()
        self.raw = RawUpstream(self._respond)
        self.port = self.raw.port
        self.address = self.raw.address

    def _respond(self, request: bytes) -> bytes:
        if request.startswith(b"GET /probe ") and self.failing.is_set():
            return b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
        body = json.dumps({"upstream": self.port}).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        return head.encode() + body

    def probes(self) -> int:
        return sum(1 for r in list(self.raw.requests) if r.startswith(b"GET /probe "))

    def served(self) -> int:
        return sum(1 for r in list(self.raw.requests) if not r.startswith(b"GET /probe "))

    def __enter__(self) -> Backend:
        self.raw.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.__exit__()


def config(
    dns_address: str, admin_port: int | None, checks: bool = True, **spec: object
) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "endpoints_from": {
            "name": SRV_NAME,
            "type": "SRV",
            "resolvers": [dns_address],
            "refresh": "0.2s",
            **spec,
        }
    }
    if checks:
        cluster["health_checks"] = {
            "type": "http",
            "interval": "0.1s",
            "timeout": "1s",
            "healthy_threshold": 1,
            "unhealthy_threshold": 2,
            "http": {"path": "/probe"},
        }
    out: dict[str, Any] = {
        "routes": [{"name": "all", "match": {"prefix": "/"}, "proxy": {"cluster": "app"}}],
        "clusters": {"app": cluster},
    }
    if admin_port is not None:
        out["admin"] = {"address": f"127.0.0.1:{admin_port}"}
    return out


def cluster_view(admin_port: int) -> dict[str, Any]:
    return dict(get_json(admin_port, "/clusters/app"))


def by_endpoint(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {ep["endpoint"]: ep for ep in view["endpoints"]}


def wait_everywhere(admin_port: int, state: dict[str, str]) -> dict[str, Any]:
    """Wait until the merged view lists exactly the endpoints of ``state`` (label -> state),
    each seen in that state by both workers."""

    def agreed() -> dict[str, Any] | None:
        view = cluster_view(admin_port)
        eps = by_endpoint(view)
        if set(eps) != set(state):
            return None
        for label, wanted in state.items():
            if eps[label]["workers_by_state"] != {wanted: 2}:
                return None
        return view

    return wait_until(agreed, f"both workers to see {state}", timeout=20)


def served_by(port: int, n: int) -> set[int]:
    """The upstreams that answered ``n`` requests, each on a new connection (so both
    workers take some)."""
    return {json.loads(call(port, "GET", "/x")[2])["upstream"] for _ in range(n)}


def test_two_workers_share_one_resolver_and_one_checker(tmp_path: Path) -> None:
    admin_port = free_port()
    with zone_server() as zone, Backend() as a, Backend() as b:
        zone.set_ports(a.port, b.port)
        with Edge(tmp_path, config(zone.address, admin_port), workers=2) as edge:
            wait_port(admin_port, proc=edge.proc)
            wait_everywhere(admin_port, {a.address: "healthy", b.address: "healthy"})

            def checked(n: int) -> dict[str, Any] | None:
                eps = by_endpoint(cluster_view(admin_port))
                done = all(
                    (eps[x.address]["active_check"] or {}).get("checks", 0) >= n for x in (a, b)
                )
                return eps if done else None

            wait_until(lambda: checked(20), "20 probes of each endpoint")
            # Counted at the upstreams and the DNS server before and after the merged view:
            # a probe (a query) is counted when it arrives, its result when it is answered,
            # and one checker (one resolver) has at most one in flight per endpoint (name).
            with zone.lock:
                queries_before = zone.queries
            probes_before = {x.port: x.probes() for x in (a, b)}
            view = cluster_view(admin_port)
            probes_after = {x.port: x.probes() for x in (a, b)}
            with zone.lock:
                queries_after = zone.queries
            eps = by_endpoint(view)
            for x in (a, b):
                checks = eps[x.address]["active_check"]["checks"]
                # one checker: every probe the upstream saw is one published result; a
                # checker per worker would have sent twice as many
                assert probes_before[x.port] <= checks + 1, (x.address, checks, probes_before)
                assert checks <= probes_after[x.port], (x.address, checks, probes_after)
            # one resolver: every query the DNS server got is one resolution of the control
            # process; a resolver per worker would ask three times as often
            asked = view["discovery"]["resolutions"] + view["discovery"]["failures"]
            assert asked >= 5, view["discovery"]
            assert queries_before <= asked + 1 and asked <= queries_after, (asked, queries_before)
            assert served_by(edge.port, 12) == {a.port, b.port}
            assert edge.stderr_path.read_text().count("endpoint(s) from DNS") == 1
            status, _, body = call(admin_port, "POST", f"/clusters/app/endpoints/{a.address}/drain")
            assert status == 404 and b"come from DNS" in body


def test_a_dns_change_and_a_failing_endpoint_reach_every_worker(tmp_path: Path) -> None:
    admin_port = free_port()
    with zone_server() as zone, Backend() as a, Backend() as b, Backend() as c:
        zone.set_ports(a.port, b.port)
        with Edge(tmp_path, config(zone.address, admin_port), workers=2) as edge:
            wait_port(admin_port, proc=edge.proc)
            first = wait_everywhere(admin_port, {a.address: "healthy", b.address: "healthy"})
            # a new endpoint comes, one leaves: both workers take the new set
            zone.set_ports(a.port, c.port)
            view = wait_everywhere(admin_port, {a.address: "healthy", c.address: "healthy"})
            assert view["discovery"]["generation"] > first["discovery"]["generation"]
            before_b = b.served()
            assert served_by(edge.port, 12) == {a.port, c.port}
            assert b.served() == before_b  # b left the set: no worker sends it anything
            # c fails its checks: the one checker sees it, every worker takes it out
            c.failing.set()
            view = wait_everywhere(admin_port, {a.address: "healthy", c.address: "unhealthy"})
            check = by_endpoint(view)[c.address]["active_check"]
            assert check["verdict"] == "unhealthy" and check["last_reason"].startswith("status 503")
            before_c = c.served()
            assert served_by(edge.port, 12) == {a.port}
            assert c.served() == before_c
            wait_log(edge.stderr_path, f"health checks: app: {c.address} now unhealthy")
            text = edge.stderr_path.read_text()
            # each worker logged its own transition once; the checker its verdict once
            assert text.count(f"endpoint {c.address} healthy -> unhealthy") == 2
            assert text.count(f"{c.address} now unhealthy") == 1


def test_a_cluster_from_dns_runs_a_control_process_that_keeps_the_set(tmp_path: Path) -> None:
    """No admin API and no health checks: the control process still runs (the workers take
    their endpoints from it). Killed while DNS is down, it comes back with the set found so
    far; the workers never lose it."""
    with zone_server() as zone, Backend() as a:
        zone.set_ports(a.port)
        with Edge(tmp_path, config(zone.address, None, checks=False), workers=2) as edge:
            ctl = edge.control_pid()
            assert ctl is not None
            wait_until(lambda: call(edge.port, "GET", "/x")[0] == 200, "the DNS endpoint to serve")
            zone.silent = True
            os.kill(ctl, signal.SIGKILL)
            wait_log(edge.stderr_path, f"control process {ctl} killed by SIGKILL; started")
            assert served_by(edge.port, 8) == {a.port}
            assert edge.stderr_path.read_text().count("endpoint(s) from DNS") == 1


def test_a_reload_keeps_the_endpoints_found_so_far(tmp_path: Path) -> None:
    """DNS is down during the reload: the new workers can only know the endpoints from the
    set the old generation found, carried over in shared memory, with its check results."""
    admin_port = free_port()
    with zone_server() as zone, Backend() as a, Backend() as b:
        zone.set_ports(a.port, b.port)
        cfg = config(zone.address, admin_port)
        with Edge(tmp_path, cfg, workers=2) as edge:
            wait_port(admin_port, proc=edge.proc)
            b.failing.set()
            wait_everywhere(admin_port, {a.address: "healthy", b.address: "unhealthy"})
            zone.silent = True
            cfg["routes"].insert(
                0, {"name": "hello", "match": {"path": "/hello"}, "respond": {"body": "hi\n"}}
            )
            cfg["listeners"] = [{"name": "main", "address": f"127.0.0.1:{edge.port}"}]
            cfg["access_log"] = {"path": str(edge.log_path)}
            edge.config_path.write_text(yaml.safe_dump(cfg))
            assert call(admin_port, "POST", "/config/reload", b"")[0] == 200
            assert call(edge.port, "GET", "/hello")[2] == b"hi\n"  # the new generation
            before_b = b.served()
            assert served_by(edge.port, 12) == {a.port}
            assert b.served() == before_b
            wait_everywhere(admin_port, {a.address: "healthy", b.address: "unhealthy"})
            # DNS is still down: the new control process fails to resolve and keeps the set
            view = wait_until(
                lambda: (v := cluster_view(admin_port))["discovery"]["failures"] and v,
                "a failed resolution",
            )
            assert len(view["endpoints"]) == 2 and "Timeout" in view["discovery"]["last_error"]


def test_more_endpoints_than_room_are_left_out_and_counted(tmp_path: Path) -> None:
    admin_port = free_port()
    with zone_server() as zone, Backend() as a, Backend() as b, Backend() as c:
        ports = sorted([a.port, b.port, c.port])
        zone.set_ports(*ports)
        cfg = config(zone.address, admin_port, checks=False, max_endpoints=2)
        with Edge(tmp_path, cfg, workers=2) as edge:
            wait_port(admin_port, proc=edge.proc)
            kept = {f"127.0.0.1:{p}": "healthy" for p in ports[:2]}
            view = wait_everywhere(admin_port, kept)  # address order: the first two
            assert view["discovery"]["left_out"] == 1
            assert view["discovery"]["max_endpoints"] == 2
            samples = scrape(admin_port)
            key = frozenset({("cluster", "app")})
            assert samples[("backhaul_cluster_discovery_left_out", key)] == 1
            assert samples[("backhaul_cluster_discovered_endpoints", key)] == 2
            wait_log(edge.stderr_path, "endpoints_from answered 3 endpoints, room for 2")
            assert served_by(edge.port, 12) == set(ports[:2])
            # one of the two leaves: the third takes its place
            zone.set_ports(ports[1], ports[2])
            view = wait_everywhere(admin_port, {f"127.0.0.1:{p}": "healthy" for p in ports[1:]})
            assert view["discovery"]["left_out"] == 0


def test_check_refuses_more_room_than_the_edge_has(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(config("127.0.0.1:53", None, max_endpoints=5000)))
    out = subprocess.run(
        [*BACKHAUL, "check", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0
    assert "clusters.app.endpoints_from.max_endpoints" in out.stdout + out.stderr
    assert "1024" in out.stdout + out.stderr
    assert "Traceback" not in out.stderr
