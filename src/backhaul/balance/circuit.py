"""Circuit breaking per cluster (Envoy's sense): caps on connections, pending requests and
concurrent requests. Past a cap the edge answers 503 at once instead of queueing, so one slow
cluster cannot take the whole edge down.

    if not breakers.requests.try_acquire():
        respond 503 problem+json with breakers.requests.overflow_detail(cluster_name)
    ...
    breakers.requests.release()          # exactly once, when the request ends
"""

from __future__ import annotations

from backhaul.errors import BackhaulError

__all__ = ["CircuitBreakers", "Limit", "LimitReleaseError"]


class LimitReleaseError(BackhaulError):
    """A limit released more often than acquired (a caller bug)."""


class Limit:
    """One counter with a cap. ``overflows_total`` counts refused acquisitions."""

    # Its fields are declared in circuit.pxd (a C type once compiled).

    def __init__(self, name: str, maximum: int, description: str) -> None:
        if maximum < 1:
            raise ValueError(f"{name}: found {maximum!r}, expected 1 or more")
        self.name = name
        self.maximum = maximum
        self.description = description
        self.active = 0
        self.overflows_total = 0

    def try_acquire(self) -> bool:
        """Count one more; False (an overflow, counted) when the cap is reached."""
        if self.active < self.maximum:
            self.active += 1
            return True
        self.overflows_total += 1
        return False

    def release(self) -> None:
        """Count one less."""
        if self.active <= 0:
            raise LimitReleaseError(f"circuit breaker {self.name} released more than acquired")
        self.active -= 1

    def overflow_detail(self, cluster: str) -> str:
        """The problem+json detail for an overflow."""
        return (
            f"cluster {cluster} has {self.active} {self.description}, its limit"
            f" (circuit_breakers.{self.name}: {self.maximum}); try again shortly"
        )

    def __repr__(self) -> str:
        return f"<Limit {self.name} {self.active}/{self.maximum}>"


class CircuitBreakers:
    """The caps of one cluster (per worker). Defaults are Envoy's: 1024 each."""

    # Its fields are declared in circuit.pxd (a C type once compiled).

    def __init__(
        self, max_connections: int = 1024, max_pending: int = 1024, max_requests: int = 1024
    ) -> None:
        self.connections = Limit("max_connections", max_connections, "upstream connections open")
        self.pending = Limit(
            "max_pending", max_pending, "requests waiting for an upstream connection"
        )
        self.requests = Limit("max_requests", max_requests, "requests in flight")

    def statistics(self) -> dict[str, tuple[int, int, int]]:
        """``{name: (active, maximum, overflows_total)}`` per limit."""
        return {
            limit.name: (limit.active, limit.maximum, limit.overflows_total)
            for limit in (self.connections, self.pending, self.requests)
        }
