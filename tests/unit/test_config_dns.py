"""The ``dns`` section and ``endpoints_from``: valid shapes load, every mistake is reported
with its config path (as ``backhaul check`` prints it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backhaul.config.load import load_text
from backhaul.errors import ConfigError


def problems(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_text(text)
    return dict(info.value.problems)


def test_dns_only_config_is_valid(tmp_path: Path) -> None:
    zone = tmp_path / "z.zone"
    zone.write_text("$ORIGIN z.test.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\nwww A 10.0.0.1\n")
    config = load_text(
        f"""
dns:
  listen: ["127.0.0.1:5353", "[::1]:5353"]
  zones: [{{file: {zone}}}, {{origin: corp.test, records: ["a 60 IN A 10.0.0.2"]}}]
  local: [Corp.Test.]
  forward: {{upstreams: ["127.0.0.1:5399"], zones: {{lab.test: ["127.0.0.2:53"]}}}}
  cache: {{max_ttl: 1h, serve_stale: 0}}
  rate_limit: {{responses_per_second: 20}}
"""
    )
    assert config.dns is not None and not config.listeners
    assert config.dns.local == ("corp.test",)
    assert config.dns.forward is not None and config.dns.forward.timeout == 2.0
    assert config.dns.cache.max_ttl == 3600


@pytest.mark.parametrize(
    ("snippet", "path", "words"),
    [
        ("dns: {listen: []}", "dns.listen", "at least 1"),
        ("dns: {listen: ['127.0.0.1:0']}", "dns.listen[0]", "port 0"),
        ("dns: {listen: [':53', ':53']}", "dns.listen[1]", "again"),
        ("dns: {listen: [':5353'], allow_recursion: [10.0.0.0/33]}",
         "dns.allow_recursion", "CIDR"),
        ("dns: {listen: [':5353'], zones: [{file: /nonexistent.zone}]}",
         "dns.zones[0].file", "no such file"),
        ("dns: {listen: [':5353'], zones: [{origin: a.test,"
         " records: ['ok 1 IN A 1.1.1.1', 'x IN A 1']}]}",
         "dns.zones[0].records[1]", "'x IN A 1'"),
        ("dns: {listen: [':5353'], zones: [{records: ['x 1 IN A 1.1.1.1']}]}",
         "dns.zones[0].origin", "origin"),
        ("dns: {listen: [':5353'], hosts: [/nonexistent.hosts]}", "dns.hosts[0]", "no such file"),
        ("dns: {listen: [':5353'], forward: {}}", "dns.forward", "no upstream"),
        ("dns: {listen: [':5353'], local: ['bad..name']}", "dns.local", "domain name"),
        ("dns: {listen: [':5353'], rate_limit: {responses_per_second: 0}}",
         "dns.rate_limit.responses_per_second", ""),
        ("{}", "listeners", "or a dns section"),
    ],
)  # fmt: skip
def test_dns_problems_have_paths(snippet: str, path: str, words: str) -> None:
    found = problems(snippet)
    assert path in found, found
    assert words in found[path]


def test_dns_port_overlapping_an_http_listener() -> None:
    found = problems(
        """
listeners: [{address: "127.0.0.1:8053"}]
dns: {listen: ["0.0.0.0:8053"]}
"""
    )
    assert "overlaps listeners[0]" in found["dns.listen[0]"]


def test_endpoints_from_shapes() -> None:
    config = load_text(
        """
listeners: [{address: "127.0.0.1:8080"}]
routes: [{proxy: {cluster: api}}]
clusters:
  api: {endpoints_from: {name: _http._tcp.api.test, type: SRV, refresh: 2s}}
"""
    )
    spec = config.clusters["api"].endpoints_from
    assert spec is not None and spec.refresh == 2.0 and spec.port is None
    found = problems(
        """
listeners: [{address: "127.0.0.1:8080"}]
routes: [{proxy: {cluster: api}}]
clusters:
  api: {endpoints: ["127.0.0.1:9000"], endpoints_from: {name: api.test, port: 80}}
  b: {endpoints_from: {name: b.test}}
"""
    )
    assert "one source of endpoints" in found["clusters.api.endpoints_from"]
    assert "set port" in found["clusters.b.endpoints_from.port"]


def test_check_prints_the_dns_plan(tmp_path: Path) -> None:
    path = tmp_path / "dns.yaml"
    path.write_text("dns: {listen: ['127.0.0.1:5353'], local: [corp.test]}\n")
    out = subprocess.run(
        [sys.executable, "-m", "backhaul", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "dns: udp+tcp 127.0.0.1:5353" in out.stdout
