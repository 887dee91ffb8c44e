"""The DHCPv4 server (RFC 2131/2132) with leases that survive a crash.

- :mod:`.lease`: a lease's states and its transition table (sans-IO);
- :mod:`.allocation`: the lease table and which address a client gets (sans-IO);
- :mod:`.responder`: request in, reply and leases to persist out (sans-IO);
- :mod:`.records`: A and PTR records for the DNS service, from the leases;
- :mod:`.metrics`: the Prometheus text of the service's counters;
- :mod:`.service`: the driver (sockets, group commit to the journal in
  :mod:`backhaul.state.dhcp_leases`, logs).

``python -m backhaul.services.dhcp --config-fd FD`` runs the service from the JSON of a
validated ``dhcp:`` section (how ``backhaul serve`` starts it next to the edge).
"""

from __future__ import annotations

from backhaul.services.dhcp.lease import Lease, LeaseEvent, LeaseState, LeaseTransitionError
from backhaul.services.dhcp.records import dns_records

__all__ = ["Lease", "LeaseEvent", "LeaseState", "LeaseTransitionError", "dns_records"]
