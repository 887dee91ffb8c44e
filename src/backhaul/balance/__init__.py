"""Load balancing, health and resilience policy for clusters, sans-IO.

No sockets, no asyncio, no clock: every method that needs the time takes ``now``
(monotonic seconds), every random choice uses a ``random.Random`` (or its ``.random``)
passed in. The edge (``backhaul.edge``) drives it.

Endpoints
    The edge's endpoint class subclasses :class:`EndpointState` (``__slots__``; key, weight,
    health ``state``, ``in_flight``, ``latency_ewma``, ``token``, ``routable`` ...), so the
    balancer hands back the edge's own objects. The edge reads them and writes none: counts
    go through the balancer.

One balancer per cluster (per worker)
    ``balancer = make_balancer(endpoints, BalanceSettings(policy="least_request", ...),
    name="api", now=now, rng=random.Random())``. Policies: ``round_robin`` (weights
    ignored), ``weighted_round_robin`` (nginx's smooth WRR), ``least_connections``,
    ``least_request`` (power of two choices weighted by a latency EWMA), ``random``,
    ``ring_hash``, ``maglev``.

Per request (the hot path; see PERFORMANCE.md for why every µs counts)::

    if not breakers.requests.try_acquire():                  # circuit breaker: 503 now
        ...
    key = hash_key.extract(client_ip, path, headers)         # ring_hash/maglev only
    ep = balancer.pick(key)                                   # or pick_sticky(token, key)
    if ep is None: 503 "no healthy endpoint in cluster <name>"
    balancer.started(ep)
    ...                                                       # the exchange
    events = balancer.finished(ep, now, status_or_outcome, latency_seconds)
    breakers.requests.release()

``pick()`` never counts; ``started()`` and ``finished()`` must pair exactly, once per try
(least_connections keeps an index over them). ``finished()``'s outcome is the status, or
``CONNECT_FAILURE``, ``RESET``, ``TIMEOUT``; it feeds outlier detection and least_request's
latency average. Bind the methods once (``pick = balancer.pick``) on the hot path.

Measured with timeit on the 2-vCPU reference box (best of 7, ns; a call of an empty function
is 21 ns):

    pick()                  3 endpoints   100 endpoints   pick+started+finished (3)
    round_robin                 61             50              218
    weighted_round_robin        56             49              206
    least_connections          199             43 (tree)       525
    least_request (P2C)        369            373              638
    random (weighted)          142            212              282
    ring_hash pick(key)        316            380              409
    maglev pick(key)           169            171              288

    key_hash 108 (BLAKE2b would be 474); HashKeySpec.extract: header 228, cookie 448,
    client_ip 73; pick_sticky 82; breaker try_acquire+release 94.
    Builds (membership or weight changes only): maglev 65537 slots 18 ms (3 endpoints) to
    35 ms (100); ring_hash 0.3 ms (3) to 11 ms (100 x 256 points), 150 ms at the
    MAX_RING_POINTS cap; weighted round robin cycle 2 ms (100 endpoints).

Retries
    ``RetryPolicy.decide()`` says whether a failed try is tried again;
    ``RetryBudget.try_acquire(active_requests)`` whether the budget allows it;
    ``balancer.pick_excluding(tried, key)`` finds a different endpoint (None when all were
    tried); ``RetryPolicy.backoff(n, rng.random)`` how long to wait; ``per_try_timeout`` the
    deadline of each try.

Health
    ``balancer.check_result(ep, passed, now, reason)`` for each active check (scheduled by
    :class:`CheckSchedule`, judged by :class:`HttpCheck`); ``balancer.tick(now)`` every
    0.1-1 s (ejections end, slow start ramps); ``drain(ep, now)`` / ``restore()`` /
    ``drained(ep)``. Each returns the events to log once: :class:`HealthEvent` (an
    endpoint changed :class:`HealthState`) and :class:`PanicEvent` (the cluster entered or
    left panic; ``balancer.panic`` is the current value). States and inputs are one table,
    :data:`~backhaul.balance.health.TRANSITIONS`; an illegal input raises
    :class:`HealthTransitionError`.

Sticky sessions
    :class:`StickyCookie` reads the cookie (``token(headers)``) and builds Set-Cookie
    (``set_cookie(ep.token)``); ``balancer.pick_sticky(token, key)`` returns
    ``(endpoint, set_cookie)`` and falls over to a healthy endpoint when the cookie's one
    is down.
"""

from backhaul.balance.balancer import (
    CONNECT_FAILURE,
    RESET,
    TIMEOUT,
    Balancer,
    BalancerStatistics,
    Event,
)
from backhaul.balance.circuit import CircuitBreakers, Limit, LimitReleaseError
from backhaul.balance.consistent_hash import Maglev, RingHash, key_hash
from backhaul.balance.endpoint import EndpointState
from backhaul.balance.hash_key import HashKeySpec
from backhaul.balance.health import (
    HealthEvent,
    HealthInput,
    HealthState,
    HealthTransitionError,
    PanicEvent,
)
from backhaul.balance.healthcheck import (
    CheckSchedule,
    CheckVerdict,
    HttpCheck,
    StatusRangeError,
    parse_status_ranges,
)
from backhaul.balance.least import LeastConnections, LeastRequest
from backhaul.balance.policy import BALANCERS, make_balancer
from backhaul.balance.random_choice import RandomChoice
from backhaul.balance.retry import (
    IDEMPOTENT_METHODS,
    RetryBudget,
    RetryBudgetError,
    RetryDecision,
    RetryPolicy,
)
from backhaul.balance.rotation import RoundRobin, WeightedRoundRobin
from backhaul.balance.settings import (
    POLICIES,
    BalanceSettings,
    HealthThresholds,
    OutlierDetection,
    SlowStart,
)
from backhaul.balance.sticky import StickyCookie

__all__ = [
    "BALANCERS",
    "CONNECT_FAILURE",
    "IDEMPOTENT_METHODS",
    "POLICIES",
    "RESET",
    "TIMEOUT",
    "BalanceSettings",
    "Balancer",
    "BalancerStatistics",
    "CheckSchedule",
    "CheckVerdict",
    "CircuitBreakers",
    "EndpointState",
    "Event",
    "HashKeySpec",
    "HealthEvent",
    "HealthInput",
    "HealthState",
    "HealthThresholds",
    "HealthTransitionError",
    "HttpCheck",
    "LeastConnections",
    "LeastRequest",
    "Limit",
    "LimitReleaseError",
    "Maglev",
    "OutlierDetection",
    "PanicEvent",
    "RandomChoice",
    "RetryBudget",
    "RetryBudgetError",
    "RetryDecision",
    "RetryPolicy",
    "RingHash",
    "RoundRobin",
    "SlowStart",
    "StatusRangeError",
    "StickyCookie",
    "WeightedRoundRobin",
    "key_hash",
    "make_balancer",
    "parse_status_ranges",
]
