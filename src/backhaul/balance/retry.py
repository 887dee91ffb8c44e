"""Retries: whether to try again, how long to wait first, and a budget so that retries never
multiply an outage.

The edge, when a try fails::

    decision = policy.decide(method, tries, outcome, replayable=...)
    if decision.retry and budget.try_acquire(active_requests):
        ep = balancer.pick_excluding(tried, key)        # a different endpoint
        if ep is not None:
            wait policy.backoff(tries, rng.random), then try ep with policy.per_try_timeout
            ... budget.release() when that try ends
        else:
            budget.release()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from backhaul.balance.balancer import CONNECT_FAILURE, RESET, TIMEOUT
from backhaul.errors import BackhaulError

__all__ = [
    "IDEMPOTENT_METHODS",
    "RetryBudget",
    "RetryBudgetError",
    "RetryDecision",
    "RetryPolicy",
]

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""RFC 9110 section 9.2.2."""


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Whether to retry, and why (or why not), for the log."""

    retry: bool
    reason: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed try is tried again, on another endpoint.

    Retried: a connect failure (the request was never sent, so any method), a reset before
    the response head (``reset``), a per-try timeout (when 504 is in ``statuses``), a
    response whose status is in ``statuses``. All but connect failures only for idempotent
    methods (RFC 9110 9.2.2) unless ``non_idempotent`` (a route that knows its POSTs are
    safe). At most ``max_retries`` retries; each waits a full-jitter backoff first.
    """

    max_retries: int = 2
    connect_failure: bool = True
    reset: bool = True
    statuses: frozenset[int] = frozenset({502, 503, 504})
    non_idempotent: bool = False
    per_try_timeout: float | None = None
    backoff_base: float = 0.025
    backoff_max: float = 0.25

    def __post_init__(self) -> None:
        if not 0 <= self.max_retries <= 10:
            raise ValueError(f"max_retries: found {self.max_retries!r}, expected 0 to 10")
        for status in self.statuses:
            if not 500 <= status <= 599:
                raise ValueError(
                    f"statuses: found {status!r}, expected 5xx statuses such as 502, 503, 504"
                )
        if self.per_try_timeout is not None and not self.per_try_timeout > 0:
            raise ValueError(
                f"per_try_timeout: found {self.per_try_timeout!r}, expected seconds greater than 0"
            )
        if not 0 < self.backoff_base <= self.backoff_max:
            raise ValueError(
                f"backoff: found base {self.backoff_base!r} and max {self.backoff_max!r},"
                " expected 0 < base <= max"
            )

    def decide(
        self, method: str, tries: int, outcome: int, *, replayable: bool = True
    ) -> RetryDecision:
        """After ``tries`` tries (1 after the first) ended with ``outcome`` (a status, or
        ``CONNECT_FAILURE``/``RESET``/``TIMEOUT``): try again? ``replayable`` is False when
        the request body cannot be sent again (it was streamed and not kept)."""
        if outcome == CONNECT_FAILURE:
            if not self.connect_failure:
                return RetryDecision(False, "retries on connect failure are off")
            what = "connect failure"
        elif outcome == RESET:
            if not self.reset:
                return RetryDecision(False, "retries on reset are off")
            what = "reset before the response"
        elif outcome == TIMEOUT:
            if 504 not in self.statuses:
                return RetryDecision(False, "retries on timeout (504) are off")
            what = "per-try timeout"
        elif outcome in self.statuses:
            what = f"status {outcome}"
        else:
            return RetryDecision(False, f"outcome {outcome} is not retried")
        if tries > self.max_retries:
            return RetryDecision(
                False, f"{what}; retries exhausted ({tries - 1} of {self.max_retries})"
            )
        if not replayable:
            return RetryDecision(False, f"{what}; the request body cannot be replayed")
        if (
            outcome != CONNECT_FAILURE
            and not self.non_idempotent
            and method.upper() not in IDEMPOTENT_METHODS
        ):
            return RetryDecision(
                False,
                f"{what}; {method} is not idempotent (a route may allow it with"
                " retries.non_idempotent: true)",
            )
        return RetryDecision(True, f"{what}; retry {tries} of {self.max_retries}")

    def backoff(self, retry: int, random: Callable[[], float]) -> float:
        """Seconds to wait before retry number ``retry`` (1, 2, ...): "full jitter", uniform
        in ``[0, min(backoff_max, backoff_base * 2**(retry-1)))``."""
        ceiling = min(self.backoff_max, self.backoff_base * (2.0 ** max(retry - 1, 0)))
        return random() * ceiling


class RetryBudgetError(BackhaulError):
    """``RetryBudget.release()`` without a matching ``try_acquire()`` (a caller bug)."""


class RetryBudget:
    """Retries in flight stay within ``budget_percent`` of the cluster's active requests,
    but ``min_retry_concurrency`` are always allowed (Envoy's retry budget), so a failing
    cluster sees at most ~1.2x its load, not ``(1 + max_retries)``x."""

    __slots__ = (
        "active",
        "budget_percent",
        "exhausted_total",
        "min_retry_concurrency",
        "retries_total",
    )

    def __init__(self, budget_percent: float = 20.0, min_retry_concurrency: int = 3) -> None:
        if not 0.0 <= budget_percent <= 100.0:
            raise ValueError(
                f"budget_percent: found {budget_percent!r}, expected a percentage 0 to 100"
            )
        if min_retry_concurrency < 0:
            raise ValueError(
                f"min_retry_concurrency: found {min_retry_concurrency!r}, expected 0 or more"
            )
        self.budget_percent = budget_percent
        self.min_retry_concurrency = min_retry_concurrency
        self.active = 0
        """Retries in flight (acquired, not yet released)."""
        self.retries_total = 0
        self.exhausted_total = 0
        """Retries refused because the budget was spent (a metric)."""

    def limit(self, active_requests: int) -> float:
        """How many retries may be in flight with ``active_requests`` requests active."""
        return max(float(self.min_retry_concurrency), active_requests * self.budget_percent / 100.0)

    def try_acquire(self, active_requests: int) -> bool:
        """Take one retry from the budget, given the cluster's active requests (retries
        included); False (and counted) when it is spent."""
        if self.active + 1 <= self.limit(active_requests):
            self.active += 1
            self.retries_total += 1
            return True
        self.exhausted_total += 1
        return False

    def release(self) -> None:
        """A retry acquired with ``try_acquire()`` ended."""
        if self.active <= 0:
            raise RetryBudgetError("retry budget released more often than acquired")
        self.active -= 1
