"""ring_hash and maglev: ~1/N of keys move when an endpoint joins, maglev spreads evenly, a
down endpoint's keys walk on and come back; hash keys from headers, cookies, address, path."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from backhaul.balance import (
    BalanceSettings,
    EndpointState,
    HashKeySpec,
    Maglev,
    RingHash,
    key_hash,
    make_balancer,
)
from backhaul.balance.consistent_hash import MAX_RING_POINTS, maglev_table, ring_points
from backhaul.balance.hash_key import cookie_value

KEYS = [b"user-%d" % i for i in range(100_000)]


def endpoints(n: int, weights: list[int] | None = None) -> list[EndpointState]:
    return [
        EndpointState(f"10.0.{i // 200}.{i % 200}:8080", weights[i] if weights else 1)
        for i in range(n)
    ]


def assignment(balancer: RingHash[EndpointState] | Maglev[EndpointState]) -> list[str]:
    out = []
    pick = balancer.pick
    for key in KEYS:
        ep = pick(key)
        assert ep is not None
        out.append(ep.key)
    return out


def test_key_hash_is_stable_across_processes() -> None:
    # Pinned values: zlib's CRC-32 and a fixed multiplier, nothing seeded per process.
    assert key_hash(b"abc") == 3184797986
    assert key_hash(b"") == 0
    assert key_hash(b"10.0.0.1") == 2956415395
    assert ring_points("10.0.0.1:80", 3) == [4155671573, 1328788288, 1022897409]


@pytest.mark.parametrize("policy", ["ring_hash", "maglev"])
@pytest.mark.parametrize("n", [4, 10])
def test_adding_an_endpoint_moves_about_one_nth(policy: str, n: int) -> None:
    conf = BalanceSettings(policy=policy)  # type: ignore[arg-type]
    eps = endpoints(n + 1)
    before = assignment(make_balancer(eps[:n], conf))  # type: ignore[arg-type]
    after = assignment(make_balancer(eps, conf))  # type: ignore[arg-type]
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    ideal = len(KEYS) / (n + 1)
    assert abs(len(moved) - ideal) <= 0.2 * ideal, (len(moved), ideal)
    newcomer = eps[n].key
    if policy == "ring_hash":
        # consistent hashing proper: keys only ever move to the newcomer
        assert all(b == newcomer for _, b in moved)
    else:
        # maglev trades a little of that for its even spread: nearly all go to the newcomer
        assert sum(b == newcomer for _, b in moved) >= 0.9 * len(moved)


def test_maglev_spread_within_one_percent() -> None:
    n = 5
    eps = endpoints(n)
    table = maglev_table([ep.key for ep in eps], [1] * n, 65537)
    slots = Counter(table)
    assert all(abs(c - 65537 / n) <= 1 for c in slots.values())  # each 13107 or 13108
    mag = Maglev(eps, BalanceSettings(policy="maglev"))
    got = Counter(mag.pick(b"session-%d" % i) for i in range(1_000_000))
    for ep in eps:
        assert abs(got[ep] / 1_000_000 - 1 / n) <= 0.01 / n, got[ep]


def test_weights_share_the_ring_and_the_table() -> None:
    weights = [1, 2, 5]
    eps = endpoints(3, weights)
    table = Counter(maglev_table([ep.key for ep in eps], weights, 65537))
    for i, w in enumerate(weights):
        assert table[i] / 65537 == pytest.approx(w / 8, abs=0.001)
    ring = RingHash(eps, BalanceSettings(policy="ring_hash"))
    got = Counter(ring.pick(k) for k in KEYS)
    for ep, w in zip(eps, weights, strict=True):
        assert got[ep] / len(KEYS) == pytest.approx(w / 8, rel=0.1)


@pytest.mark.parametrize("policy", ["ring_hash", "maglev"])
def test_down_endpoint_keys_walk_on_and_come_back(policy: str) -> None:
    eps = endpoints(5)
    bal = make_balancer(eps, BalanceSettings(policy=policy, panic_threshold=0))  # type: ignore[arg-type]
    before = assignment(bal)  # type: ignore[arg-type]
    down = eps[2]
    bal.drain(down, 1.0)
    during = assignment(bal)  # type: ignore[arg-type]
    for a, b in zip(before, during, strict=True):
        if a == down.key:
            assert b != down.key
        else:
            assert a == b  # nobody else moves
    # the orphaned keys spread over the others, not onto one neighbour
    spread = Counter(b for a, b in zip(before, during, strict=True) if a == down.key)
    assert len(spread) == 4 and min(spread.values()) > 0.1 * sum(spread.values())
    bal.restore(down, 2.0)
    assert assignment(bal) == before  # type: ignore[arg-type]
    for ep in eps:
        if ep.routable:
            bal.drain(ep, 3.0)
    assert bal.pick(b"user-1") is None


@pytest.mark.parametrize("policy", ["ring_hash", "maglev"])
def test_hash_pick_excluding_and_without_key(policy: str) -> None:
    eps = endpoints(4)
    bal = make_balancer(eps, BalanceSettings(policy=policy), rng=random.Random(1))  # type: ignore[arg-type]
    first = bal.pick(b"alice")
    assert first is not None
    second = bal.pick_excluding({first}, b"alice")
    assert second is not None and second is not first
    assert bal.pick_excluding({first}, b"alice") is second  # deterministic
    assert bal.pick_excluding(set(eps), b"alice") is None
    # no key: spread round robin over the candidates
    seen = Counter(bal.pick(None) for _ in range(40))
    assert set(seen.values()) == {10}


def test_membership_change_rebuilds_table() -> None:
    eps = endpoints(3)
    bal = make_balancer(eps[:2], BalanceSettings(policy="maglev"))
    assert {bal.pick(k) for k in KEYS[:2000]} == set(eps[:2])
    bal.set_endpoints(eps, now=1.0)
    assert {bal.pick(k) for k in KEYS[:2000]} == set(eps)


def test_settings_reject_non_prime_table() -> None:
    with pytest.raises(ValueError, match="expected a prime"):
        BalanceSettings(policy="maglev", maglev_table_size=65536)


# --------------------------------------------------------------------------- hash keys

HEADERS = [
    (b"Host", b"example.com"),
    (b"X-User-Id", b"  alice  "),
    (b"Cookie", b"theme=dark; session=abc123; x=1"),
    (b"cookie", b"session=late"),
    (b"X-Empty", b""),
]


def test_hash_key_sources() -> None:
    assert HashKeySpec("header", "x-user-id").extract("1.2.3.4", "/a", HEADERS) == b"alice"
    assert HashKeySpec("header", "X-USER-ID").extract("1.2.3.4", "/a", HEADERS) == b"alice"
    assert HashKeySpec("header", "x-missing").extract("1.2.3.4", "/a", HEADERS) is None
    assert HashKeySpec("header", "x-empty").extract("1.2.3.4", "/a", HEADERS) is None
    assert HashKeySpec("cookie", "session").extract("1.2.3.4", "/a", HEADERS) == b"abc123"
    assert HashKeySpec("cookie", "nope").extract("1.2.3.4", "/a", HEADERS) is None
    assert HashKeySpec("client_ip").extract("2001:db8::1", "/a", HEADERS) == b"2001:db8::1"
    assert HashKeySpec("path").extract("1.2.3.4", "/api/users", []) == b"/api/users"


def test_cookie_value_parsing() -> None:
    assert cookie_value([(b"Cookie", b'a="quoted"; b=2')], b"a") == b'"quoted"'
    assert cookie_value([(b"Cookie", b"a=1;b=2")], b"b") == b"2"
    assert cookie_value([(b"Cookie", b"ab=1")], b"a") is None
    assert cookie_value([(b"Cookie", b"a")], b"a") is None
    assert cookie_value([(b"Cookie", b"a=")], b"a") is None
    assert cookie_value([(b"Set-Cookie", b"a=1")], b"a") is None


@pytest.mark.parametrize(
    ("source", "name", "message"),
    [
        ("header", "", "expected the header name"),
        ("cookie", "bad name", "expected the cookie name"),
        ("client_ip", "x", "expected no name"),
        ("query", "", "expected one of header, cookie, client_ip, path"),
    ],
)
def test_hash_key_spec_rejects(source: str, name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HashKeySpec(source, name)  # type: ignore[arg-type]


def test_same_key_same_endpoint_in_every_worker() -> None:
    # Two balancers built independently (two workers) agree key by key.
    a = make_balancer(endpoints(6), BalanceSettings(policy="ring_hash"), rng=random.Random(1))
    b = make_balancer(endpoints(6), BalanceSettings(policy="ring_hash"), rng=random.Random(2))
    for key in KEYS[:5000]:
        ea, eb = a.pick(key), b.pick(key)
        assert ea is not None and eb is not None and ea.key == eb.key


def test_heavy_weights_scale_the_ring_down() -> None:
    weights = [10_000, 5_000, 1]
    eps = endpoints(3, weights)
    ring = RingHash(eps, BalanceSettings(policy="ring_hash"))
    assert len(ring._points) <= MAX_RING_POINTS + 3
    got = Counter(ring.pick(k) for k in KEYS[:30_000])
    assert got[eps[0]] / got[eps[1]] == pytest.approx(2.0, rel=0.1)
    assert got[eps[2]] < 30  # one point's worth, at most a handful of keys
