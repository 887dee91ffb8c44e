"""Reading the DNS server's data from its config: zone files, hosts files, inline records,
local domains, the published clusters and the DHCP clients' host names, into one
:class:`~backhaul.proto.dns_zone.Authority`.

The config is read through attributes only, so this works on the validated pydantic model
(quick mode) and on the thawed plain settings the edge's supervisor hands its children.
"""

from __future__ import annotations

import os
import time
from typing import Any

import dns.name
import dns.rdatatype

from backhaul.proto.dns_discovery import PublishedEndpoint, service_records
from backhaul.proto.dns_zone import (
    Authority,
    HostsEntry,
    ZoneSource,
    build_authority,
    parse_hosts,
)
from backhaul.services.dhcp.records import dns_records
from backhaul.state.dhcp_leases import JOURNAL_NAME, LeaseStoreError, read_leases

__all__ = ["file_stamps", "lease_lines", "load_authority", "published_endpoints"]


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def load_authority(dns: Any, published: dict[str, list[PublishedEndpoint]] | None) -> Authority:
    """Everything ``dns`` (the config's ``dns`` section) serves from its own data; raises
    ZoneDataError or OSError when a file is wrong (the caller keeps the old data)."""
    sources: list[ZoneSource] = []
    for zone in dns.zones:
        text = _read(zone.file) if zone.file else ""
        sources.append(ZoneSource(zone.origin, text, zone.file or "<inline>", tuple(zone.records)))
    sources.extend(ZoneSource(domain) for domain in dns.local)
    services = dns.services
    if services is not None and published is not None:
        lines = service_records(published, services.domain, services.ttl, services.service)
        sources.append(ZoneSource(services.domain, "", "<services>", tuple(lines)))
    leases = getattr(dns, "leases", None)
    if leases is not None:
        sources.append(ZoneSource(leases.zone, "", "<dhcp leases>", lease_lines(leases)))
    hosts: list[HostsEntry] = []
    for path in dns.hosts:
        hosts.extend(parse_hosts(_read(path), path))
    return build_authority(sources, hosts, int(dns.hosts_ttl), bool(dns.auto_ptr))


def lease_lines(leases: Any, now: float | None = None) -> tuple[str, ...]:
    """Zone-file lines (relative to ``leases.zone``) for the bound, named DHCP leases in
    ``leases.state_dir``: one A record per host name, the newest lease winning; the PTR
    records come from the server's automatic reverse records. A missing or unreadable
    store publishes nothing (the DHCP service may not have started yet)."""
    try:
        records = read_leases(leases.state_dir)
    except (LeaseStoreError, OSError):
        return ()
    now = time.time() if now is None else now
    origin = dns.name.from_text(leases.zone)
    lines = []
    for rrset in dns_records(records, leases.zone, now, max_ttl=int(leases.max_ttl)):
        if rrset.rdtype != dns.rdatatype.A:
            continue  # PTR: made by auto_ptr from the A record
        name = rrset.name.relativize(origin).to_text()
        for rdata in rrset:
            lines.append(f"{name} {rrset.ttl} IN A {rdata.to_text()}")
    return tuple(lines)


def file_stamps(dns: Any) -> dict[str, float]:
    """Modification times of every file the data comes from (a change means reload)."""
    paths = [z.file for z in dns.zones if z.file] + list(dns.hosts)
    leases = getattr(dns, "leases", None)
    if leases is not None:
        paths.append(os.path.join(leases.state_dir, JOURNAL_NAME))
    out: dict[str, float] = {}
    for path in paths:
        try:
            out[path] = os.stat(path).st_mtime_ns
        except OSError:
            out[path] = -1
    return out


def published_endpoints(
    clusters: Any, control: Any = None, metrics: Any = None
) -> dict[str, list[PublishedEndpoint]]:
    """Every cluster's endpoints with their health as the edge's live workers see it (the
    shared counters: an endpoint is published when most live workers see it healthy or
    warming and the operator has not drained it). With no edge worker alive, everything
    is published."""
    totals = metrics.totals() if metrics is not None else None
    layout = metrics.layout if metrics is not None else None
    out: dict[str, list[PublishedEndpoint]] = {}
    for name, cluster in clusters.items():
        base = None
        if layout is not None and name in layout.clusters:
            base = layout.endpoint_base[layout.cluster_index(name)]
        eps: list[PublishedEndpoint] = []
        for i, ep in enumerate(cluster.endpoints):
            if ep.address is None:
                continue
            host, port = ep.address[0], ep.address[1]
            label = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            healthy = True
            if totals is not None and base is not None and totals.workers:
                states = totals.health[base + i]
                routable = states[0] + states[1]  # healthy, warming (HEALTH_STATES order)
                healthy = routable * 2 > sum(states)
            if control is not None:
                index = control.find(name, label)
                if index is not None and control.drain_wanted(index):
                    healthy = False
            eps.append(PublishedEndpoint(host, port, int(ep.weight), healthy))
        out[name] = eps
    return out
