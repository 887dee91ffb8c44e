"""Sticky sessions: the cookie keeps a client on one endpoint and falls over cleanly."""

from __future__ import annotations

import random

import pytest

from backhaul.balance import (
    BalanceSettings,
    EndpointState,
    HealthThresholds,
    OutlierDetection,
    StickyCookie,
    make_balancer,
)
from backhaul.balance.endpoint import sticky_token


def eps(n: int) -> list[EndpointState]:
    return [EndpointState(f"10.0.0.{i}:80") for i in range(n)]


def test_token_is_stable_and_hides_the_address() -> None:
    a, b = EndpointState("10.0.0.1:80"), EndpointState("10.0.0.1:80")
    assert a.token == b.token == sticky_token("10.0.0.1:80")
    assert len(a.token) == 16 and "10.0.0.1" not in a.token
    assert a.token != EndpointState("10.0.0.2:80").token
    assert a.token == "03da6e6c20791099"  # pinned: the same in every worker and after restarts


@pytest.mark.parametrize("policy", ["round_robin", "least_request", "maglev"])
def test_sticky_keeps_a_client_and_falls_over(policy: str) -> None:
    members = eps(3)
    conf = BalanceSettings(
        policy=policy,  # type: ignore[arg-type]
        outlier=OutlierDetection(consecutive_connect_failures=1),
        health=HealthThresholds(1, 1),
    )
    bal = make_balancer(members, conf, rng=random.Random(2))
    cookie = StickyCookie(name="route")

    # first visit: no cookie, so pick and set it
    ep, set_cookie = bal.pick_sticky(None)
    assert ep is not None and set_cookie
    header = cookie.set_cookie(ep.token)
    assert header == f"route={ep.token}; Path=/; HttpOnly; SameSite=Lax".encode()
    token = cookie.token([(b"Cookie", b"other=1; " + header.split(b";")[0])])
    assert token == ep.token
    # later visits stay, whatever the policy would pick
    for _ in range(20):
        assert bal.pick_sticky(token) == (ep, False)
    # the endpoint dies: the client moves once, to a healthy endpoint, and the cookie is reset
    bal.started(ep)
    bal.finished(ep, 1.0, -1)  # connect failure -> ejected
    moved, set_cookie = bal.pick_sticky(token)
    assert moved is not None and moved is not ep and moved.routable and set_cookie
    for _ in range(20):
        assert bal.pick_sticky(moved.token) == (moved, False)
    # an unknown or mangled token is treated as no cookie
    other, set_cookie = bal.pick_sticky("0000000000000000")
    assert other is not None and set_cookie
    # a draining endpoint's cookie falls over too
    bal.drain(moved, 2.0)
    again, set_cookie = bal.pick_sticky(moved.token)
    assert again is not None and again is not moved and set_cookie
    # nothing left: no endpoint, nothing to set
    bal_empty = make_balancer(
        [],
        BalanceSettings(policy=policy),  # type: ignore[arg-type]
    )
    assert bal_empty.pick_sticky(token) == (None, False)


def test_cookie_reading() -> None:
    cookie = StickyCookie()
    assert cookie.token([]) is None
    assert cookie.token([(b"cookie", b'backhaul_sticky="abc123"')]) == "abc123"
    assert cookie.token([(b"Cookie", b"backhaul_sticky=<script>")]) is None
    assert cookie.token([(b"Cookie", b"backhaul_sticky=\xff\xfe")]) is None


def test_cookie_attributes() -> None:
    c = StickyCookie(name="s", path="/app", max_age=3600, secure=True, same_site="None")
    assert c.set_cookie("ab") == b"s=ab; Path=/app; Max-Age=3600; Secure; HttpOnly; SameSite=None"
    c = StickyCookie(http_only=False, same_site=None)
    assert c.set_cookie("ab") == b"backhaul_sticky=ab; Path=/"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "a b"}, "expected a cookie name"),
        ({"path": "app"}, "expected a path starting with '/'"),
        ({"path": "/a;b"}, "without ';'"),
        ({"max_age": -1}, "expected 0 or more"),
        ({"same_site": "None"}, "set secure: true"),
    ],
)
def test_cookie_rejects(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StickyCookie(**kwargs)  # type: ignore[arg-type]
