"""The balance package's objects of a cluster and of a proxy route, built from the config.

Each cluster's balancing, health and resilience blocks carry what the balance constructors
take under the YAML's names; these two build the objects that need more than a rename. They
read attributes only, so they take the runtime config (:mod:`backhaul.edge.runtime_config`,
what a worker holds) and the validated model alike (:func:`backhaul.edge.settings.runtime`
builds them once from the model, so that a config that loads always builds in the edge).
"""

from __future__ import annotations

from typing import Any

from backhaul.balance import (
    BalanceSettings,
    HealthThresholds,
    OutlierDetection,
    RetryPolicy,
    SlowStart,
)

__all__ = ["balance_settings", "retry_policy", "route_retry_policy"]


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


def route_retry_policy(proxy: Any, cluster: Any) -> RetryPolicy:
    """The effective :class:`RetryPolicy` of a proxy route: its own ``retries`` (merged
    with its cluster's at load) or its cluster's."""
    retries = proxy.retries if proxy.retries is not None else cluster.retries
    return retry_policy(retries, proxy.retry_non_idempotent)
