"""The DHCP service's Prometheus text exposition (format 0.0.4), from its counters.

Families::

    backhaul_dhcp_received_total{type}          counter   requests by message type
    backhaul_dhcp_replies_total{type}           counter   offer, ack, nak (inform acks in ack)
    backhaul_dhcp_declines_total                counter
    backhaul_dhcp_releases_total                counter
    backhaul_dhcp_dropped_total{reason}         counter   malformed, not_ethernet, no_subnet...
    backhaul_dhcp_pool_addresses{subnet}        gauge     addresses in the subnet's pools
    backhaul_dhcp_pool_used{subnet}             gauge     of which offered, bound or declined
    backhaul_dhcp_store_commits_total           counter   fdatasync calls of the lease journal
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["CONTENT_TYPE", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _family(lines: list[str], name: str, kind: str, text: str) -> None:
    lines.append(f"# HELP {name} {text}")
    lines.append(f"# TYPE {name} {kind}")


def render(stats: Mapping[str, int], pools: Mapping[str, tuple[int, int]]) -> bytes:
    """``stats``: the service's counters; ``pools``: subnet -> (addresses, used)."""
    lines: list[str] = []
    _family(lines, "backhaul_dhcp_received_total", "counter", "DHCP requests received by type")
    for kind in ("discover", "request", "decline", "release", "inform"):
        value = stats.get(f"received_{kind}", 0)
        lines.append(f'backhaul_dhcp_received_total{{type="{kind}"}} {value}')
    _family(lines, "backhaul_dhcp_replies_total", "counter", "DHCP replies decided by type")
    for kind, key in (("offer", "offers"), ("ack", "acks"), ("nak", "naks")):
        value = stats.get(key, 0) + (stats.get("informs", 0) if kind == "ack" else 0)
        lines.append(f'backhaul_dhcp_replies_total{{type="{kind}"}} {value}')
    _family(lines, "backhaul_dhcp_declines_total", "counter", "addresses declined (quarantined)")
    lines.append(f"backhaul_dhcp_declines_total {stats.get('declines', 0)}")
    _family(lines, "backhaul_dhcp_releases_total", "counter", "leases released by clients")
    lines.append(f"backhaul_dhcp_releases_total {stats.get('releases', 0)}")
    _family(lines, "backhaul_dhcp_dropped_total", "counter", "requests dropped, by reason")
    for key in sorted(stats):
        if key.startswith("dropped_"):
            lines.append(f'backhaul_dhcp_dropped_total{{reason="{key[8:]}"}} {stats[key]}')
    _family(lines, "backhaul_dhcp_pool_addresses", "gauge", "addresses in the subnet's pools")
    for subnet, (size, _) in sorted(pools.items()):
        lines.append(f'backhaul_dhcp_pool_addresses{{subnet="{subnet}"}} {size}')
    _family(lines, "backhaul_dhcp_pool_used", "gauge", "pool addresses offered, bound or declined")
    for subnet, (_, used) in sorted(pools.items()):
        lines.append(f'backhaul_dhcp_pool_used{{subnet="{subnet}"}} {used}')
    _family(lines, "backhaul_dhcp_store_commits_total", "counter", "lease journal syncs")
    lines.append(f"backhaul_dhcp_store_commits_total {stats.get('commits', 0)}")
    return ("\n".join(lines) + "\n").encode()
