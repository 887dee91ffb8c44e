"""Service discovery over DNS, both ways, as plain data.

Publishing (Consul DNS's shape): every cluster ``api`` becomes ``api.<domain>`` with the
A/AAAA records of its **healthy** endpoints, and ``<service>.api.<domain>`` (``_http._tcp``
by default) with one SRV record per healthy endpoint (priority 0, the endpoint's weight, its
port) whose target ``e<N>.api.<domain>`` has that endpoint's address. A cluster with no
healthy endpoint still exists (NODATA, not NXDOMAIN). Endpoints given by host name, or
built-in ones, are left out. :func:`service_records` returns zone-file lines for
:mod:`backhaul.proto.dns_zone`.

Consuming (``endpoints_from``): :func:`endpoints_from_answer` turns the records of an A,
AAAA or SRV answer into ``(host, port, weight)`` endpoints (SRV targets resolved from the
additional section or a later address lookup); :func:`endpoint_changes` says which to add
and remove; :func:`next_refresh` when to ask again (the refresh interval, sooner when
the answer's TTL is shorter, at least one second; after a failure, the interval again, and
the current endpoints are kept — a DNS outage never empties a cluster).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.message
import dns.name
import dns.rdatatype

__all__ = [
    "DiscoveredEndpoint",
    "PublishedEndpoint",
    "endpoint_changes",
    "endpoints_from_answer",
    "next_refresh",
    "service_records",
    "srv_targets",
]


@dataclass(frozen=True)
class PublishedEndpoint:
    host: str
    port: int
    weight: int
    healthy: bool


@dataclass(frozen=True, order=True)
class DiscoveredEndpoint:
    host: str
    port: int
    weight: int = 1


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _label(name: str) -> str:
    """A cluster name as one DNS label (characters outside [a-z0-9-] become '-')."""
    out = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in name.lower())
    return out.strip("-")[:63] or "cluster"


def service_records(
    clusters: dict[str, Sequence[PublishedEndpoint]],
    domain: str,
    ttl: int,
    service: str = "_http._tcp",
) -> list[str]:
    """Zone-file lines (absolute names) publishing the healthy endpoints of ``clusters``."""
    origin = domain.rstrip(".") + "."
    lines: list[str] = []
    for name, endpoints in clusters.items():
        base = f"{_label(name)}.{origin}"
        live = [e for e in endpoints if e.healthy and _is_ip(e.host)]
        # An empty TXT keeps the name existing (NODATA) when nothing is healthy.
        lines.append(f'{base} {ttl} IN TXT "cluster={name}" "healthy={len(live)}"')
        for i, ep in enumerate(live, 1):
            rdtype = "AAAA" if ":" in ep.host else "A"
            lines.append(f"{base} {ttl} IN {rdtype} {ep.host}")
            target = f"e{i}.{base}"
            lines.append(f"{target} {ttl} IN {rdtype} {ep.host}")
            lines.append(f"{service}.{base} {ttl} IN SRV 0 {ep.weight} {ep.port} {target}")
    return lines


def srv_targets(response: dns.message.Message) -> list[tuple[dns.name.Name, int, int]]:
    """``(target, port, weight)`` of every SRV record in the answer."""
    out: list[tuple[dns.name.Name, int, int]] = []
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.SRV:
            out.extend((r.target, r.port, max(1, r.weight)) for r in rrset)
    return out


def _addresses(response: dns.message.Message, section: str) -> dict[dns.name.Name, list[str]]:
    found: dict[dns.name.Name, list[str]] = {}
    for rrset in getattr(response, section):
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            found.setdefault(rrset.name, []).extend(r.address for r in rrset)
    return found


def endpoints_from_answer(
    response: dns.message.Message,
    rdtype: str,
    port: int | None,
    resolved: dict[dns.name.Name, list[str]] | None = None,
) -> list[DiscoveredEndpoint]:
    """The endpoints an answer names. For SRV, addresses of targets come from the
    additional section or ``resolved`` (target -> addresses the caller looked up)."""
    out: set[DiscoveredEndpoint] = set()
    if rdtype in ("A", "AAAA"):
        assert port is not None
        for addresses in _addresses(response, "answer").values():
            out.update(DiscoveredEndpoint(a, port, 1) for a in addresses)
        return sorted(out)
    glue = _addresses(response, "additional")
    for name, addrs in (resolved or {}).items():
        glue.setdefault(name, []).extend(addrs)
    for target, srv_port, weight in srv_targets(response):
        for address in glue.get(target, ()):
            out.add(DiscoveredEndpoint(address, srv_port, weight))
    return sorted(out)


def endpoint_changes(
    current: Iterable[DiscoveredEndpoint], wanted: Iterable[DiscoveredEndpoint]
) -> tuple[list[DiscoveredEndpoint], list[DiscoveredEndpoint]]:
    """``(added, removed)`` going from ``current`` to ``wanted``."""
    now_set, want_set = set(current), set(wanted)
    return sorted(want_set - now_set), sorted(now_set - want_set)


def next_refresh(now: float, refresh: float, answer_ttl: int | None) -> float:
    """When to resolve again: after ``refresh``, or the answer's TTL when shorter (at least
    one second)."""
    wait = refresh if answer_ttl is None else min(refresh, max(1.0, float(answer_ttl)))
    return now + wait
