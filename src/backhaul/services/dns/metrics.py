"""The DNS service's statistics as Prometheus text (exposition format 0.0.4).

Rendered from the plain statistics of :meth:`~backhaul.services.dns.server.DnsServer.
statistics`, added up over the DNS workers (:mod:`backhaul.state.dns_counters`): served by
the DNS server's own ``dns.metrics`` address and, when the edge runs an admin listener next
to the DNS service, appended to the admin ``/metrics``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LATENCY_BUCKETS", "render_dns_metrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def render_dns_metrics(s: dict[str, Any]) -> str:
    """The exposition text of statistics ``s``."""
    cache = s["cache"]
    out: list[str] = []
    labelled = (
        ("queries_total", "qtype", s["by_type"], "DNS queries answered, by type"),
        ("responses_total", "rcode", s["by_rcode"], "DNS responses by rcode"),
        ("answers_total", "source", s["by_source"], "Answers by source (zone, cache...)"),
        ("dropped_total", "reason", s["drops"], "Queries dropped, by reason"),
        (
            "upstream_up",
            "upstream",
            {name: u["up"] for name, u in s["upstreams"].items()},
            "1 when the upstream is not marked down",
        ),
    )
    for name, label, values, help_text in labelled:
        kind = "gauge" if name == "upstream_up" else "counter"
        out += [f"# HELP backhaul_dns_{name} {help_text}", f"# TYPE backhaul_dns_{name} {kind}"]
        for key, value in sorted(values.items()):
            out.append(f'backhaul_dns_{name}{{{label}="{key or "none"}"}} {value}')
    scalars = (
        ("fast_path_total", s["fast_hits"], "Answers sent from kept reply bytes"),
        ("cache_hits_total", cache["hits"], "Forwarder cache hits"),
        ("cache_misses_total", cache["misses"], "Forwarder cache misses"),
        ("cache_stale_total", cache["stale_hits"], "Stale answers served (RFC 8767)"),
        ("cache_entries", cache["entries"], "Forwarder cache entries"),
        ("cache_bytes", cache["bytes"], "Forwarder cache size in bytes"),
        ("upstream_queries_total", s["upstream_queries"], "Queries sent upstream"),
        ("upstream_failures_total", s["upstream_failures"], "Upstream tries that failed"),
        ("single_flight_joined_total", s["single_flight_joined"], "Misses that shared one"),
        ("reloads_total", s["reloads"], "Zone data reloads"),
        ("reload_errors_total", s["reload_errors"], "Reloads that kept the old data"),
    )
    for name, value, help_text in scalars:
        kind = "counter" if name.endswith("_total") else "gauge"
        out += [
            f"# HELP backhaul_dns_{name} {help_text}",
            f"# TYPE backhaul_dns_{name} {kind}",
            f"backhaul_dns_{name} {value}",
        ]
    name = "backhaul_dns_upstream_latency_seconds"
    out += [f"# HELP {name} Upstream answer latency", f"# TYPE {name} histogram"]
    total = 0
    for bound, n in zip((*LATENCY_BUCKETS, float("inf")), s["latency"], strict=True):
        total += n
        le = "+Inf" if bound == float("inf") else f"{bound:g}"
        out.append(f'{name}_bucket{{le="{le}"}} {total}')
    out.append(f"{name}_sum {s['latency_sum']:.6f}")
    out.append(f"{name}_count {total}")
    return "\n".join(out) + "\n"
