"""IP addressing and subnetting: the calculations behind ``backhaul subnet``.

Pure functions over the standard library's :mod:`ipaddress` (no I/O, no clock). Every function
takes parsed values; the ``parse_*`` helpers turn user text into values and raise
:class:`~backhaul.errors.UsageError` (exit code 2) with a message that says what to type.

Conventions, the ones ipcalc and sipcalc users expect:

- IPv4 usable hosts exclude the network and broadcast addresses, except on a /31 (two hosts,
  RFC 3021 point-to-point) and a /32 (the one address).
- IPv6 has no broadcast; every address of a prefix is counted as usable (the first one is also
  the Subnet-Router anycast address, RFC 4291 §2.6.1), except that a /127 has two (RFC 6164).
- Scopes come from the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890) plus
  the multicast, class E and IPv6 global-unicast blocks; a prefix that straddles several
  special blocks is reported as ``mixed``.
- Reverse DNS zones follow octet (``in-addr.arpa``, RFC 1035 §3.5) and nibble (``ip6.arpa``,
  RFC 3596 §2.5) boundaries; an IPv4 prefix longer than /24 also gets its RFC 2317 classless
  delegation name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from backhaul.errors import UsageError

__all__ = [
    "IPAddress",
    "IPInterface",
    "IPNetwork",
    "Overlap",
    "Scope",
    "SubnetInfo",
    "address_class",
    "binary_view",
    "classify",
    "contains",
    "info",
    "max_prefixlen",
    "overlaps",
    "parse_address",
    "parse_interface",
    "parse_item",
    "parse_list",
    "parse_network",
    "prefix_for_hosts",
    "range_to_cidrs",
    "reverse_zone",
    "reverse_zones",
    "rfc2317_zone",
    "split",
    "split_count",
    "summarize",
    "usable_hosts",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

_EXAMPLES = "write it like 10.1.2.3, 10.1.2.0/24, 10.1.2.3/255.255.255.0 or 2001:db8::/48"


# --------------------------------------------------------------------------- parsing


def _clean(text: str) -> str:
    cleaned = text.strip()
    # "10.1.2.3 255.255.240.0" (address and netmask as two words) is what ifconfig shows.
    parts = cleaned.split()
    if len(parts) == 2 and "/" not in cleaned:
        cleaned = f"{parts[0]}/{parts[1]}"
    return cleaned


def parse_interface(text: str) -> IPInterface:
    """Parse ``ADDRESS[/PREFIX|/NETMASK]``, keeping the address's host bits.

    A bare address is a /32 (IPv4) or /128 (IPv6) interface.
    """
    cleaned = _clean(text)
    if not cleaned:
        raise UsageError(f"empty address; {_EXAMPLES}")
    try:
        return ipaddress.ip_interface(cleaned)
    except ValueError as exc:
        raise UsageError(
            f"{text.strip()!r} is not an IPv4 or IPv6 address or prefix; {_EXAMPLES}"
        ) from exc


def parse_network(text: str, *, strict: bool = False) -> IPNetwork:
    """Parse a prefix. With ``strict`` a prefix with host bits set is refused."""
    iface = parse_interface(text)
    network = iface.network
    if strict and iface.ip != network.network_address:
        raise UsageError(
            f"{text.strip()!r} has host bits set; the network is {network} "
            f"(use {network}, or 'subnet info' to see the network of an address)"
        )
    return network


def parse_address(text: str) -> IPAddress:
    """Parse a single address (no prefix)."""
    cleaned = text.strip()
    try:
        return ipaddress.ip_address(cleaned)
    except ValueError as exc:
        hint = " (a prefix is not allowed here)" if "/" in cleaned else ""
        raise UsageError(
            f"{cleaned!r} is not an IPv4 or IPv6 address{hint}; "
            "write it like 10.1.2.3 or 2001:db8::1"
        ) from exc


def parse_item(text: str) -> IPAddress | IPNetwork:
    """An address when there is no ``/``, otherwise a prefix (host bits masked off)."""
    if "/" in text or len(text.split()) == 2:
        return parse_network(text)
    return parse_address(text)


def parse_list(lines: Iterable[str], source: str = "<stdin>") -> list[tuple[int, IPNetwork]]:
    """Parse a list of prefixes, one or more a line (commas or blanks between), ``#`` comments.

    Returns ``(line_number, network)`` pairs; an error names ``source:line``.
    """
    out: list[tuple[int, IPNetwork]] = []
    for number, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].replace(",", " ")
        for word in text.split():
            try:
                out.append((number, parse_network(word)))
            except UsageError as exc:
                raise UsageError(f"{source}:{number}: {exc}") from exc.__cause__
    return out


def max_prefixlen(version: int) -> int:
    """32 for IPv4, 128 for IPv6."""
    if version == 4:
        return 32
    if version == 6:
        return 128
    raise UsageError(f"IP version must be 4 or 6, not {version}")


# --------------------------------------------------------------------------- hosts


def usable_hosts(network: IPNetwork) -> int:
    """Number of addresses that can be given to hosts (see the module docstring)."""
    host_bits = network.max_prefixlen - network.prefixlen
    total = 1 << host_bits
    if host_bits <= 1:
        return total  # /32, /31 (RFC 3021), /128, /127 (RFC 6164)
    if network.version == 4:
        return total - 2
    return total


def _first_last(network: IPNetwork) -> tuple[IPAddress, IPAddress]:
    host_bits = network.max_prefixlen - network.prefixlen
    if network.version == 4 and host_bits >= 2:
        return network.network_address + 1, network.broadcast_address - 1
    return network.network_address, network.broadcast_address


def prefix_for_hosts(version: int, hosts: int) -> int:
    """The longest prefix (smallest subnet) with at least ``hosts`` usable addresses."""
    width = max_prefixlen(version)
    if hosts < 1:
        raise UsageError(f"--hosts must be at least 1, not {hosts}")
    if hosts <= 2:
        return width - (hosts - 1)  # /32 or /31 (IPv4), /128 or /127 (IPv6)
    reserved = 2 if version == 4 else 0  # network and broadcast addresses
    host_bits = (hosts + reserved - 1).bit_length()
    if host_bits > width:
        raise UsageError(
            f"no IPv{version} subnet holds {hosts} hosts (the most is {(1 << width) - reserved})"
        )
    return width - host_bits


# --------------------------------------------------------------------------- split / join


def _check_new_prefix(network: IPNetwork, new_prefix: int) -> None:
    if not network.prefixlen <= new_prefix <= network.max_prefixlen:
        raise UsageError(
            f"cannot split {network} into /{new_prefix}: the new prefix must be between "
            f"{network.prefixlen} and {network.max_prefixlen}"
        )


def split_count(network: IPNetwork, new_prefix: int) -> int:
    """How many /``new_prefix`` subnets ``network`` splits into."""
    _check_new_prefix(network, new_prefix)
    return 1 << (new_prefix - network.prefixlen)


def split(network: IPNetwork, new_prefix: int) -> Iterator[IPNetwork]:
    """The /``new_prefix`` subnets of ``network``, in address order (lazily: there may be 2^64)."""
    _check_new_prefix(network, new_prefix)
    return network.subnets(new_prefix=new_prefix)


def summarize(networks: Iterable[IPNetwork]) -> list[IPNetwork]:
    """Collapse prefixes into the fewest CIDRs covering exactly the same addresses.

    IPv4 results come first, then IPv6, each in address order.
    """
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for net in networks:
        if isinstance(net, ipaddress.IPv4Network):
            v4.append(net)
        else:
            v6.append(net)
    out: list[IPNetwork] = list(ipaddress.collapse_addresses(v4))
    out.extend(ipaddress.collapse_addresses(v6))
    return out


def range_to_cidrs(first: IPAddress, last: IPAddress) -> list[IPNetwork]:
    """Deaggregate the inclusive range ``first``..``last`` into the fewest CIDRs."""
    if first.version != last.version:
        raise UsageError(f"{first} and {last} are not the same IP version")
    if int(first) > int(last):
        raise UsageError(f"the range is backwards: {first} comes after {last}")
    if isinstance(first, ipaddress.IPv4Address) and isinstance(last, ipaddress.IPv4Address):
        return list(ipaddress.summarize_address_range(first, last))
    if isinstance(first, ipaddress.IPv6Address) and isinstance(last, ipaddress.IPv6Address):
        return list(ipaddress.summarize_address_range(first, last))
    raise AssertionError("unreachable: versions were checked")  # pragma: no cover


def contains(network: IPNetwork, item: IPAddress | IPNetwork) -> bool:
    """Whether ``item`` (an address or a whole prefix) lies inside ``network``."""
    if item.version != network.version:
        return False
    if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return int(network.network_address) <= int(item.network_address) and int(
            item.broadcast_address
        ) <= int(network.broadcast_address)
    return int(network.network_address) <= int(item) <= int(network.broadcast_address)


@dataclass(frozen=True)
class Overlap:
    """Two entries of a list that share addresses.

    ``outer`` contains ``inner`` (CIDR blocks either nest or are disjoint); ``outer_index`` and
    ``inner_index`` are positions in the input list. ``relation`` is ``"duplicate"`` when the
    two are the same prefix, else ``"contains"``.
    """

    outer: IPNetwork
    inner: IPNetwork
    outer_index: int
    inner_index: int

    @property
    def relation(self) -> str:
        return "duplicate" if self.outer == self.inner else "contains"

    @property
    def shared_addresses(self) -> int:
        return self.inner.num_addresses


def overlaps(networks: Sequence[IPNetwork]) -> list[Overlap]:
    """Every pair of entries that overlap, found with one sorted sweep.

    Two CIDR blocks overlap only when one contains the other, so after sorting by (version,
    start, prefix length) each entry overlaps exactly the still-open blocks on a stack.
    """
    order = sorted(
        range(len(networks)),
        key=lambda i: (
            networks[i].version,
            int(networks[i].network_address),
            networks[i].prefixlen,
            i,
        ),
    )
    found: list[Overlap] = []
    stack: list[int] = []
    for index in order:
        net = networks[index]
        while stack:
            top = networks[stack[-1]]
            if top.version != net.version or int(top.broadcast_address) < int(net.network_address):
                stack.pop()
            else:
                break
        for open_index in stack:
            found.append(Overlap(networks[open_index], net, open_index, index))
        stack.append(index)
    found.sort(key=lambda o: (o.outer_index, o.inner_index))
    return found


# --------------------------------------------------------------------------- scope


@dataclass(frozen=True)
class Scope:
    """Where a prefix sits in the address space: a machine ``kind`` and a human ``name``."""

    kind: str
    name: str
    rfc: str | None = None
    block: IPNetwork | None = None


def _n(text: str) -> IPNetwork:
    return ipaddress.ip_network(text)


# (block, kind, name, rfc) from the IANA special-purpose registries and RFC 6890.
_SPECIAL: tuple[tuple[IPNetwork, str, str, str], ...] = (
    (_n("0.0.0.0/8"), "this-network", '"This network"', "RFC 791"),
    (_n("0.0.0.0/32"), "unspecified", "This host on this network (unspecified)", "RFC 1122"),
    (_n("10.0.0.0/8"), "private", "Private-Use", "RFC 1918"),
    (_n("100.64.0.0/10"), "cgnat", "Shared Address Space (CGNAT)", "RFC 6598"),
    (_n("127.0.0.0/8"), "loopback", "Loopback", "RFC 1122"),
    (_n("169.254.0.0/16"), "link-local", "Link-Local", "RFC 3927"),
    (_n("172.16.0.0/12"), "private", "Private-Use", "RFC 1918"),
    (_n("192.0.0.0/24"), "ietf-protocol", "IETF Protocol Assignments", "RFC 6890"),
    (_n("192.0.0.0/29"), "ietf-protocol", "IPv4 Service Continuity Prefix", "RFC 7335"),
    (_n("192.0.2.0/24"), "documentation", "Documentation (TEST-NET-1)", "RFC 5737"),
    (_n("192.31.196.0/24"), "as112", "AS112-v4", "RFC 7535"),
    (_n("192.52.193.0/24"), "amt", "Automatic Multicast Tunneling", "RFC 7450"),
    (_n("192.88.99.0/24"), "deprecated", "Deprecated (6to4 Relay Anycast)", "RFC 7526"),
    (_n("192.168.0.0/16"), "private", "Private-Use", "RFC 1918"),
    (_n("192.175.48.0/24"), "as112", "Direct Delegation AS112 Service", "RFC 7534"),
    (_n("198.18.0.0/15"), "benchmarking", "Benchmarking", "RFC 2544"),
    (_n("198.51.100.0/24"), "documentation", "Documentation (TEST-NET-2)", "RFC 5737"),
    (_n("203.0.113.0/24"), "documentation", "Documentation (TEST-NET-3)", "RFC 5737"),
    (_n("224.0.0.0/4"), "multicast", "Multicast", "RFC 5771"),
    (_n("224.0.0.0/24"), "multicast", "Multicast, Local Network Control Block", "RFC 5771"),
    (_n("232.0.0.0/8"), "multicast", "Multicast, Source-Specific", "RFC 4607"),
    (_n("239.0.0.0/8"), "multicast", "Multicast, Administratively Scoped", "RFC 2365"),
    (_n("240.0.0.0/4"), "reserved", "Reserved (class E)", "RFC 1112"),
    (_n("255.255.255.255/32"), "broadcast", "Limited Broadcast", "RFC 919"),
    (_n("::/128"), "unspecified", "Unspecified Address", "RFC 4291"),
    (_n("::1/128"), "loopback", "Loopback", "RFC 4291"),
    (_n("::ffff:0:0/96"), "ipv4-mapped", "IPv4-mapped Address", "RFC 4291"),
    (_n("64:ff9b::/96"), "translation", "IPv4-IPv6 Translation (NAT64)", "RFC 6052"),
    (_n("64:ff9b:1::/48"), "translation", "Local-Use IPv4/IPv6 Translation", "RFC 8215"),
    (_n("100::/64"), "discard", "Discard-Only Address Block", "RFC 6666"),
    (_n("2000::/3"), "global", "Global Unicast", "RFC 4291"),
    (_n("2001::/23"), "ietf-protocol", "IETF Protocol Assignments", "RFC 2928"),
    (_n("2001::/32"), "teredo", "TEREDO", "RFC 4380"),
    (_n("2001:2::/48"), "benchmarking", "Benchmarking", "RFC 5180"),
    (_n("2001:20::/28"), "orchid", "ORCHIDv2", "RFC 7343"),
    (_n("2001:db8::/32"), "documentation", "Documentation", "RFC 3849"),
    (_n("2002::/16"), "6to4", "6to4", "RFC 3056"),
    (_n("3fff::/20"), "documentation", "Documentation", "RFC 9637"),
    (_n("5f00::/16"), "srv6", "Segment Routing (SRv6) SIDs", "RFC 9602"),
    (_n("fc00::/7"), "private", "Unique-Local", "RFC 4193"),
    (_n("fe80::/10"), "link-local", "Link-Local Unicast", "RFC 4291"),
    (_n("fec0::/10"), "deprecated", "Site-Local (deprecated)", "RFC 3879"),
    (_n("ff00::/8"), "multicast", "Multicast", "RFC 4291"),
    (_n("ff01::/16"), "multicast", "Multicast, Interface-Local", "RFC 4291"),
    (_n("ff02::/16"), "multicast", "Multicast, Link-Local", "RFC 4291"),
    (_n("ff05::/16"), "multicast", "Multicast, Site-Local", "RFC 4291"),
    (_n("ff0e::/16"), "multicast", "Multicast, Global", "RFC 4291"),
)


# The same table as integer bounds, for a fast scan: (version, first, last, prefixlen, entry).
_SPECIAL_BOUNDS = tuple(
    (b.version, int(b.network_address), int(b.broadcast_address), b.prefixlen, (b, k, n, r))
    for b, k, n, r in _SPECIAL
)


def classify(network: IPNetwork) -> Scope:
    """The special-purpose block holding ``network``, or ``mixed`` when it straddles several."""
    version = network.version
    first, last = int(network.network_address), int(network.broadcast_address)
    holder: tuple[IPNetwork, str, str, str] | None = None
    holder_len = -1
    for b_version, b_first, b_last, b_len, entry in _SPECIAL_BOUNDS:
        if b_version == version and b_first <= first and last <= b_last and b_len > holder_len:
            holder, holder_len = entry, b_len
    if holder is None:
        base = (
            Scope("global", "Public (global unicast)")
            if version == 4
            else Scope("reserved", "Reserved by IETF (unassigned)", "RFC 4291")
        )
    else:
        base = Scope(holder[1], holder[2], holder[3], holder[0])
    inside = sorted(
        {
            entry[1]
            for b_version, b_first, b_last, b_len, entry in _SPECIAL_BOUNDS
            if b_version == version
            and first <= b_first
            and b_last <= last
            and b_len > network.prefixlen
            and entry[1] != base.kind
        }
    )
    if inside:
        kinds = [base.kind, *inside]
        shown = ", ".join(kinds[:5]) + (f" and {len(kinds) - 5} more" if len(kinds) > 5 else "")
        return Scope("mixed", f"Mixed (spans {shown})")
    return base


def address_class(network: IPNetwork | IPAddress) -> str | None:
    """The historical IPv4 class (A-E) of the first address; ``None`` for IPv6."""
    if network.version != 4:
        return None
    first = network.network_address if not isinstance(network, ipaddress.IPv4Address) else network
    top = int(first) >> 24
    if top < 128:
        return "A"
    if top < 192:
        return "B"
    if top < 224:
        return "C"
    if top < 240:
        return "D"
    return "E"


# --------------------------------------------------------------------------- binary, DNS


def binary_view(address: IPAddress) -> str:
    """Bits of ``address``: dotted octets for IPv4, colon-separated 16-bit groups for IPv6."""
    if address.version == 4:
        return ".".join(f"{octet:08b}" for octet in address.packed)
    value = int(address)
    return ":".join(f"{(value >> shift) & 0xFFFF:016b}" for shift in range(112, -1, -16))


def _zone_of(network: IPNetwork, boundary_prefixlen: int) -> str:
    """The reverse name of the first ``boundary_prefixlen`` bits of ``network``."""
    if network.version == 4:
        octets = network.network_address.packed[: boundary_prefixlen // 8]
        labels = [str(o) for o in reversed(octets)]
        return ".".join([*labels, "in-addr", "arpa", ""])
    nibbles = f"{int(network.network_address):032x}"[: boundary_prefixlen // 4]
    return ".".join([*reversed(nibbles), "ip6", "arpa", ""])


def reverse_zone(network: IPNetwork) -> str:
    """The most specific reverse zone holding every PTR of ``network`` (octet/nibble floor)."""
    unit = 8 if network.version == 4 else 4
    return _zone_of(network, network.prefixlen // unit * unit)


def reverse_zones(network: IPNetwork) -> list[str]:
    """The reverse zones (octet/nibble ceiling) that together cover exactly ``network``."""
    unit = 8 if network.version == 4 else 4
    boundary = -(-network.prefixlen // unit) * unit
    return [_zone_of(sub, boundary) for sub in network.subnets(new_prefix=boundary)]


def rfc2317_zone(network: IPNetwork) -> str | None:
    """RFC 2317 classless delegation name (``0/26.2.0.192.in-addr.arpa.``) for a /25-/31."""
    if network.version != 4 or not 24 < network.prefixlen < 32:
        return None
    last = network.network_address.packed[3]
    return f"{last}/{network.prefixlen}.{_zone_of(network, 24)}"


# --------------------------------------------------------------------------- info


@dataclass(frozen=True)
class SubnetInfo:
    """Everything ``subnet info`` shows about one address/prefix."""

    address: IPAddress
    network: IPNetwork
    netmask: IPAddress
    wildcard: IPAddress
    broadcast: IPAddress | None
    first_host: IPAddress
    last_host: IPAddress
    total_addresses: int
    usable_hosts: int
    address_class: str | None
    scope: Scope
    reverse_zone: str
    reverse_zones: list[str] = field(default_factory=list)
    rfc2317_zone: str | None = None

    @property
    def version(self) -> int:
        return self.network.version

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    @property
    def ptr_name(self) -> str:
        return self.address.reverse_pointer + "."

    def to_json(self) -> dict[str, Any]:
        """The documented ``subnet info --json`` shape (see the CLI help)."""
        return {
            "input": str(self.address) + f"/{self.prefixlen}",
            "version": self.version,
            "address": str(self.address),
            "network": str(self.network),
            "prefixlen": self.prefixlen,
            "netmask": str(self.netmask),
            "wildcard": str(self.wildcard),
            "broadcast": None if self.broadcast is None else str(self.broadcast),
            "first_host": str(self.first_host),
            "last_host": str(self.last_host),
            "total_addresses": self.total_addresses,
            "usable_hosts": self.usable_hosts,
            "class": self.address_class,
            "scope": {
                "kind": self.scope.kind,
                "name": self.scope.name,
                "rfc": self.scope.rfc,
                "block": None if self.scope.block is None else str(self.scope.block),
            },
            "private": self.network.is_private,
            "global": self.network.is_global,
            "binary": {
                "address": binary_view(self.address),
                "netmask": binary_view(self.netmask),
                "network": binary_view(self.network.network_address),
            },
            "ptr": self.ptr_name,
            "reverse_zone": self.reverse_zone,
            "reverse_zones": self.reverse_zones,
            "rfc2317_zone": self.rfc2317_zone,
        }


def info(iface: IPInterface) -> SubnetInfo:
    """Describe the prefix ``iface`` belongs to (the address keeps its host bits)."""
    network = iface.network
    first, last = _first_last(network)
    broadcast: IPAddress | None = None
    if network.version == 4 and network.prefixlen < 31:
        broadcast = network.broadcast_address
    return SubnetInfo(
        address=iface.ip,
        network=network,
        netmask=network.netmask,
        wildcard=network.hostmask,
        broadcast=broadcast,
        first_host=first,
        last_host=last,
        total_addresses=network.num_addresses,
        usable_hosts=usable_hosts(network),
        address_class=address_class(network),
        scope=classify(network),
        reverse_zone=reverse_zone(network),
        reverse_zones=reverse_zones(network),
        rfc2317_zone=rfc2317_zone(network),
    )
