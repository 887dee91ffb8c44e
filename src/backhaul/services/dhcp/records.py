"""DNS records for the DHCP leases: what the DNS service publishes (sans-IO).

:func:`dns_records` turns the bound leases that carry a host name (option 12 or 81, or the
reservation's) into an A record ``<host>.<zone>`` and a PTR record in ``in-addr.arpa``, as
dnspython rrsets. The TTL is the lease's remaining time, at most ``max_ttl``. Two clients
with one host name: the lease granted last wins (as dnsmasq does), so a name never has two
addresses from DHCP.

The DNS service calls it with the leases it reads from the store, e.g.
``dns_records(read_leases(state_dir), "lab.example", time.time())``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

from backhaul.state.dhcp_leases import LeaseRecord

__all__ = ["dns_records"]


def dns_records(
    leases: Iterable[LeaseRecord], zone: str, now: float, *, max_ttl: int = 300
) -> list[dns.rrset.RRset]:
    """A and PTR rrsets for the bound, unexpired, named leases (see the module docstring)."""
    origin = dns.name.from_text(zone)
    newest: dict[str, LeaseRecord] = {}
    for lease in leases:
        if lease.state != "bound" or not lease.hostname or lease.expires <= now:
            continue
        seen = newest.get(lease.hostname)
        if seen is None or lease.granted > seen.granted:
            newest[lease.hostname] = lease
    out: list[dns.rrset.RRset] = []
    for hostname, lease in sorted(newest.items()):
        ttl = max(1, min(max_ttl, int(lease.expires - now)))
        name = dns.name.from_text(hostname, origin)
        address = str(ipaddress.IPv4Address(lease.address))
        out.append(dns.rrset.from_text(name, ttl, dns.rdataclass.IN, dns.rdatatype.A, address))
        out.append(
            dns.rrset.from_text(
                dns.reversename.from_address(address),
                ttl,
                dns.rdataclass.IN,
                dns.rdatatype.PTR,
                name.to_text(),
            )
        )
    return out
