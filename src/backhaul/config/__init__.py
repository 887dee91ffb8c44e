"""The edge config: models, loading with precise errors, the default and quick mode.

    load_file(path) / load_text(text, source) -> EdgeConfig    (ConfigError on any problem)
    default_config() -> EdgeConfig                               the embedded default
    quick_config(to, listen) -> EdgeConfig                       ``serve --to --listen``
    json_schema() -> dict                                        the input shape, for editors

Durations, sizes and addresses are parsed once at load (see :mod:`backhaul.config.units`).
Each cluster's balancing, health and resilience keys carry what :mod:`backhaul.balance`'s
constructors take (the edge builds them: :mod:`backhaul.edge.settings`); this package imports
neither the balance package nor asyncio (the names both use are in
:mod:`backhaul.vocabulary`), and does no I/O beyond reading the config file.
"""

from __future__ import annotations

from typing import Any

from backhaul.config import units
from backhaul.config.defaults import DEFAULT_YAML, default_config, quick_config
from backhaul.config.load import load_file, load_text
from backhaul.config.model import (
    AccessLog,
    Admin,
    Backoff,
    CircuitBreakerSettings,
    Cluster,
    ClusterRetries,
    ClusterTimeouts,
    EdgeConfig,
    Endpoint,
    Forwarding,
    HashKey,
    HeaderMatch,
    HealthChecks,
    HttpHealthCheck,
    LeastRequestSettings,
    Listener,
    ListenerLimits,
    ListenerTimeouts,
    MaglevSettings,
    OutlierDetectionSettings,
    Pool,
    ProxyAction,
    RedirectAction,
    RespondAction,
    Retries,
    RetryBudgetSettings,
    RingHashSettings,
    Route,
    RouteLimits,
    RouteMatch,
    SlowStartSettings,
    Sticky,
)
from backhaul.config.units import (
    Address,
    format_duration,
    format_size,
    parse_address,
    parse_duration,
    parse_size,
)

__all__ = [
    "DEFAULT_YAML",
    "AccessLog",
    "Address",
    "Admin",
    "Backoff",
    "CircuitBreakerSettings",
    "Cluster",
    "ClusterRetries",
    "ClusterTimeouts",
    "EdgeConfig",
    "Endpoint",
    "Forwarding",
    "HashKey",
    "HeaderMatch",
    "HealthChecks",
    "HttpHealthCheck",
    "LeastRequestSettings",
    "Listener",
    "ListenerLimits",
    "ListenerTimeouts",
    "MaglevSettings",
    "OutlierDetectionSettings",
    "Pool",
    "ProxyAction",
    "RedirectAction",
    "RespondAction",
    "Retries",
    "RetryBudgetSettings",
    "RingHashSettings",
    "Route",
    "RouteLimits",
    "RouteMatch",
    "SlowStartSettings",
    "Sticky",
    "default_config",
    "format_duration",
    "format_size",
    "json_schema",
    "load_file",
    "load_text",
    "parse_address",
    "parse_duration",
    "parse_size",
    "quick_config",
    "units",
]

SCHEMA_ID = "https://backhaul.dev/schema/edge-config.json"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the YAML input, for editors and `config schema`."""
    schema = EdgeConfig.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "backhaul edge config",
        **{k: v for k, v in schema.items() if k != "title"},
    }
