"""The ``dns:`` section: the DNS server's listeners, data, forwarder, cache and safety.

Zone and hosts files are read and parsed at load (dnspython's zone reader), so ``backhaul
check`` reports a bad record with its file and line under the config path of the file
(``dns.zones[0].file``). Client networks are CIDRs parsed at load. Paths are relative to the
directory ``backhaul`` runs in.

Example::

    dns:
      listen: ["127.0.0.1:5353", "[::1]:5353"]
      zones:
        - origin: corp.internal
          file: corp.zone
          records: ["api 60 IN A 10.0.0.7"]
      hosts: [extra.hosts]
      local: [corp.internal]
      forward:
        upstreams: ["127.0.0.1:5399"]
        zones: {lab.internal: ["127.0.0.2:53"]}
      services: {domain: service.internal, ttl: 5}
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from backhaul.config.fields import (
    ConfigModel,
    Duration,
    ListenAddress,
    PositiveDuration,
    PositiveSize,
    Problems,
)
from backhaul.config.units import describe

__all__ = [
    "DnsCache",
    "DnsConfig",
    "DnsForward",
    "DnsQueryLog",
    "DnsRateLimit",
    "DnsServices",
    "DnsZone",
    "EndpointsFrom",
]

_DEFAULT_RECURSION = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)


def _domain(value: str) -> str:
    import dns.exception
    import dns.name

    text = value.strip()
    if not text or text == ".":
        raise ValueError(f"found {describe(value)}: expected a domain name such as corp.internal")
    try:
        dns.name.from_text(text)
    except dns.exception.DNSException as exc:
        raise ValueError(
            f"found {describe(value)}: expected a domain name such as corp.internal ({exc})"
        ) from exc
    return text.rstrip(".").lower()


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError as exc:
        raise ValueError(
            f"found {describe(value)}: expected a CIDR such as 10.0.0.0/8 or fd00::/8"
        ) from exc


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ValueError(f"found {describe(path)}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"found {describe(path)}: cannot read it ({exc})") from exc


class DnsZone(ConfigModel):
    """An authoritative zone: a zone file, inline records (zone-file lines), or both."""

    origin: str | None = Field(default=None, description="default: the file's $ORIGIN")
    file: str | None = Field(default=None, description="RFC 1035 zone file")
    records: tuple[str, ...] = Field(
        default=(), description="zone-file lines such as 'www 300 IN A 10.0.0.1'"
    )

    @field_validator("origin")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        return _domain(value) if value is not None else None

    @model_validator(mode="after")
    def _parses(self) -> DnsZone:
        from backhaul.proto.dns_zone import ZoneDataError, ZoneSource, parse_zone

        if self.file is None and not self.records and self.origin is None:
            raise ValueError("found an empty zone: expected file, records or at least origin")
        if self.file is None and self.origin is None:
            raise Problems([("origin", "inline records need an origin: set origin")])
        text = ""
        if self.file is not None:
            try:
                text = _read(self.file)
            except ValueError as exc:
                raise Problems([("file", str(exc))]) from None
        try:
            parse_zone(ZoneSource(self.origin, text, self.file or "<inline>", self.records))
        except ZoneDataError as exc:
            if exc.source.startswith("records["):
                raise Problems([(exc.source, str(exc).split(": ", 1)[1])]) from None
            raise Problems([("file" if self.file else "records", str(exc))]) from None
        return self


class DnsForward(ConfigModel):
    """Where names outside our zones go: upstreams, per zone too (conditional)."""

    upstreams: tuple[ListenAddress, ...] = Field(default=(), description="tried in order")
    zones: dict[str, tuple[ListenAddress, ...]] = Field(
        default_factory=dict, description="zone -> its upstreams (conditional forwarding)"
    )
    timeout: PositiveDuration = Field(default="2s", description="per upstream try")  # type: ignore[assignment]
    failures_to_down: int = Field(default=3, ge=1, description="failures in a row")
    down_for: PositiveDuration = Field(default="5s")  # type: ignore[assignment]

    @field_validator("zones")
    @classmethod
    def _zones(
        cls, value: dict[str, tuple[ListenAddress, ...]]
    ) -> dict[str, tuple[ListenAddress, ...]]:
        return {_domain(k): v for k, v in value.items()}

    @model_validator(mode="after")
    def _some(self) -> DnsForward:
        if not self.upstreams and not self.zones:
            raise ValueError("found no upstream: expected upstreams or zones")
        return self


class DnsCache(ConfigModel):
    """The forwarder's cache (RFC 2308 negative caching, RFC 8767 serve-stale)."""

    max_entries: int = Field(default=10_000, ge=1)
    max_size: PositiveSize = Field(default="32MiB")  # type: ignore[assignment]
    min_ttl: Duration = Field(default="0s")  # type: ignore[assignment]
    max_ttl: Duration = Field(default="24h")  # type: ignore[assignment]
    negative_max_ttl: Duration = Field(default="1h")  # type: ignore[assignment]
    serve_stale: Duration = Field(default="24h", description="0 = never serve stale answers")  # type: ignore[assignment]
    stale_ttl: Duration = Field(default="30s")  # type: ignore[assignment]

    @model_validator(mode="after")
    def _order(self) -> DnsCache:
        if self.min_ttl > self.max_ttl:
            raise Problems([("min_ttl", "found a min_ttl above max_ttl: expected min <= max")])
        return self


class DnsRateLimit(ConfigModel):
    """Response rate limiting per client /24 (IPv6 /56), UDP only."""

    responses_per_second: float = Field(gt=0)
    burst: float | None = Field(default=None, gt=0, description="default: one second's worth")
    slip: int = Field(default=2, ge=0, description="every Nth limited reply goes out with TC")
    exempt: tuple[str, ...] = Field(default=("127.0.0.0/8", "::1/128"))
    ipv4_prefix: int = Field(default=24, ge=8, le=32)
    ipv6_prefix: int = Field(default=56, ge=16, le=128)

    @field_validator("exempt")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_cidr(v) for v in value)


class DnsServices(ConfigModel):
    """Publish every cluster as ``<cluster>.<domain>`` (healthy endpoints only)."""

    domain: str = "service.internal"
    ttl: int = Field(default=5, ge=0, le=3600)
    service: str = Field(default="_http._tcp", description="SRV prefix")

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return _domain(value)


class DnsQueryLog(ConfigModel):
    enabled: bool = False
    path: str = Field(default="-", min_length=1, description="'-' = stdout, else a file")


class DnsLeases(ConfigModel):
    """DHCP clients' host names published from the DHCP service's lease store."""

    state_dir: str = Field(description="the DHCP service's state directory (dhcp.state_dir)")
    zone: str = Field(description="the domain the host names go under, e.g. lan.internal")
    max_ttl: int = Field(default=300, ge=1, description="TTL cap (the lease's remaining time)")

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _domain(value)


class DnsConfig(ConfigModel):
    """The DNS server."""

    listen: tuple[ListenAddress, ...] = Field(
        min_length=1, description="UDP and TCP on each address"
    )
    workers: int = Field(default=1, ge=1, le=64, description="processes sharing the ports")
    zones: tuple[DnsZone, ...] = ()
    hosts: tuple[str, ...] = Field(default=(), description="/etc/hosts-format files")
    hosts_ttl: int = Field(default=0, ge=0, description="TTL of hosts records")
    local: tuple[str, ...] = Field(
        default=(), description="domains answered only from our data (NXDOMAIN if absent)"
    )
    auto_ptr: bool = Field(default=True, description="PTR records for every A/AAAA")
    forward: DnsForward | None = None
    allow_recursion: tuple[str, ...] = Field(
        default=_DEFAULT_RECURSION, description="clients the forwarder serves"
    )
    cache: DnsCache = Field(default_factory=DnsCache)
    rate_limit: DnsRateLimit | None = None
    services: DnsServices | None = None
    udp_payload: int = Field(default=1232, ge=512, le=4096, description="EDNS size offered")
    tcp_idle_timeout: PositiveDuration = Field(default="10s")  # type: ignore[assignment]
    query_log: DnsQueryLog = Field(default_factory=DnsQueryLog)
    metrics: ListenAddress | None = Field(
        default=None, description="Prometheus /metrics of the DNS server"
    )
    watch: bool = Field(default=True, description="reload zones and hosts when files change")
    leases: DnsLeases | None = Field(
        default=None,
        description="A (and PTR) records for DHCP clients' host names, from the lease store",
    )

    @field_validator("local")
    @classmethod
    def _locals(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_domain(v) for v in value)

    @field_validator("allow_recursion")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_cidr(v) for v in value)

    @model_validator(mode="after")
    def _files(self) -> DnsConfig:
        from backhaul.proto.dns_zone import ZoneDataError, parse_hosts

        problems: list[tuple[str, str]] = []
        for i, path in enumerate(self.hosts):
            try:
                parse_hosts(_read(path), path)
            except ValueError as exc:
                problems.append((f"hosts[{i}]", str(exc)))
            except ZoneDataError as exc:
                problems.append((f"hosts[{i}]", str(exc)))
        seen: dict[tuple[str, int], int] = {}
        for i, address in enumerate(self.listen):
            if address.port == 0:
                problems.append((f"listen[{i}]", "found port 0: expected a port 1-65535"))
            key = (address.host, address.port)
            if key in seen:
                problems.append(
                    (f"listen[{i}]", f"found {address} again (listen[{seen[key]}] has it)")
                )
            seen[key] = i
        if problems:
            raise Problems(problems)
        return self


class EndpointsFrom(ConfigModel):
    """A cluster's endpoints from DNS, re-resolved while serving."""

    name: str
    type: Literal["A", "AAAA", "SRV"] = "A"
    port: int | None = Field(default=None, ge=1, le=65535, description="A/AAAA: required")
    refresh: PositiveDuration = Field(default="5s")  # type: ignore[assignment]
    resolvers: tuple[ListenAddress, ...] = Field(
        default=(), description="DNS servers to ask; default: the system's"
    )
    max_endpoints: int = Field(
        default=64,
        ge=1,
        le=1024,
        description="room in the edge's shared memory: beyond it, endpoints are left out"
        " and counted",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _domain(value)

    @model_validator(mode="after")
    def _port(self) -> EndpointsFrom:
        if self.type != "SRV" and self.port is None:
            raise Problems([("port", f"type {self.type} gives addresses only: set port")])
        return self
