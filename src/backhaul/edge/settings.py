"""A validated config in the form the running edge reads it: frozen, typed dataclasses.

The config is validated once, with pydantic, by the process that starts or reloads the edge
(``backhaul serve``, the reload validator :mod:`backhaul.edge.candidate`). What the
supervisor and its workers then need is only the values, so :func:`freeze` turns the
validated model into the dataclasses of :mod:`backhaul.edge.runtime_config` (generated from
the models: same names, same fields, units already parsed; each cluster and proxy route also
carries its balance and retry policy objects) and pickles them; :func:`thaw` unpickles them.
The processes that serve traffic therefore never import pydantic, the CLI or the toolbox,
which keeps each of them small (see PERFORMANCE.md: RSS with 10,000 idle connections), and
mypy checks every field they read.
"""

from __future__ import annotations

import pickle
from typing import Any

from backhaul.balance import (
    BalanceSettings,
    HealthThresholds,
    OutlierDetection,
    RetryPolicy,
    SlowStart,
)
from backhaul.edge import runtime_config as rt
from backhaul.errors import ConfigError
from backhaul.net.socket_address import SocketAddress

__all__ = ["SocketAddress", "balance_settings", "freeze", "retry_policy", "runtime", "thaw"]

_LEFT_OUT = {"EdgeConfig": ("dhcp",)}  # the DHCP service validates its own section


def retry_policy(retries: Any, non_idempotent: bool = False) -> RetryPolicy:
    """The :class:`~backhaul.balance.RetryPolicy` of a ``retries`` block (a route's
    ``proxy.retries`` or its cluster's; validated or runtime config: attributes only),
    ``non_idempotent`` from the route's ``retry_non_idempotent``."""
    return RetryPolicy(
        max_retries=retries.max_retries,
        connect_failure="connect-failure" in retries.retry_on,
        reset="reset" in retries.retry_on,
        statuses=frozenset(x for x in retries.retry_on if isinstance(x, int)),
        non_idempotent=non_idempotent,
        per_try_timeout=retries.per_try_timeout,
        backoff_base=retries.backoff.base,
        backoff_max=retries.backoff.max,
    )


def balance_settings(cluster: Any) -> BalanceSettings:
    """The :class:`~backhaul.balance.BalanceSettings` of ``cluster`` (what ``make_balancer``
    takes besides the endpoints; validated or runtime config: attributes only)."""
    checks = cluster.health_checks
    outlier = cluster.outlier_detection
    return BalanceSettings(
        policy=cluster.policy,
        health=HealthThresholds(
            healthy_threshold=checks.healthy_threshold if checks else 2,
            unhealthy_threshold=checks.unhealthy_threshold if checks else 3,
        ),
        outlier=None
        if outlier is None
        else OutlierDetection(
            consecutive_5xx=outlier.consecutive_5xx,
            consecutive_connect_failures=outlier.consecutive_connect_failures,
            base_ejection_time=outlier.base_ejection_time,
            max_ejection_time=outlier.max_ejection_time,
            max_ejection_percent=outlier.max_ejection_percent,
            decay_interval=outlier.decay_interval,
        ),
        slow_start=SlowStart(
            window=cluster.slow_start.window,
            min_weight_percent=cluster.slow_start.min_weight_percent,
        ),
        panic_threshold=cluster.panic_threshold,
        virtual_nodes=cluster.ring_hash.virtual_nodes,
        maglev_table_size=cluster.maglev.table_size,
        latency_decay=cluster.least_request.latency_decay,
    )


def runtime(config: Any, source: str = "<config>") -> rt.EdgeConfig:
    """The runtime form of a validated :class:`backhaul.config.EdgeConfig`. The config's
    own checks cover what the balance classes refuse; should one be missing, the refusal is a
    :class:`ConfigError` naming the cluster (``source``: the file), not a crash."""
    clusters = config.clusters
    for name, cluster in clusters.items():
        try:
            balance_settings(cluster)
            retry_policy(cluster.retries)
        except ValueError as exc:
            path = f"clusters.{name}"
            raise ConfigError(source, [(path, f"refused by the balancer: {exc}")]) from exc

    def convert(value: Any) -> Any:
        model = type(value)
        fields = getattr(model, "model_fields", None)
        if fields is not None:  # a pydantic model: its runtime class, field by field
            name = model.__name__
            left_out = _LEFT_OUT.get(name, ())
            kwargs = {f: convert(getattr(value, f)) for f in fields if f not in left_out}
            if name == "Cluster":
                kwargs["balance"] = balance_settings(value)
                kwargs["retry"] = retry_policy(value.retries)
            elif name == "ProxyAction":
                cluster = clusters[value.cluster]
                retries = value.retries if value.retries is not None else cluster.retries
                kwargs["retry_policy"] = retry_policy(retries, value.retry_non_idempotent)
            return rt.CLASSES[name](**kwargs)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, tuple) and hasattr(value, "_fields") and hasattr(value, "port"):
            return SocketAddress(str(value[0]), int(value[1]))
        if isinstance(value, list | tuple):
            return tuple(convert(v) for v in value)
        if isinstance(value, int | float | str | bytes) or value is None:
            return value
        raise TypeError(f"cannot freeze a config value of type {type(value).__name__}")

    result = convert(config)
    assert isinstance(result, rt.EdgeConfig)
    return result


def freeze(config: Any, source: str = "<config>") -> bytes:
    """Bytes of a validated config (a pydantic model) in its runtime form."""
    return pickle.dumps(runtime(config, source), protocol=5)


def thaw(data: bytes) -> rt.EdgeConfig:
    """The runtime config of :func:`freeze`'s bytes."""
    config = pickle.loads(data)  # our own bytes, handed from parent to child
    if not isinstance(config, rt.EdgeConfig):
        raise TypeError(f"not a frozen edge config: {type(config).__name__}")
    return config
