"""The admin listener: ``/metrics`` (Prometheus text exposition of every worker's counters,
see :mod:`backhaul.admin.metrics`) and ``/healthz``, served by each worker on the admin
address (:func:`start_admin`).
"""

from backhaul.admin.metrics import (
    CONTENT_TYPE,
    MetricsExposition,
    metrics_renderer,
    render_metrics,
)
from backhaul.admin.server import AdminServer, start_admin

__all__ = [
    "CONTENT_TYPE",
    "AdminServer",
    "MetricsExposition",
    "metrics_renderer",
    "render_metrics",
    "start_admin",
]
