"""A cluster's endpoints from DNS (``endpoints_from``), re-resolved while serving.

:class:`EndpointSource` resolves one name (A, AAAA or SRV; SRV targets without glue are
resolved to addresses too) with dnspython's asyncio resolver, again after the refresh
interval (sooner when the answer's TTL is shorter), and calls ``on_change(endpoints, now)``
whenever the set of endpoints changes. An authoritative empty answer (NXDOMAIN, NODATA)
empties the set, as Envoy's strict DNS does; a failure (timeout, SERVFAIL, no resolver
reachable) keeps the current set and is retried after the interval. The rules (what an
answer means, when to ask again) are :mod:`backhaul.proto.dns_discovery`'s.

The resolvers are the configured ones, or the machine's (``/etc/resolv.conf``) when none is
configured.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

from backhaul.proto.dns_discovery import DiscoveredEndpoint, endpoints_from_answer, next_refresh

__all__ = ["EndpointSource"]

OnChange = Callable[[list[DiscoveredEndpoint], float], None]


class _Failed(Exception):
    pass


class EndpointSource:
    """Keeps resolving ``spec`` (the config's ``endpoints_from``) for cluster ``cluster``."""

    def __init__(self, cluster: str, spec: Any, on_change: OnChange) -> None:
        self.cluster = cluster
        self.name = spec.name
        self.rdtype = spec.type
        self.port = spec.port
        self.refresh = float(spec.refresh)
        resolvers = list(spec.resolvers)
        resolver = dns.asyncresolver.Resolver(configure=not resolvers)
        if resolvers:
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(a.host, a.port) for a in resolvers
            ]
        resolver.lifetime = max(1.0, min(5.0, self.refresh))
        resolver.cache = None
        self.resolver = resolver
        self.on_change = on_change
        self.current: list[DiscoveredEndpoint] | None = None
        self.failures = 0
        self.resolutions = 0
        self.last_error = ""
        """Why the last resolution failed ('' after a success)."""

    async def resolve(self) -> tuple[list[DiscoveredEndpoint], int | None]:
        """The endpoints the name has now and the answer's TTL."""
        try:
            answer = await self.resolver.resolve(self.name, self.rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return [], None
        except (dns.exception.DNSException, OSError) as exc:
            raise _Failed(f"{type(exc).__name__}: {exc}") from exc
        response = answer.response
        ttl = answer.rrset.ttl if answer.rrset is not None else None
        resolved: dict[dns.name.Name, list[str]] = {}
        if self.rdtype == "SRV":
            glue = {r.name for r in response.additional}
            for rrset in response.answer:
                for rdata in rrset:
                    target = rdata.target
                    if target in glue or target in resolved:
                        continue
                    resolved[target] = await self._addresses(target)
        return endpoints_from_answer(response, self.rdtype, self.port, resolved), ttl

    async def _addresses(self, target: dns.name.Name) -> list[str]:
        out: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self.resolver.resolve(target, rdtype)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except (dns.exception.DNSException, OSError) as exc:
                raise _Failed(f"{target}: {type(exc).__name__}: {exc}") from exc
            out.extend(r.address for r in answer)
        return out

    async def run_once(self) -> float:
        """One resolution; applies a change; returns when to resolve next (monotonic)."""
        now = time.monotonic()
        try:
            found, ttl = await self.resolve()
        except _Failed as exc:
            self.failures += 1
            text = str(exc)
            if text != self.last_error:  # log each new kind of failure once
                self.last_error = text
                print(
                    f"backhaul: cluster {self.cluster}: endpoints_from {self.name}"
                    f" {self.rdtype} failed, endpoints kept: {text}",
                    file=sys.stderr,
                )
            return next_refresh(time.monotonic(), self.refresh, None)
        self.last_error = ""
        self.resolutions += 1
        now = time.monotonic()
        if found != self.current:
            self.current = found
            self.on_change(found, now)
        return next_refresh(now, self.refresh, ttl)

    async def run(self) -> None:
        """Resolve until cancelled."""
        while True:
            at = await self.run_once()
            await asyncio.sleep(max(0.0, at - time.monotonic()))
