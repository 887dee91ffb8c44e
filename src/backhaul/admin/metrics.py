"""``/metrics``: the Prometheus text exposition (format 0.0.4) of every worker's counters.

The numbers come from :class:`backhaul.state.shared_counters.SharedCounters` (all worker
slots added up); this module only writes them out. Label strings are built once per layout,
so a scrape costs one pass over the values.

Families (Prometheus naming: ``_total`` for counters, base units ``_seconds``/``_bytes``)::

    backhaul_downstream_requests_total{listener,route,cluster,status_class}     counter
    backhaul_downstream_request_duration_seconds{listener,route}                histogram
    backhaul_downstream_received_bytes_total{listener,route}                     counter
    backhaul_downstream_sent_bytes_total{listener,route}                         counter
    backhaul_downstream_connections_active{listener}                             gauge
    backhaul_downstream_connections_parked{listener}                             gauge
    backhaul_upstream_request_duration_seconds{cluster}                          histogram
    backhaul_endpoint_health{cluster,endpoint,state}                             gauge
    backhaul_endpoint_ejections_total{cluster,endpoint}                          counter
    backhaul_retries_total{cluster}                                              counter
    backhaul_retry_budget_exhausted_total{cluster}                               counter
    backhaul_circuit_breaker_overflows_total{cluster,breaker}                    counter
    backhaul_cluster_panic{cluster}                                              gauge
    backhaul_tls_handshakes_total{listener}                                      counter
    backhaul_tls_handshake_failures_total{listener,reason}                       counter
    backhaul_workers                                                             gauge
    backhaul_build_info{version,python}                                          gauge
    backhaul_config_generation                                                   gauge
    backhaul_config_last_reload_timestamp_seconds                                gauge
    backhaul_config_last_reload_success                                          gauge
    backhaul_cluster_discovered_endpoints{cluster}                               gauge
    backhaul_cluster_discovery_left_out{cluster}                                 gauge
    backhaul_cluster_discovery_resolutions_total{cluster}                        counter
    backhaul_cluster_discovery_failures_total{cluster}                           counter

The ``backhaul_cluster_discover*`` families describe the clusters whose endpoints come from
DNS (:class:`~backhaul.state.discovered_endpoints.DiscoveredEndpoints`: the set the control
process published, the endpoints the last answer had beyond ``max_endpoints``, resolutions).
The three ``backhaul_config_*`` families come from the supervisor's
:class:`~backhaul.state.reload_status.ReloadStatus` (when the renderer is given one). The
counters above belong to the config generation in effect: a reload that changes the
listeners, routes, clusters or endpoints starts them again from zero (a new layout); one
that leaves those names alone keeps counting, unless the generation before it still drains.

``route=""`` and ``cluster=""`` stand for "no route matched" and "no cluster" (a redirect, a
direct answer, a request refused before routing). Every worker has its own view of endpoint
health and panic, so ``backhaul_endpoint_health`` is the share of live workers that see the
endpoint in that state: 1 for the current state and 0 for the others when they agree (the
usual case), fractions while they disagree. ``backhaul_cluster_panic`` is likewise the share
of workers in panic for that cluster.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

from backhaul import __version__
from backhaul.state import extra_metrics
from backhaul.state.discovered_endpoints import DiscoveredEndpoints
from backhaul.state.dns_counters import shared_slots
from backhaul.state.reload_status import ReloadStatus
from backhaul.state.shared_counters import (
    BREAKERS,
    HEALTH_STATES,
    STATUS_CLASSES,
    TLS_HANDSHAKE_FAILURES,
    Layout,
    SharedCounters,
    Totals,
    WorkerMetrics,
)

__all__ = [
    "CONTENT_TYPE",
    "MetricsExposition",
    "metrics_renderer",
    "render_discovery",
    "render_metrics",
    "render_reload_status",
]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

_P = "backhaul_"


def _escape(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**pairs: str) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items())


def _num(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _le(bound: float) -> str:
    return repr(float(bound))


def _help(lines: list[str], name: str, kind: str, text: str) -> None:
    lines.append(f"# HELP {name} {text}")
    lines.append(f"# TYPE {name} {kind}")


class MetricsExposition:
    """Writes :class:`Totals` of one :class:`Layout` in the text format (label strings
    precomputed)."""

    def __init__(self, layout: Layout, version: str = __version__) -> None:
        self.layout = layout
        keys = list(range(layout.keys))
        self._keys = keys
        self._key_lr: dict[int, str] = {}
        self._key_lrc: dict[int, str] = {}
        for k in keys:
            listener, route, cluster = layout.series_names(k)
            self._key_lr[k] = _labels(listener=listener, route=route)
            self._key_lrc[k] = _labels(listener=listener, route=route, cluster=cluster)
        self._les = [_le(b) for b in layout.buckets] + ["+Inf"]
        self._clusters = [_labels(cluster=c) for c in layout.clusters]
        self._endpoints: list[tuple[int, str]] = []  # (cluster index, labels)
        for ci, eps in enumerate(layout.endpoints):
            for label in eps:
                self._endpoints.append((ci, _labels(cluster=layout.clusters[ci], endpoint=label)))
        self._listeners = [_labels(listener=n) for n in layout.listeners]
        self._build = _labels(version=version, python=platform.python_version())

    def render(self, totals: Totals) -> bytes:
        """The whole exposition as bytes (UTF-8)."""
        layout = self.layout
        ints = totals.ints
        floats = totals.floats
        f = layout.int_fields
        fl = layout.float_fields
        nb = len(layout.buckets) + 1
        les = self._les
        out: list[str] = []

        name = _P + "downstream_requests_total"
        _help(out, name, "counter", "Downstream requests answered, by status class.")
        base = f["requests"][0]
        for k in self._keys:
            lab = self._key_lrc[k]
            at = base + k * 5
            for c, cls in enumerate(STATUS_CLASSES):
                out.append(f'{name}{{{lab},status_class="{cls}"}} {ints[at + c]}')

        name = _P + "downstream_request_duration_seconds"
        _help(
            out,
            name,
            "histogram",
            "Time from the request head to the end of the response, in seconds.",
        )
        base = f["duration_buckets"][0]
        sums = fl["duration_sum"][0]
        for k in self._keys:
            lab = self._key_lr[k]
            self._histogram(out, name, lab, ints, base + k * nb, floats[sums + k], les)

        for key, family, text in (
            ("bytes_in", "downstream_received_bytes_total", "received from clients"),
            ("bytes_out", "downstream_sent_bytes_total", "sent to clients"),
        ):
            name = _P + family
            _help(out, name, "counter", f"Body bytes {text} (as in the access log).")
            base = f[key][0]
            for k in self._keys:
                out.append(f"{name}{{{self._key_lr[k]}}} {ints[base + k]}")

        name = _P + "downstream_connections_active"
        _help(out, name, "gauge", "Open downstream connections.")
        base = f["connections"][0]
        for i, lab in enumerate(self._listeners):
            out.append(f"{name}{{{lab}}} {ints[base + i]}")
        name = _P + "downstream_connections_parked"
        _help(out, name, "gauge", "Idle keep-alive connections parked without a transport.")
        base = f["connections_parked"][0]
        for i, lab in enumerate(self._listeners):
            out.append(f"{name}{{{lab}}} {ints[base + i]}")

        name = _P + "upstream_request_duration_seconds"
        _help(
            out,
            name,
            "histogram",
            "Time from sending a request upstream to the end of its response, in seconds.",
        )
        base = f["upstream_buckets"][0]
        sums = fl["upstream_sum"][0]
        for ci, lab in enumerate(self._clusters):
            self._histogram(out, name, lab, ints, base + ci * nb, floats[sums + ci], les)

        name = _P + "endpoint_health"
        _help(
            out,
            name,
            "gauge",
            "Share of workers that see the endpoint in this health state (1 when all agree).",
        )
        workers = totals.workers
        for e, (_, lab) in enumerate(self._endpoints):
            counts = totals.health[e]
            for s, state in enumerate(HEALTH_STATES):
                value = counts[s] / workers if workers else 0
                out.append(f'{name}{{{lab},state="{state}"}} {_num(value)}')

        name = _P + "endpoint_ejections_total"
        _help(out, name, "counter", "Ejections of the endpoint by outlier detection.")
        base = f["ejections"][0]
        for e, (_, lab) in enumerate(self._endpoints):
            out.append(f"{name}{{{lab}}} {ints[base + e]}")

        for key, family, text in (
            ("retries", "retries_total", "Retries sent to the cluster."),
            (
                "budget_exhausted",
                "retry_budget_exhausted_total",
                "Retries not sent because the cluster's retry budget was spent.",
            ),
        ):
            name = _P + family
            _help(out, name, "counter", text)
            base = f[key][0]
            for ci, lab in enumerate(self._clusters):
                out.append(f"{name}{{{lab}}} {ints[base + ci]}")

        name = _P + "circuit_breaker_overflows_total"
        _help(out, name, "counter", "Requests refused at once by a circuit breaker (503).")
        base = f["overflows"][0]
        for ci, lab in enumerate(self._clusters):
            for b, kind in enumerate(BREAKERS):
                value = ints[base + ci * len(BREAKERS) + b]
                out.append(f'{name}{{{lab},breaker="{kind}"}} {value}')

        name = _P + "cluster_panic"
        _help(
            out,
            name,
            "gauge",
            "Share of workers balancing the cluster in panic mode (too few healthy endpoints).",
        )
        for ci, lab in enumerate(self._clusters):
            value = totals.panic[ci] / workers if workers else 0
            out.append(f"{name}{{{lab}}} {_num(value)}")

        for key, family, text in (
            (
                "access_log_dropped",
                "access_log_dropped_lines_total",
                "Access-log lines dropped because the writer fell behind.",
            ),
            (
                "access_log_write_errors",
                "access_log_write_errors_total",
                "Access-log lines lost to write errors (disk full, closed pipe).",
            ),
        ):
            name = _P + family
            _help(out, name, "counter", text)
            out.append(f"{name} {ints[f[key][0]]}")
        tls_names = layout.tls_listeners
        if tls_names:
            nr = len(TLS_HANDSHAKE_FAILURES) + 1
            base = f["tls_handshakes"][0]
            name = _P + "tls_handshakes_total"
            _help(out, name, "counter", "Downstream TLS handshakes completed.")
            for t, listener in enumerate(tls_names):
                out.append(f"{name}{{{_labels(listener=listener)}}} {ints[base + t * nr + nr - 1]}")
            name = _P + "tls_handshake_failures_total"
            _help(out, name, "counter", "Downstream TLS handshakes that failed, by reason.")
            for t, listener in enumerate(tls_names):
                lab = _labels(listener=listener)
                for r, reason in enumerate(TLS_HANDSHAKE_FAILURES):
                    out.append(f'{name}{{{lab},reason="{reason}"}} {ints[base + t * nr + r]}')

        name = _P + "workers"
        _help(out, name, "gauge", "Worker processes alive (flushed their counters lately).")
        out.append(f"{name} {workers}")

        name = _P + "build_info"
        _help(out, name, "gauge", "Version of backhaul and of Python; always 1.")
        out.append(f"{name}{{{self._build}}} 1")
        out.append("")
        return "\n".join(out).encode()

    @staticmethod
    def _histogram(
        out: list[str],
        name: str,
        lab: str,
        ints: list[int],
        at: int,
        total: float,
        les: list[str],
    ) -> None:
        running = 0
        for i, le in enumerate(les):
            running += ints[at + i]
            out.append(f'{name}_bucket{{{lab},le="{le}"}} {running}')
        out.append(f"{name}_sum{{{lab}}} {_num(total)}")
        out.append(f"{name}_count{{{lab}}} {running}")


def render_metrics(layout: Layout, totals: Totals) -> bytes:
    """The text exposition of ``totals`` (one-off; keep a :class:`MetricsExposition` to
    render repeatedly)."""
    return MetricsExposition(layout).render(totals)


def render_reload_status(status: ReloadStatus) -> bytes:
    """The ``backhaul_config_*`` families from the supervisor's reload status."""
    snap = status.snapshot()
    out: list[str] = []
    for family, value, text in (
        (
            "config_generation",
            snap.generation,
            "Config generation in effect (1 at start, +1 per reload applied).",
        ),
        (
            "config_last_reload_timestamp_seconds",
            snap.last_attempt_unix,
            "When the last reload attempt ended (Unix time; 0 before any).",
        ),
        (
            "config_last_reload_success",
            1 if snap.last_ok else 0,
            "Whether the last reload attempt applied or kept a valid config (1) or failed (0).",
        ),
    ):
        _help(out, _P + family, "gauge", text)
        out.append(f"{_P}{family} {_num(value)}")
    out.append("")
    return "\n".join(out).encode()


def render_discovery(sets: DiscoveredEndpoints) -> bytes:
    """The ``backhaul_cluster_discover*`` families (nothing without such clusters)."""
    if not sets.clusters:
        return b""
    found = [(name, sets.read(c)) for c, (name, _) in enumerate(sets.clusters)]
    out: list[str] = []
    for family, kind, text, value in (
        (
            "cluster_discovered_endpoints",
            "gauge",
            "Endpoints of the cluster found through DNS (the set every worker serves).",
            lambda f: len(f.endpoints),
        ),
        (
            "cluster_discovery_left_out",
            "gauge",
            "Endpoints of the last DNS answer left out: beyond endpoints_from.max_endpoints.",
            lambda f: f.over_limit,
        ),
        (
            "cluster_discovery_resolutions_total",
            "counter",
            "Successful resolutions of the cluster's endpoints_from (once per machine).",
            lambda f: f.resolutions,
        ),
        (
            "cluster_discovery_failures_total",
            "counter",
            "Failed resolutions of the cluster's endpoints_from (the endpoints were kept).",
            lambda f: f.failures,
        ),
    ):
        _help(out, _P + family, kind, text)
        for name, f in found:
            out.append(f"{_P}{family}{{{_labels(cluster=name)}}} {_num(value(f))}")
    out.append("")
    return "\n".join(out).encode()


def metrics_renderer(
    store: SharedCounters,
    own: WorkerMetrics | None = None,
    clock: Callable[[], float] = time.monotonic,
    reload: ReloadStatus | None = None,
    discovery: DiscoveredEndpoints | None = None,
) -> Callable[[], bytes]:
    """The ``render`` callable for :func:`backhaul.admin.server.start_admin`: flushes this
    worker's own counters (``own``) so they are current, then adds up every slot;
    ``reload`` adds the config generation and the last reload's outcome, ``discovery`` the
    clusters whose endpoints come from DNS."""
    exposition = MetricsExposition(store.layout)

    def render() -> bytes:
        if own is not None:
            own.flush()
        text = exposition.render(store.totals(clock()))
        dns = shared_slots()
        if dns is not None:  # the DNS service runs next to this edge: its figures too
            from backhaul.services.dns.metrics import render_dns_metrics

            text += render_dns_metrics(dns.totals()).encode()
        if reload is not None:
            text += render_reload_status(reload)
        if discovery is not None:
            text += render_discovery(discovery)
        # + what sibling processes publish (the DHCP service, see state/extra_metrics.py)
        return text + extra_metrics.collect()

    return render
