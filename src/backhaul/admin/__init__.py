"""The admin listener, run by the edge's control process (:mod:`backhaul.admin.process`):
the admin API with its OpenAPI document and browsable page (:mod:`backhaul.admin.api`),
``/metrics`` (Prometheus text exposition of every worker's counters, see
:mod:`backhaul.admin.metrics`) and ``/healthz``; and the machine-wide active health checks
(:mod:`backhaul.admin.checker`).

The names below are loaded on first use: the supervisor imports
:mod:`backhaul.admin.process` to fork the control process, and stays without asyncio and
the HTTP server (its memory is inherited by every worker it forks).
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # without importing typing: the supervisor imports this package (RSS)
if TYPE_CHECKING:
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

_HOME = {
    "CONTENT_TYPE": "backhaul.admin.metrics",
    "MetricsExposition": "backhaul.admin.metrics",
    "metrics_renderer": "backhaul.admin.metrics",
    "render_metrics": "backhaul.admin.metrics",
    "AdminServer": "backhaul.admin.server",
    "serve_admin": "backhaul.admin.server",
    "start_admin": "backhaul.admin.server",
}


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'backhaul.admin' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
