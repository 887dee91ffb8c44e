"""The admin listener, run by the edge's control process (:mod:`backhaul.admin.process`):
the admin API with its OpenAPI document and browsable page (:mod:`backhaul.admin.api`),
``/metrics`` (Prometheus text exposition of every worker's counters, see
:mod:`backhaul.admin.metrics`) and ``/healthz``; and the machine-wide active health checks
(:mod:`backhaul.admin.checker`).
"""

from backhaul.admin.metrics import (
    CONTENT_TYPE,
    MetricsExposition,
    metrics_renderer,
    render_metrics,
)
from backhaul.admin.server import AdminServer, serve_admin, start_admin

__all__ = [
    "CONTENT_TYPE",
    "AdminServer",
    "MetricsExposition",
    "metrics_renderer",
    "render_metrics",
    "serve_admin",
    "start_admin",
]
