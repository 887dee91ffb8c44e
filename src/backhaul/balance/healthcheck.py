"""Active health checks, the parts without I/O: when to check, what to send, how to judge
the answer.

The edge runs the checks (an HTTP request or a TCP connect per endpoint, with ``timeout``)
and feeds each verdict to ``Balancer.check_result()``::

    at = schedule.first(now, rng.random)              # spread the first round
    ...                                               # at time `at`: run the check
    verdict = check.judge(status, body)               # HTTP; a TCP connect passes if it connects
    events = balancer.check_result(ep, verdict.passed, now, verdict.reason)
    at = schedule.next(now, ep.state is HealthState.HEALTHY, rng.random)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from backhaul.vocabulary.status_ranges import (
    StatusRangeError,
    format_status_ranges,
    parse_status_ranges,
)

__all__ = [
    "CheckSchedule",
    "CheckVerdict",
    "HttpCheck",
    "StatusRangeError",
    "format_status_ranges",
    "parse_status_ranges",
]

_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PATH: Final = re.compile(r"/[\x21-\x7e]*")
_HOST: Final = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True, slots=True)
class CheckVerdict:
    """The judgment of one check; ``reason`` is for the log when it failed."""

    passed: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CheckSchedule:
    """When checks run: every ``interval`` seconds plus a random ``[0, jitter)`` (so checks
    from many workers and nodes do not line up), every ``unhealthy_interval`` while the
    endpoint is not healthy (default: ``interval``). Each check has ``timeout`` seconds."""

    interval: float = 5.0
    timeout: float = 2.0
    jitter: float = 0.0
    unhealthy_interval: float | None = None

    def __post_init__(self) -> None:
        for name in ("interval", "timeout"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name}: found {value!r}, expected seconds greater than 0")
        if not self.jitter >= 0:
            raise ValueError(f"jitter: found {self.jitter!r}, expected 0 or more seconds")
        if self.unhealthy_interval is not None and not self.unhealthy_interval > 0:
            raise ValueError(
                f"unhealthy_interval: found {self.unhealthy_interval!r}, expected seconds"
                " greater than 0"
            )

    def first(self, now: float, random: Callable[[], float]) -> float:
        """When to run the first check: spread uniformly over one interval. ``random`` is a
        ``() -> float`` in ``[0, 1)`` such as ``random.Random(...).random``."""
        return now + _draw(random) * self.interval

    def next(self, now: float, healthy: bool, random: Callable[[], float]) -> float:
        """When to run the next check after one that ended at ``now``."""
        base = self.interval
        if not healthy and self.unhealthy_interval is not None:
            base = self.unhealthy_interval
        return now + base + _draw(random) * self.jitter


def _draw(random: Callable[[], float]) -> float:
    value = random()
    if not 0.0 <= value < 1.0:
        raise ValueError(f"random source returned {value!r}: expected a float in [0, 1)")
    return value


@dataclass(frozen=True, slots=True)
class HttpCheck:
    """An HTTP health check: what to send and what passes.

    ``statuses`` are inclusive ranges (see :func:`parse_status_ranges`); ``body_contains``
    (a substring) and ``body_regex`` (searched, not full-matched) look at the first
    ``body_limit`` bytes of the body, which the edge reads only when ``needs_body``.
    """

    path: str = "/"
    method: str = "GET"
    host: str | None = None
    statuses: tuple[tuple[int, int], ...] = ((200, 399),)
    body_contains: str | None = None
    body_regex: str | None = None
    body_limit: int = 65536
    _pattern: re.Pattern[bytes] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _PATH.fullmatch(self.path):
            raise ValueError(
                f"path: found {self.path!r}, expected a path starting with '/' without spaces,"
                " such as '/healthz'"
            )
        if not _TOKEN.fullmatch(self.method):
            raise ValueError(f"method: found {self.method!r}, expected a method such as GET")
        if self.host is not None and not _HOST.fullmatch(self.host):
            raise ValueError(
                f"host: found {self.host!r}, expected a Host value without spaces, such as"
                " 'api.internal'"
            )
        if not self.statuses:
            raise ValueError("statuses: found none, expected at least one range such as 200-399")
        for low, high in self.statuses:
            if not 100 <= low <= high <= 599:
                raise ValueError(f"statuses: found {low}-{high}, expected ranges within 100-599")
        if self.body_limit < 1:
            raise ValueError(f"body_limit: found {self.body_limit!r}, expected 1 or more bytes")
        pattern: re.Pattern[bytes] | None = None
        if self.body_regex is not None:
            try:
                pattern = re.compile(self.body_regex.encode())
            except re.error as exc:
                raise ValueError(
                    f"body_regex: found {self.body_regex!r}, expected a regular expression"
                    f" that compiles ({exc})"
                ) from exc
        object.__setattr__(self, "_pattern", pattern)

    @property
    def needs_body(self) -> bool:
        """Whether judging needs the response body."""
        return self.body_contains is not None or self._pattern is not None

    def request(self, default_host: str) -> bytes:
        """The request head to send (HTTP/1.1, ``Connection: close``); ``default_host``
        (the endpoint's address) is the Host unless ``host`` is set."""
        host = self.host if self.host is not None else default_host
        return (
            f"{self.method.upper()} {self.path} HTTP/1.1\r\nHost: {host}\r\n"
            "User-Agent: backhaul-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        ).encode()

    def judge(self, status: int, body: bytes = b"") -> CheckVerdict:
        """Whether a response with ``status`` and (the start of) ``body`` passes."""
        for low, high in self.statuses:
            if low <= status <= high:
                break
        else:
            return CheckVerdict(
                False, f"status {status}, expected {format_status_ranges(self.statuses)}"
            )
        body = body[: self.body_limit]
        if self.body_contains is not None and self.body_contains.encode() not in body:
            return CheckVerdict(False, f"body does not contain {self.body_contains!r}")
        if self._pattern is not None and self._pattern.search(body) is None:
            return CheckVerdict(False, f"body does not match {self.body_regex!r}")
        return CheckVerdict(True, f"status {status}")
