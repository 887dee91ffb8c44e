"""Active health-check policy: schedule with jitter, status ranges, body matching."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backhaul.balance import CheckSchedule, HttpCheck, StatusRangeError, parse_status_ranges
from backhaul.balance.healthcheck import format_status_ranges


def test_schedule_spreads_and_jitters() -> None:
    rng = random.Random(1)
    sched = CheckSchedule(interval=5.0, jitter=1.0, unhealthy_interval=2.0)
    firsts = [sched.first(100.0, rng.random) for _ in range(1000)]
    assert all(100.0 <= t < 105.0 for t in firsts)
    assert max(firsts) - min(firsts) > 4.5  # spread over the whole interval
    nexts = [sched.next(10.0, True, rng.random) for _ in range(1000)]
    assert all(15.0 <= t < 16.0 for t in nexts) and len(set(nexts)) > 900
    assert all(12.0 <= sched.next(10.0, False, rng.random) < 13.0 for _ in range(100))
    plain = CheckSchedule(interval=3.0)
    assert plain.next(1.0, False, rng.random) == 4.0  # no jitter, no unhealthy interval
    with pytest.raises(ValueError, match=r"expected a float in \[0, 1\)"):
        plain.first(0.0, lambda: 1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval": 0.0}, "interval: found 0.0"),
        ({"timeout": -1.0}, "timeout: found -1.0"),
        ({"jitter": -0.1}, "jitter"),
        ({"unhealthy_interval": 0.0}, "unhealthy_interval"),
    ],
)
def test_schedule_rejects(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CheckSchedule(**kwargs)


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        ("200-399", ((200, 399),)),
        ("200", ((200, 200),)),
        ("200, 204, 300-308", ((200, 200), (204, 204), (300, 308))),
        (" 100 - 599 ", ((100, 599),)),
    ],
)
def test_parse_status_ranges(text: str, ranges: tuple[tuple[int, int], ...]) -> None:
    assert parse_status_ranges(text) == ranges
    assert parse_status_ranges(format_status_ranges(ranges)) == ranges


@pytest.mark.parametrize("bad", ["", "2xx", "600", "099", "200-", "399-200", "200,,300", "20"])
def test_parse_status_ranges_rejects(bad: str) -> None:
    with pytest.raises(StatusRangeError) as info:
        parse_status_ranges(bad)
    assert str(info.value).startswith("found ")
    assert isinstance(info.value, ValueError)  # usable in a pydantic validator


@given(st.lists(st.tuples(st.integers(100, 599), st.integers(0, 50)), min_size=1, max_size=5))
def test_status_ranges_round_trip(pairs: list[tuple[int, int]]) -> None:
    ranges = tuple((lo, min(599, lo + span)) for lo, span in pairs)
    assert parse_status_ranges(format_status_ranges(ranges)) == ranges


def test_http_check_judgment() -> None:
    check = HttpCheck(path="/healthz", statuses=parse_status_ranges("200-299, 304"))
    assert check.judge(200).passed and check.judge(304).passed
    verdict = check.judge(503)
    assert not verdict.passed and verdict.reason == "status 503, expected 200-299, 304"
    assert not check.needs_body
    body = HttpCheck(body_contains="ok", body_regex=r'"status":\s*"up"', body_limit=64)
    assert body.needs_body
    assert body.judge(200, b'{"status": "up", "db": "ok"}').passed
    assert "does not contain 'ok'" in body.judge(200, b'{"status": "up"}').reason
    assert "does not match" in body.judge(200, b'{"status":"down","x":"ok"}').reason
    late = b" " * 100 + b'ok "status":"up"'
    assert not body.judge(200, late).passed  # beyond body_limit


def test_http_check_request() -> None:
    assert HttpCheck(path="/healthz").request("10.0.0.5:8080") == (
        b"GET /healthz HTTP/1.1\r\nHost: 10.0.0.5:8080\r\nUser-Agent: backhaul-health-check\r\n"
        b"Accept: */*\r\nConnection: close\r\n\r\n"
    )
    head = HttpCheck(method="head", host="api.internal").request("10.0.0.5:8080")
    assert head.startswith(b"HEAD / HTTP/1.1\r\nHost: api.internal\r\n")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "healthz"}, "expected a path starting with '/'"),
        ({"path": "/a b"}, "without spaces"),
        ({"method": "GE T"}, "expected a method"),
        ({"host": "a\r\nX: y"}, "expected a Host value"),
        ({"statuses": ()}, "at least one range"),
        ({"statuses": ((200, 700),)}, "within 100-599"),
        ({"body_regex": "("}, "that compiles"),
        ({"body_limit": 0}, "1 or more bytes"),
    ],
)
def test_http_check_rejects(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HttpCheck(**kwargs)  # type: ignore[arg-type]
