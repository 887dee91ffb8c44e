"""``backhaul subnet``: the pure calculator (property-tested) and the command's contract."""

from __future__ import annotations

import ipaddress
import itertools
import json
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backhaul.errors import UsageError
from backhaul.net import subnet as calc

# --------------------------------------------------------------------------- strategies


@st.composite
def prefixes(draw: st.DrawFn) -> calc.IPNetwork:
    """A random IPv4 or IPv6 prefix, biased towards realistic lengths and both ends."""
    version = draw(st.sampled_from([4, 6]))
    width = 32 if version == 4 else 128
    prefixlen = draw(st.integers(0, width))
    value = draw(st.integers(0, (1 << width) - 1))
    host_bits = width - prefixlen
    value = value >> host_bits << host_bits
    if version == 4:
        return ipaddress.IPv4Network((value, prefixlen))
    return ipaddress.IPv6Network((value, prefixlen))


def _address(version: int, value: int) -> calc.IPAddress:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


def _expected_usable(net: calc.IPNetwork) -> int:
    host_bits = net.max_prefixlen - net.prefixlen
    if host_bits <= 1:
        return 1 << host_bits
    return (1 << host_bits) - (2 if net.version == 4 else 0)


# --------------------------------------------------------------------------- the property test

# 1,000 examples of 10 prefixes each: 10,000 random prefixes, with the per-example overhead of
# hypothesis paid once per ten (one prefix per example takes ~30 s; this takes a few).
PROPERTY = settings(
    max_examples=1_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def cases(draw: st.DrawFn) -> tuple[calc.IPNetwork, int, int, int, int, calc.IPNetwork, int, int]:
    """A prefix and the random probes one property check needs."""
    net = draw(prefixes())
    width = net.max_prefixlen
    first, last = int(net.network_address), int(net.broadcast_address)
    wanted = draw(st.integers(1, min(_expected_usable(net), 1 << 40)))
    new_prefix = draw(st.integers(net.prefixlen, min(width, net.prefixlen + 4)))
    probe = draw(st.integers(0, (1 << width) - 1))
    inside = draw(st.integers(first, last))
    other = draw(prefixes())
    low = draw(st.integers(0, (1 << width) - 1))
    high = draw(st.integers(low, min((1 << width) - 1, low + (1 << 70))))
    return net, wanted, new_prefix, probe, inside, other, low, high


@pytest.mark.slow
@PROPERTY
@given(st.lists(cases(), min_size=10, max_size=10))
def test_ten_thousand_random_prefixes(batch: list[tuple]) -> None:
    for case in batch:
        check_prefix(*case)


def check_prefix(
    net: calc.IPNetwork,
    wanted: int,
    new_prefix: int,
    probe_value: int,
    inside_value: int,
    other: calc.IPNetwork,
    low: int,
    high: int,
) -> None:
    width = net.max_prefixlen
    first, last = int(net.network_address), int(net.broadcast_address)

    # Host counts and the usable range.
    detail = calc.info(ipaddress.ip_interface((net.network_address, net.prefixlen)))
    assert detail.total_addresses == last - first + 1
    assert detail.usable_hosts == _expected_usable(net)
    assert int(detail.last_host) - int(detail.first_host) + 1 == detail.usable_hosts
    if net.version == 4 and net.num_addresses <= 64:
        hosts = list(net.hosts())  # the stdlib's own view of IPv4 hosts
        assert (hosts[0], hosts[-1], len(hosts)) == (
            detail.first_host,
            detail.last_host,
            detail.usable_hosts,
        )
    assert ipaddress.ip_network(detail.to_json()["network"]) == net

    # prefix_for_hosts picks the smallest subnet that fits.
    fit = calc.prefix_for_hosts(net.version, wanted)
    assert fit >= net.prefixlen
    assert _expected_usable(_zero_net(net.version, fit)) >= wanted
    if fit < width:
        assert _expected_usable(_zero_net(net.version, fit + 1)) < wanted

    # split then summarize gives the prefix back; the pieces tile it in order.
    pieces = list(calc.split(net, new_prefix))
    assert len(pieces) == calc.split_count(net, new_prefix) == 1 << (new_prefix - net.prefixlen)
    assert int(pieces[0].network_address) == first
    assert int(pieces[-1].broadcast_address) == last
    for left, right in itertools.pairwise(pieces):
        assert int(left.broadcast_address) + 1 == int(right.network_address)
    assert calc.summarize(reversed(pieces)) == [net]

    # contains agrees with ipaddress for addresses and for prefixes.
    probe = _address(net.version, probe_value)
    assert calc.contains(net, probe) == (probe in net)
    inside = _address(net.version, inside_value)
    assert calc.contains(net, inside)
    if other.version == net.version:
        assert calc.contains(net, other) == other.subnet_of(net)  # type: ignore[arg-type]
    else:
        assert not calc.contains(net, other)

    # Range deaggregation covers exactly the range, with the fewest CIDRs.
    cidrs = calc.range_to_cidrs(_address(net.version, low), _address(net.version, high))
    spans = [(int(c.network_address), c.num_addresses, c.prefixlen) for c in cidrs]
    cursor = low
    for start, size, length in spans:
        assert start == cursor  # contiguous, starting at the first address
        assert start % size == 0 and size == 1 << (width - length)  # aligned CIDR blocks
        cursor = start + size
    assert cursor == high + 1  # and ending exactly at the last one
    # Minimal: no two neighbours are the halves of one bigger block (collapse would merge them).
    for (start, size, length), (_, _, next_length) in itertools.pairwise(spans):
        assert not (length == next_length and start % (2 * size) == 0), (start, length)
    assert len(cidrs) <= 2 * width

    # Reverse zones: the PTR name of any inside address falls in the zone and in exactly
    # one of the covering zones.
    ptr = inside.reverse_pointer + "."
    assert ptr.endswith(detail.reverse_zone)
    assert sum(ptr.endswith("." + z) or ptr == z for z in detail.reverse_zones) == 1
    unit = 8 if net.version == 4 else 4
    assert len(detail.reverse_zones) == 1 << (-(-net.prefixlen // unit) * unit - net.prefixlen)


def _zero_net(version: int, prefixlen: int) -> calc.IPNetwork:
    if version == 4:
        return ipaddress.IPv4Network((0, prefixlen))
    return ipaddress.IPv6Network((0, prefixlen))


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(prefixes(), min_size=0, max_size=30))
def test_overlaps_match_brute_force(nets: list[calc.IPNetwork]) -> None:
    # Bias towards collisions: reuse prefixes and their supernets.
    nets = nets + [n.supernet() for n in nets[:5] if n.prefixlen > 0] + nets[:3]
    found = {(o.outer_index, o.inner_index) for o in calc.overlaps(nets)}
    expected = set()
    for i, a in enumerate(nets):
        for j, b in enumerate(nets):
            if i == j or a.version != b.version or not a.overlaps(b):  # type: ignore[arg-type]
                continue
            # outer is the bigger one; for duplicates, the earlier entry.
            if a.prefixlen < b.prefixlen or (a.prefixlen == b.prefixlen and i < j):
                expected.add((i, j))
    assert found == expected


# --------------------------------------------------------------------------- examples


def test_info_ipv4_matches_ipcalc() -> None:
    detail = calc.info(calc.parse_interface("10.1.2.3/20"))
    doc = detail.to_json()
    assert doc["network"] == "10.1.0.0/20"
    assert doc["netmask"] == "255.255.240.0"
    assert doc["wildcard"] == "0.0.15.255"
    assert doc["broadcast"] == "10.1.15.255"
    assert (doc["first_host"], doc["last_host"]) == ("10.1.0.1", "10.1.15.254")
    assert doc["usable_hosts"] == 4094
    assert doc["class"] == "A"
    assert doc["scope"]["kind"] == "private"
    assert doc["binary"]["address"] == "00001010.00000001.00000010.00000011"
    assert doc["reverse_zone"] == "1.10.in-addr.arpa."
    assert doc["reverse_zones"][0] == "0.1.10.in-addr.arpa."
    assert len(doc["reverse_zones"]) == 16
    assert doc["ptr"] == "3.2.1.10.in-addr.arpa."


def test_info_ipv6() -> None:
    doc = calc.info(calc.parse_interface("2001:db8::/48")).to_json()
    assert doc["broadcast"] is None
    assert doc["last_host"] == "2001:db8:0:ffff:ffff:ffff:ffff:ffff"
    assert doc["usable_hosts"] == 2**80
    assert doc["scope"]["kind"] == "documentation"
    assert doc["reverse_zone"] == "0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
    assert doc["class"] is None


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("10.0.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.7.0/24", "private"),
        ("100.64.0.0/10", "cgnat"),
        ("127.0.0.1", "loopback"),
        ("169.254.10.1", "link-local"),
        ("224.0.0.251", "multicast"),
        ("192.0.2.0/24", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.0/25", "documentation"),
        ("8.8.8.8", "global"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("0.0.0.0/0", "mixed"),
        ("::1", "loopback"),
        ("fe80::1/64", "link-local"),
        ("fd00::/8", "private"),
        ("ff02::1", "multicast"),
        ("2001:db8::/32", "documentation"),
        ("2606:4700::/32", "global"),
        ("::ffff:10.0.0.1", "ipv4-mapped"),
    ],
)
def test_scopes(text: str, kind: str) -> None:
    assert calc.classify(calc.parse_network(text)).kind == kind


def test_point_to_point_and_single_host() -> None:
    p2p = calc.info(calc.parse_interface("10.0.0.0/31"))
    assert (p2p.usable_hosts, str(p2p.first_host), str(p2p.last_host)) == (
        2,
        "10.0.0.0",
        "10.0.0.1",
    )
    assert p2p.broadcast is None
    single = calc.info(calc.parse_interface("10.0.0.9"))
    assert (single.usable_hosts, single.network.prefixlen) == (1, 32)


def test_hosts_50_in_a_22_gives_sixteen_26s() -> None:
    assert calc.prefix_for_hosts(4, 50) == 26
    assert calc.prefix_for_hosts(4, 62) == 26
    assert calc.prefix_for_hosts(4, 63) == 25
    assert calc.prefix_for_hosts(6, 2**64) == 64
    assert calc.split_count(calc.parse_network("10.0.0.0/22"), 26) == 16


def test_rfc2317_name() -> None:
    assert calc.rfc2317_zone(calc.parse_network("192.0.2.64/26")) == "64/26.2.0.192.in-addr.arpa."
    assert calc.rfc2317_zone(calc.parse_network("192.0.2.0/24")) is None


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: calc.parse_interface("10.1.2.300/20"), "not an IPv4 or IPv6"),
        (lambda: calc.parse_address("10.0.0.0/8"), "a prefix is not allowed"),
        (lambda: calc.parse_network("10.0.0.1/8", strict=True), "host bits"),
        (lambda: calc.split(calc.parse_network("10.0.0.0/22"), 20), "between 22 and 32"),
        (lambda: calc.prefix_for_hosts(4, 0), "at least 1"),
        (lambda: calc.prefix_for_hosts(4, 2**32), "no IPv4 subnet"),
        (
            lambda: calc.range_to_cidrs(calc.parse_address("10.0.0.9"), calc.parse_address("::1")),
            "same IP version",
        ),
        (
            lambda: calc.range_to_cidrs(
                calc.parse_address("10.0.0.9"), calc.parse_address("10.0.0.1")
            ),
            "backwards",
        ),
        (lambda: calc.parse_list(["10.0.0.0/8", "", "bogus"], "plan.txt"), "plan.txt:3:"),
    ],
)
def test_bad_input_is_a_usage_error(call, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        call()


# --------------------------------------------------------------------------- the command


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backhaul", "subnet", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "LANG": "C.UTF-8"},
    )


def test_cli_info_json() -> None:
    proc = run("info", "10.1.2.3/20", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["network"] == "10.1.0.0/20" and doc["usable_hosts"] == 4094


def test_cli_info_human_with_netmask_word() -> None:
    proc = run("info", "10.1.2.3", "255.255.255.192")
    assert proc.returncode == 0, proc.stderr
    assert "10.1.2.0/26" in proc.stdout
    assert "10.1.2.63" in proc.stdout  # broadcast
    assert "00001010.00000001.00000010.00 000011" in proc.stdout  # binary, split at /26
    assert "\x1b[" not in proc.stdout  # no colour when not a terminal


def test_cli_split_hosts_json() -> None:
    proc = run("split", "10.0.0.0/22", "--hosts", "50", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["prefixlen"] == 26 and doc["count"] == 16 and not doc["truncated"]
    assert doc["subnets"][1] == {
        "network": "10.0.0.64/26",
        "first_host": "10.0.0.65",
        "last_host": "10.0.0.126",
        "broadcast": "10.0.0.127",
        "usable_hosts": 62,
    }


def test_cli_split_truncates_huge_splits() -> None:
    proc = run("split", "2001:db8::/32", "--prefix", "64", "--limit", "3", "--json")
    doc = json.loads(proc.stdout)
    assert (doc["count"], doc["shown"], doc["truncated"]) == (2**32, 3, True)


def test_cli_summarize_stdin_and_range() -> None:
    proc = run("summarize", "--json", stdin="10.0.0.0/24\n10.0.1.0/24, 10.0.2.0/23 # lab\n")
    assert json.loads(proc.stdout)["prefixes"] == ["10.0.0.0/22"]
    proc = run("range", "10.0.0.5", "10.0.0.20", "--json")
    assert json.loads(proc.stdout)["prefixes"] == [
        "10.0.0.5/32",
        "10.0.0.6/31",
        "10.0.0.8/29",
        "10.0.0.16/30",
        "10.0.0.20/32",
    ]


def test_cli_contains_exit_codes() -> None:
    assert run("contains", "10.0.0.0/8", "10.1.2.3", "10.9.0.0/16").returncode == 0
    proc = run("contains", "10.0.0.0/8", "10.1.2.3", "11.0.0.1", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["results"][1] == {"item": "11.0.0.1", "contained": False}


def test_cli_overlap_from_file_and_stdin(tmp_path) -> None:
    plan = tmp_path / "plan.txt"
    plan.write_text("# site plan\n10.0.0.0/16\n10.1.0.0/16\n10.0.4.0/22\n")
    proc = run("overlap", str(plan), "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["overlaps"] == [
        {
            "outer": "10.0.0.0/16",
            "outer_line": 2,
            "inner": "10.0.4.0/22",
            "inner_line": 4,
            "relation": "contains",
            "shared_addresses": 1024,
        }
    ]
    clean = run("overlap", stdin="10.0.0.0/16\n10.1.0.0/16\n")
    assert clean.returncode == 0 and "no overlaps" in clean.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("info", "10.1.2.300/20"), "not an IPv4 or IPv6 address"),
        (("split", "10.0.0.0/22", "--prefix", "20"), "between 22 and 32"),
        (("split", "10.0.0.0/26", "--hosts", "500"), "larger than 10.0.0.0/26"),
        (("range", "10.0.0.9", "10.0.0.1"), "backwards"),
        (("overlap", "/nonexistent/plan.txt"), "cannot read"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(args: tuple[str, ...], needle: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
