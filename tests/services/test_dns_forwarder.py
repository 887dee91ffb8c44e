"""The caching forwarder against real loopback upstreams: dnsmasq (answers compared with
dnsmasq asked directly; killed for serve-stale; a large answer for the TCP retry) and a
counting upstream written here (cache hits, negative caching, single-flight, conditional
forwarding, failover). Also the recursion ACL, response rate limiting and the query log."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest
import yaml

from tests.services.dns_harness import (
    Server,
    ask,
    counting_upstream,
    dig,
    free_port,
    records,
    start_backhaul,
    start_dnsmasq,
    status,
    wait_answering,
)
from tests.services.test_dns_authoritative import scrape

BIG = [f"--txt-record=big.up.test,{'y' * 200}{i}" for i in range(8)]


def _no_ttl(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        fields = line.split("\t")
        fields = [f for f in fields if f]
        out.append(" ".join(fields[:1] + fields[2:]))
    return sorted(out)


def test_forwarded_answers_equal_the_upstream(tmp_path: Path) -> None:
    upstream = start_dnsmasq(
        tmp_path,
        [
            "--local=/up.test/",
            "--local-ttl=120",
            "--host-record=a.up.test,10.5.0.1,fd05::1",
            "--mx-host=up.test,mx.up.test,5",
            "--cname=alias.up.test,a.up.test",
            *BIG,
        ],
    )
    ours = start_backhaul(tmp_path, {"forward": {"upstreams": [f"127.0.0.1:{upstream.port}"]}})
    try:
        for query in (("a.up.test", "A"), ("a.up.test", "AAAA"), ("up.test", "MX"),
                      ("alias.up.test", "A"), ("missing.up.test", "A")):  # fmt: skip
            mine = dig(*ours.at(), *query, "+noall", "+answer", "+comments")
            other = dig(*upstream.at(), *query, "+noall", "+answer", "+comments")
            assert status(mine.stdout) == status(other.stdout), query
            assert _no_ttl(records(mine.stdout)) == _no_ttl(records(other.stdout)), query
        # 1.6 kB of TXT: the upstream truncates over UDP, the forwarder retries over TCP and
        # a TCP client gets every record
        big = ask(ours.port, "big.up.test", "TXT", tcp=True)
        assert sum(len(r.strings) for r in big.answer[0]) == 8
        assert ask(ours.port, "big.up.test", "TXT", use_edns=False).flags & dns.flags.TC
    finally:
        ours.stop()
        upstream.stop()


def test_cache_hits_and_negative_caching(tmp_path: Path) -> None:
    with counting_upstream(ttl=60) as up:
        ours = start_backhaul(tmp_path, {"forward": {"upstreams": [f"127.0.0.1:{up.port}"]}})
        try:
            first = ask(ours.port, "cached.example.test")
            assert first.answer[0][0].address == "10.9.9.9"
            for _ in range(5):
                again = ask(ours.port, "CACHED.example.test")
                assert again.answer[0][0].address == "10.9.9.9"
                assert again.answer[0].ttl <= 60
            assert up.count("cached.example.test") == 1
            for _ in range(3):
                nx = ask(ours.port, "gone.nx.test")
                assert nx.rcode() == dns.rcode.NXDOMAIN
                assert nx.authority and nx.authority[0].ttl <= 30  # SOA minimum 30
            assert up.count("gone.nx.test") == 1
        finally:
            ours.stop()


def test_single_flight(tmp_path: Path) -> None:
    with counting_upstream(delay=0.5) as up:
        ours = start_backhaul(tmp_path, {"forward": {"upstreams": [f"127.0.0.1:{up.port}"]}})
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
                replies = list(pool.map(lambda _: ask(ours.port, "flight.example.test"), range(20)))
            assert all(r.answer[0][0].address == "10.9.9.9" for r in replies)
            assert up.count("flight.example.test") == 1
        finally:
            ours.stop()


def test_serve_stale_when_the_upstream_dies(tmp_path: Path) -> None:
    upstream = start_dnsmasq(
        tmp_path, ["--local=/st.test/", "--local-ttl=1", "--host-record=s.st.test,10.6.0.1"]
    )
    ours = start_backhaul(
        tmp_path,
        {
            "forward": {"upstreams": [f"127.0.0.1:{upstream.port}"], "timeout": "300ms"},
            "cache": {"stale_ttl": "30s"},
        },
    )
    try:
        assert ask(ours.port, "s.st.test").answer[0][0].address == "10.6.0.1"
        upstream.stop()
        deadline = time.monotonic() + 20
        while True:  # once the 1 s TTL is over, the upstream fails and the stale copy is served
            reply = ask(ours.port, "s.st.test")
            assert reply.rcode() == dns.rcode.NOERROR, reply
            if reply.answer[0].ttl == 30:
                break
            assert time.monotonic() < deadline, "no stale answer was served"
            time.sleep(0.1)
        assert reply.answer[0][0].address == "10.6.0.1"
        # a name never seen: SERVFAIL
        assert ask(ours.port, "never.st.test").rcode() == dns.rcode.SERVFAIL
    finally:
        ours.stop()


def test_conditional_forwarding_and_failover(tmp_path: Path) -> None:
    dead = free_port()  # nothing there: refused at once
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # there, but never answers
    silent.bind(("127.0.0.1", 0))
    quiet = silent.getsockname()[1]
    with silent, counting_upstream() as default, counting_upstream() as lab:
        ours = start_backhaul(
            tmp_path,
            {
                "forward": {
                    "upstreams": [
                        f"127.0.0.1:{dead}",
                        f"127.0.0.1:{quiet}",
                        f"127.0.0.1:{default.port}",
                    ],
                    "zones": {"lab.test": [f"127.0.0.1:{lab.port}"]},
                    "timeout": "300ms",
                }
            },
        )
        try:
            assert ask(ours.port, "host.lab.test").answer
            assert lab.count("host.lab.test") == 1 and default.count("host.lab.test") == 0
            # the refused one, then the silent one after its 300 ms, then the third answers
            assert ask(ours.port, "other.example.test").answer
            assert default.count("other.example.test") == 1
            silent.settimeout(5)
            asked: list[str] = []
            while "other.example.test." not in asked:  # start-up probes went this way too
                assert len(asked) < 20, asked
                asked.append(dns.message.from_wire(silent.recv(4096)).question[0].name.to_text())
        finally:
            ours.stop()


def test_recursion_only_for_allowed_clients(tmp_path: Path) -> None:
    with counting_upstream() as up:
        ours = start_backhaul(
            tmp_path,
            {
                "forward": {"upstreams": [f"127.0.0.1:{up.port}"]},
                "allow_recursion": ["10.0.0.0/8"],
                "local": ["mine.test"],
                "zones": [{"origin": "mine.test", "records": ["a 60 IN A 10.7.0.1"]}],
            },
        )
        try:
            assert ask(ours.port, "elsewhere.example.test").rcode() == dns.rcode.REFUSED
            assert up.count("elsewhere.example.test") == 0
            assert ask(ours.port, "a.mine.test").answer  # our own data: for everyone
        finally:
            ours.stop()


def test_response_rate_limit(tmp_path: Path) -> None:
    ours = start_backhaul(
        tmp_path,
        {
            "zones": [{"origin": "rl.test", "records": ["a 60 IN A 10.8.0.1"]}],
            "rate_limit": {"responses_per_second": 5, "burst": 5, "slip": 2, "exempt": []},
        },
    )
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(40):
                q = dns.message.make_query("a.rl.test", "A", id=i)
                sock.sendto(q.to_wire(), ("127.0.0.1", ours.port))
            sock.settimeout(1.0)
            full = truncated = 0
            try:
                while True:
                    reply = dns.message.from_wire(sock.recv(4096))
                    if reply.flags & dns.flags.TC:
                        truncated += 1
                    else:
                        full += 1
            except TimeoutError:
                pass
        assert 3 <= full <= 12  # the burst (less the start-up probe), and what refills
        assert truncated >= 10  # every second limited reply slips out truncated
        assert full + truncated < 40  # the rest were dropped
    finally:
        ours.stop()


def test_query_log(tmp_path: Path) -> None:
    log = tmp_path / "queries.log"
    ours = start_backhaul(
        tmp_path,
        {
            "zones": [{"origin": "log.test", "records": ["a 60 IN A 10.8.0.2"]}],
            "query_log": {"enabled": True, "path": str(log)},
        },
    )
    try:
        ask(ours.port, "a.log.test")
        deadline = time.monotonic() + 10
        while True:
            lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
            found = [x for x in lines if x["qname"] == "a.log.test."]
            if found:
                break
            assert time.monotonic() < deadline, "no log line"
            time.sleep(0.1)
        assert found[0]["qtype"] == "A" and found[0]["rcode"] == "NOERROR"
        assert found[0]["transport"] == "udp" and found[0]["source"] == "zone"
    finally:
        ours.stop()


@pytest.mark.parametrize("family", ["ipv6"])
def test_ipv6_listener(tmp_path: Path, family: str) -> None:
    try:
        port = free_port("::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    config = tmp_path / "v6.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dns": {
                    "listen": [f"[::1]:{port}"],
                    "zones": [{"origin": "six.test", "records": ["a 60 IN AAAA fd06::1"]}],
                }
            }
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "backhaul", "serve", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    server = Server(port, process, tmp_path)
    try:
        wait_answering(port, address="::1")
        assert ask(port, "a.six.test", "AAAA", address="::1").answer[0][0].address == "fd06::1"
        assert ask(port, "a.six.test", "AAAA", tcp=True, address="::1").answer
    finally:
        server.stop()


def test_several_workers_share_the_port_and_the_metrics(tmp_path: Path) -> None:
    metrics_port = free_port()
    ours = start_backhaul(
        tmp_path,
        {
            "workers": 2,
            "zones": [{"origin": "w.test", "records": ["a 60 IN TXT hello"]}],
            "metrics": f"127.0.0.1:{metrics_port}",
        },
    )
    try:
        for _ in range(40):  # a new socket (source port) each time: spread by SO_REUSEPORT
            assert ask(ours.port, "a.w.test", "TXT").answer
        deadline = time.monotonic() + 15
        text = ""
        while 'backhaul_dns_queries_total{qtype="TXT"} 40' not in text:
            assert time.monotonic() < deadline, text
            try:  # the metrics listener may still be starting on a busy machine
                text = scrape(metrics_port)
            except ConnectionRefusedError:
                text = ""
            time.sleep(0.1)
    finally:
        ours.stop()
