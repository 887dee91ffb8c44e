"""The DNS server's policy modules, socket-free: zone lookups (RFC 1034 §4.3.2, RFC 4592
wildcards, RFC 2308 negative answers, RFC 8482 ANY), the forwarder cache (TTL clamps,
negative caching, serve-stale, LRU bounds), single-flight bookkeeping, upstream health,
response rate limiting, the query engine's decisions and its fast path, service records,
and hypothesis-fuzzed packets (every input answered or dropped, never an exception)."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backhaul.guard.dns_rrl import ClientNetworks, RateLimiter, RateVerdict
from backhaul.proto.dns_cache import CacheSettings, ResponseCache, cache_key
from backhaul.proto.dns_discovery import (
    DiscoveredEndpoint,
    PublishedEndpoint,
    endpoint_changes,
    endpoints_from_answer,
    next_refresh,
    service_records,
)
from backhaul.proto.dns_forward import FlightJoin, Flights, ForwardPlan, UpstreamHealth
from backhaul.proto.dns_query import Drop, Forward, QueryEngine, Reply
from backhaul.proto.dns_zone import (
    ZoneDataError,
    ZoneSource,
    build_authority,
    parse_hosts,
    parse_zone,
)

ZONE = """\
$ORIGIN corp.test.
$TTL 300
@ IN SOA ns1 hostmaster 1 3600 600 86400 60
@ IN NS ns1
ns1 IN A 10.0.0.53
www IN A 10.0.0.1
alias IN CNAME www
loop1 IN CNAME loop2
loop2 IN CNAME loop1
out IN CNAME elsewhere.example.
*.wild IN A 10.0.0.9
exists.wild IN TXT "here"
a.b.c IN TXT "deep"
@ IN MX 10 mail
mail IN A 10.0.0.25
"""

A = dns.rdatatype.A


def name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


@pytest.fixture
def authority():  # type: ignore[no-untyped-def]
    return build_authority(
        [ZoneSource(None, ZONE, "corp.zone"), ZoneSource("local.test")],
        parse_hosts("10.1.1.1 h1.corp.test lone.lan\n# comment\n\n"),
    )


# --------------------------------------------------------------------------- zones


def test_lookup_exact_cname_and_glue(authority) -> None:  # type: ignore[no-untyped-def]
    ans = authority.lookup(name("www.corp.test"), A)
    assert ans.rcode == dns.rcode.NOERROR and ans.answer[0][0].address == "10.0.0.1"
    chased = authority.lookup(name("ALIAS.corp.test"), A)
    assert [r.rdtype for r in chased.answer] == [dns.rdatatype.CNAME, A]
    mx = authority.lookup(name("corp.test"), dns.rdatatype.MX)
    assert mx.additional[0].name == name("mail.corp.test")


def test_cname_loop_and_outside_target_stop(authority) -> None:  # type: ignore[no-untyped-def]
    loop = authority.lookup(name("loop1.corp.test"), A)
    assert 1 < len(loop.answer) <= 8
    out = authority.lookup(name("out.corp.test"), A)
    assert len(out.answer) == 1 and out.rcode == dns.rcode.NOERROR


def test_negative_answers(authority) -> None:  # type: ignore[no-untyped-def]
    nx = authority.lookup(name("missing.corp.test"), A)
    assert nx.rcode == dns.rcode.NXDOMAIN
    assert nx.authority[0].rdtype == dns.rdatatype.SOA and nx.authority[0].ttl == 60
    nodata = authority.lookup(name("www.corp.test"), dns.rdatatype.MX)
    assert nodata.rcode == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    ent = authority.lookup(name("b.c.corp.test"), A)  # empty non-terminal: NODATA
    assert ent.rcode == dns.rcode.NOERROR and not ent.answer
    local = authority.lookup(name("x.local.test"), A)
    assert local.rcode == dns.rcode.NXDOMAIN
    assert authority.lookup(name("example.com"), A) is None


def test_wildcards(authority) -> None:  # type: ignore[no-untyped-def]
    hit = authority.lookup(name("a.b.wild.corp.test"), A)
    assert hit.answer[0].name == name("a.b.wild.corp.test")
    assert hit.answer[0][0].address == "10.0.0.9"
    # an existing name is not covered by the wildcard (RFC 4592 §2.2.1)
    assert not authority.lookup(name("exists.wild.corp.test"), A).answer
    assert authority.lookup(name("sub.exists.wild.corp.test"), A).rcode == dns.rcode.NXDOMAIN


def test_any_is_minimal_and_ptr_is_automatic(authority) -> None:  # type: ignore[no-untyped-def]
    assert len(authority.lookup(name("www.corp.test"), dns.rdatatype.ANY).answer) == 1
    ptr = authority.lookup(name("1.0.0.10.in-addr.arpa"), dns.rdatatype.PTR)
    assert ptr.answer[0][0].target == name("www.corp.test")
    hosts_ptr = authority.lookup(name("1.1.1.10.in-addr.arpa"), dns.rdatatype.PTR)
    assert {r.target for r in hosts_ptr.answer[0]} == {name("h1.corp.test"), name("lone.lan")}
    no_ptr = build_authority([ZoneSource(None, ZONE, "z")], auto_ptr=False)
    assert no_ptr.lookup(name("1.0.0.10.in-addr.arpa"), dns.rdatatype.PTR) is None


def test_hosts_outside_zones_become_their_own(authority) -> None:  # type: ignore[no-untyped-def]
    assert authority.lookup(name("lone.lan"), A).answer[0][0].address == "10.1.1.1"
    assert authority.lookup(name("lone.lan"), dns.rdatatype.AAAA).rcode == dns.rcode.NOERROR


def test_bad_data_is_named() -> None:
    with pytest.raises(ZoneDataError, match=r"records\[1\]"):
        parse_zone(ZoneSource("a.test", records=("ok 1 IN A 1.1.1.1", "bad IN A 1")))
    with pytest.raises(ZoneDataError, match="line 2"):
        parse_hosts("10.0.0.1 a\nnot-an-ip b\n", "h")
    with pytest.raises(ZoneDataError, match="no origin"):
        parse_zone(ZoneSource(None, "www 60 IN A 10.0.0.1\n"))


# --------------------------------------------------------------------------- cache


def _reply(qname: str, ttl: int, rcode: int = 0, soa_min: int = 30) -> dns.message.Message:
    query = dns.message.make_query(qname, "A")
    reply = dns.message.make_response(query)
    reply.set_rcode(dns.rcode.Rcode.make(rcode))
    if rcode == 0 and ttl:
        reply.answer.append(dns.rrset.from_text(qname, ttl, "IN", "A", "10.9.9.9"))
    else:
        soa = f"ns.test. h.test. 1 2 3 4 {soa_min}"
        reply.authority.append(dns.rrset.from_text("test.", 3600, "IN", "SOA", soa))
    return reply


def test_cache_ttls_clamps_and_aging() -> None:
    cache = ResponseCache(CacheSettings(min_ttl=10, max_ttl=100))
    key = cache_key(name("a.test"), A, 1)
    entry = cache.store(key, _reply("a.test.", 5000), 100, now=0.0)
    assert entry is not None and entry.ttl == 100
    assert cache.lookup(key, 50.0) is entry
    answer, _, _ = entry.sections(60.0)
    assert answer[0].ttl == 40
    assert cache.lookup(key, 100.0) is None
    short = cache.store(cache_key(name("b.test"), A, 1), _reply("b.test.", 1), 100, 0.0)
    assert short is not None and short.ttl == 10


def test_negative_caching_and_what_is_not_cached() -> None:
    cache = ResponseCache(CacheSettings(negative_max_ttl=20))
    nx = cache.store(cache_key(name("x.test"), A, 1), _reply("x.test.", 0, 3, 30), 100, 0.0)
    assert nx is not None and nx.ttl == 20 and nx.authority[0].ttl == 20
    assert cache.store(cache_key(name("s.test"), A, 1), _reply("s.test.", 60, 2), 1, 0.0) is None
    no_soa = dns.message.make_response(dns.message.make_query("n.test", "A"))
    assert cache.store(cache_key(name("n.test"), A, 1), no_soa, 1, 0.0) is None


def test_serve_stale_window_and_lru_bounds() -> None:
    cache = ResponseCache(CacheSettings(stale_for=100, max_entries=3, max_bytes=10_000))
    keys = [cache_key(name(f"k{i}.test"), A, 1) for i in range(5)]
    for i, key in enumerate(keys[:3]):
        cache.store(key, _reply(f"k{i}.test.", 10), 100, 0.0)
    assert cache.lookup(keys[0], 1.0) is not None  # k0 is now the most recent
    cache.store(keys[3], _reply("k3.test.", 10), 100, 0.0)
    assert cache.lookup(keys[1], 1.0) is None and len(cache) == 3  # k1 was least recent
    assert cache.stale(keys[0], 50.0) is not None
    assert cache.stale(keys[0], 200.0) is None
    small = ResponseCache(CacheSettings(max_bytes=250))
    for i, key in enumerate(keys):
        small.store(key, _reply(f"k{i}.test.", 10), 100, 0.0)
    assert small.statistics().bytes <= 250 and len(small) == 2
    assert cache.sweep(500.0) == 3


# --------------------------------------------------------------------------- forwarding


def test_single_flight_bookkeeping() -> None:
    flights: Flights[str, int] = Flights(max_flights=1, max_waiters=2)
    assert flights.join("q", 1) is FlightJoin.LEADER
    assert flights.join("q", 2) is FlightJoin.WAITING
    assert flights.join("q", 3) is FlightJoin.REFUSED
    assert flights.join("other", 4) is FlightJoin.REFUSED
    assert flights.finish("q") == [1, 2]
    assert flights.join("q", 5) is FlightJoin.LEADER


def test_upstream_health_and_plan() -> None:
    health = UpstreamHealth(failures_to_down=2, down_for=10)
    a, b = ("127.0.0.1", 1), ("127.0.0.1", 2)
    assert health.order([a, b], 0) == [a, b]
    assert not health.failed(a, 0)
    assert health.failed(a, 1)
    assert health.order([a, b], 2) == [b, a]
    assert health.order([a, b], 12) == [a, b]
    health.succeeded(a, 0.01, 13)
    assert health.is_up(a, 13)
    plan = ForwardPlan([a], {"lab.test": [b]})
    assert plan.upstreams_for(name("x.LAB.test")) == (b,)
    assert plan.upstreams_for(name("lab.test.example")) == (a,)


def test_rate_limiter() -> None:
    rrl = RateLimiter(2, burst=2, slip=2, exempt=["10.0.0.0/8"])
    verdicts = [rrl.check("192.0.2.1", 0.0) for _ in range(6)]
    assert verdicts[:2] == [RateVerdict.SEND] * 2
    assert verdicts[2:] == [RateVerdict.DROP, RateVerdict.SLIP] * 2
    assert rrl.check("192.0.2.200", 0.0) is RateVerdict.DROP  # same /24
    assert rrl.check("192.0.3.1", 0.0) is RateVerdict.SEND
    assert rrl.check("192.0.2.1", 1.0) is RateVerdict.SEND  # refilled
    assert all(rrl.check("10.1.2.3", 0.0) is RateVerdict.SEND for _ in range(10))
    assert "::ffff:127.0.0.1" in ClientNetworks(["127.0.0.0/8"])


# --------------------------------------------------------------------------- engine


def _engine(authority, **kw):  # type: ignore[no-untyped-def]
    return QueryEngine(authority, plan=ForwardPlan([("127.0.0.1", 5399)]), **kw)


def test_engine_fast_path_patches_the_id(authority) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(authority)
    q1 = dns.message.make_query("www.corp.test", "A")
    first = engine.handle(q1.to_wire(), "127.0.0.1", 0.0)
    assert isinstance(first, Reply) and first.source == "zone"
    q2 = dns.message.make_query("www.corp.test", "A")
    q2.id = (q1.id + 1) % 65536
    again = engine.handle(q2.to_wire(), "127.0.0.1", 1.0)
    assert isinstance(again, Reply) and again.source == "zone"
    assert engine.wire.hits() == {("A", "NOERROR", "zone"): 1}  # from the kept bytes
    parsed = dns.message.from_wire(again.wire)
    assert parsed.id == q2.id and parsed.answer[0][0].address == "10.0.0.1"
    engine.set_authority(authority)  # a reload forgets the kept bytes
    assert engine.handle(q2.to_wire(), "127.0.0.1", 2.0).source == "zone"  # type: ignore[union-attr]
    assert [e[3] for e in engine.wire.table.values()] == [0]  # built again: a new entry


def test_engine_forward_then_cache(authority) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(authority)
    query = dns.message.make_query("ext.example", "A")
    decision = engine.handle(query.to_wire(), "127.0.0.1", 0.0)
    assert isinstance(decision, Forward)
    replies = engine.resolved(decision.key, _reply("ext.example.", 60), 80, [decision.waiter], 0)
    assert dns.message.from_wire(replies[0].wire).answer[0].ttl == 60
    cached = engine.handle(query.to_wire(), "127.0.0.1", 10.0)
    assert isinstance(cached, Reply) and cached.source == "cache"
    assert engine.wire.hits() == {("A", "NOERROR", "cache"): 1}  # the kept bytes, aged
    assert dns.message.from_wire(cached.wire).answer[0].ttl == 50
    # a client outside allow_recursion is refused, our zones still answer it
    outside = engine.handle(query.to_wire(), "192.0.2.1", 10.0)
    assert isinstance(outside, Reply) and outside.rcode == "REFUSED"
    # every upstream failed: stale copy within the window, else SERVFAIL
    stale = engine.failed(decision.key, [decision.waiter], 100.0)
    assert dns.message.from_wire(stale[0].wire).answer[0].ttl == 30
    other = engine.handle(dns.message.make_query("new.example", "A").to_wire(), "127.0.0.1", 0)
    assert isinstance(other, Forward)
    assert engine.failed(other.key, [other.waiter], 1.0)[0].rcode == "SERVFAIL"


def test_engine_truncates_to_the_client_size(authority) -> None:  # type: ignore[no-untyped-def]
    big = "\n".join(f'big IN TXT "{"x" * 200}{i}"' for i in range(4))
    auth = build_authority([ZoneSource("t.test", big)])
    engine = QueryEngine(auth)
    plain = engine.handle(dns.message.make_query("big.t.test", "TXT").to_wire(), "::1", 0.0)
    assert isinstance(plain, Reply)
    assert dns.message.from_wire(plain.wire).flags & dns.flags.TC and len(plain.wire) <= 512
    edns = dns.message.make_query("big.t.test", "TXT", use_edns=0, payload=1232)
    fits = engine.handle(edns.to_wire(), "::1", 0.0)
    assert isinstance(fits, Reply) and not dns.message.from_wire(fits.wire).flags & dns.flags.TC
    tcp = engine.handle(dns.message.make_query("big.t.test", "TXT").to_wire(), "::1", 0.0, False)
    assert isinstance(tcp, Reply) and dns.message.from_wire(tcp.wire).answer


@settings(max_examples=400)
@given(st.binary(max_size=600))
def test_fuzzed_packets_are_answered_or_dropped(packet: bytes) -> None:
    engine = _engine(_FUZZ_AUTHORITY)
    for udp in (True, False):
        decision = engine.handle(packet, "127.0.0.1", 0.0, udp)
        assert isinstance(decision, Reply | Drop | Forward)
        if isinstance(decision, Reply) and decision.wire:
            assert decision.wire[:2] == packet[:2]


@settings(max_examples=300)
@given(
    st.sampled_from(["www.corp.test", "x.wild.corp.test", "nope.corp.test", "ext.example"]),
    st.sampled_from(["A", "AAAA", "MX", "ANY", "TXT", "CNAME"]),
    st.integers(min_value=12, max_value=80),
    st.binary(min_size=1, max_size=4),
)
def test_mutated_queries_never_crash(qname: str, qtype: str, at: int, junk: bytes) -> None:
    wire = bytearray(dns.message.make_query(qname, qtype, use_edns=0).to_wire())
    wire[at : at + len(junk)] = junk
    engine = _engine(_FUZZ_AUTHORITY)
    assert isinstance(engine.handle(bytes(wire), "127.0.0.1", 0.0), Reply | Drop | Forward)


_FUZZ_AUTHORITY = build_authority([ZoneSource(None, ZONE, "corp.zone")])


# --------------------------------------------------------------------------- discovery


def test_service_records_publish_only_healthy() -> None:
    lines = service_records(
        {
            "api": [
                PublishedEndpoint("10.0.0.1", 8080, 3, True),
                PublishedEndpoint("10.0.0.2", 8080, 1, False),
                PublishedEndpoint("fd00::3", 8081, 1, True),
                PublishedEndpoint("backend.example", 80, 1, True),
            ],
            "down": [PublishedEndpoint("10.0.0.9", 80, 1, False)],
        },
        "service.test",
        5,
    )
    auth = build_authority([ZoneSource("service.test", records=tuple(lines))])
    a = auth.lookup(name("api.service.test"), A)
    assert [r.address for r in a.answer[0]] == ["10.0.0.1"] and a.answer[0].ttl == 5
    srv = auth.lookup(name("_http._tcp.api.service.test"), dns.rdatatype.SRV)
    assert sorted((r.port, r.weight) for r in srv.answer[0]) == [(8080, 3), (8081, 1)]
    assert {r.name for r in srv.additional} == {
        name("e1.api.service.test"),
        name("e2.api.service.test"),
    }
    down = auth.lookup(name("down.service.test"), A)
    assert down.rcode == dns.rcode.NOERROR and not down.answer


def test_endpoints_from_answers() -> None:
    query = dns.message.make_query("api.test", "SRV")
    reply = dns.message.make_response(query)
    reply.answer.append(
        dns.rrset.from_text("api.test.", 5, "IN", "SRV", "0 3 8080 a.test.", "0 0 8081 b.test.")
    )
    reply.additional.append(dns.rrset.from_text("a.test.", 5, "IN", "A", "10.0.0.1"))
    found = endpoints_from_answer(reply, "SRV", None, {name("b.test"): ["10.0.0.2"]})
    assert found == [
        DiscoveredEndpoint("10.0.0.1", 8080, 3),
        DiscoveredEndpoint("10.0.0.2", 8081, 1),
    ]
    a_reply = dns.message.make_response(dns.message.make_query("api.test", "A"))
    a_reply.answer.append(dns.rrset.from_text("api.test.", 5, "IN", "A", "10.0.0.1", "10.0.0.3"))
    got = endpoints_from_answer(a_reply, "A", 80, None)
    added, removed = endpoint_changes([DiscoveredEndpoint("10.0.0.1", 80)], got)
    assert added == [DiscoveredEndpoint("10.0.0.3", 80)] and removed == []
    assert next_refresh(100.0, 5.0, 2) == 102.0 and next_refresh(100.0, 5.0, None) == 105.0


def test_shared_statistics_add_up_across_processes() -> None:
    import os

    from backhaul.state.dns_counters import DnsStatsSlots

    slots = DnsStatsSlots(3)
    pid = os.fork()
    if pid == 0:  # another worker
        slots.write(1, {"n": 5, "by": {"A": 1}, "lat": [1, 2], "u": {"x": {"up": 0}}})
        os._exit(0)
    os.waitpid(pid, 0)
    slots.write(0, {"n": 1, "by": {"A": 2, "MX": 1}, "lat": [1, 1], "u": {"x": {"up": 1}}})
    assert slots.read(2) is None
    assert slots.totals() == {
        "n": 6,
        "by": {"A": 3, "MX": 1},
        "lat": [2, 3],
        "u": {"x": {"up": 0}},
    }
    assert not slots.write(0, {"big": "x" * 70_000})  # too big: the old one stays
    assert slots.read(0) is not None and slots.read(0)["n"] == 1  # type: ignore[index]


def test_forwarded_fast_path_counts_ttls_down(authority) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(authority)
    query = dns.message.make_query("ext.example", "A")
    first = engine.handle(query.to_wire(), "127.0.0.1", 100.0)
    assert isinstance(first, Forward)
    engine.resolved(first.key, _reply("ext.example.", 60), 80, [first.waiter], 100.0)
    for now, ttl in ((100.2, 60), (110.7, 50), (159.9, 1)):
        reply = engine.handle(query.to_wire(), "127.0.0.1", now)
        assert isinstance(reply, Reply) and reply.source == "cache"
        assert dns.message.from_wire(reply.wire).answer[0].ttl == ttl, now
    assert isinstance(engine.handle(query.to_wire(), "127.0.0.1", 160.0), Forward)


@settings(max_examples=100)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a.test.", "b.a.test.", "c.test.", "x.example."]),
            st.sampled_from(["A 10.0.0.1", "MX 10 a.test.", 'TXT "t"', "CNAME b.a.test."]),
            st.integers(min_value=0, max_value=2**31 - 1),
        ),
        max_size=8,
    ),
    st.booleans(),
)
def test_ttl_offsets_find_every_ttl(records: list[tuple[str, str, int]], edns: bool) -> None:
    from backhaul.proto.dns_query import ttl_offsets

    reply = dns.message.make_response(dns.message.make_query("a.test", "A", use_edns=edns))
    for i, (owner, data, ttl) in enumerate(records):
        rdtype, _, rdata = data.partition(" ")
        section = (reply.answer, reply.authority, reply.additional)[i % 3]
        section.append(dns.rrset.from_text(owner, ttl, "IN", rdtype, rdata))
    wire = bytearray(reply.to_wire())
    for offset in ttl_offsets(bytes(wire)):
        wire[offset : offset + 4] = (7).to_bytes(4, "big")
    parsed = dns.message.from_wire(bytes(wire))
    rrsets = [*parsed.answer, *parsed.authority, *parsed.additional]
    assert all(r.ttl == 7 for r in rrsets)
    counts = sum(int.from_bytes(wire[i : i + 2], "big") for i in (6, 8, 10))
    assert len(ttl_offsets(bytes(wire))) == counts - (1 if edns else 0)
    if edns:
        assert parsed.edns == 0  # the OPT record's flags were left alone
