"""The ``dhcp:`` section: the DHCPv4 server's interfaces, subnets, pools, options and
reservations (frozen pydantic models; see :mod:`backhaul.services.dhcp`).

Example::

    dhcp:
      interfaces: [eth1]
      state_dir: /var/lib/backhaul
      subnets:
        - subnet: 10.0.0.0/24
          pools: [10.0.0.100-10.0.0.250]
          lease_time: 1h
          options:
            routers: [10.0.0.1]
            dns_servers: [10.0.0.1]
            domain_name: lab.example
          reservations:
            - mac: 02:00:00:00:00:01
              address: 10.0.0.10
              hostname: printer

A subnet that one of ``interfaces`` has an address in is served directly; any other subnet is
served through relay agents (the relay's ``giaddr`` selects it, RFC 2131 §4.3.1). Which
interface has which address is only known at start, so those checks run there.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import Field, PlainSerializer, PlainValidator, WithJsonSchema, model_validator

from backhaul.config.fields import ConfigModel, ListenAddress, Problems, WholeSeconds
from backhaul.config.units import describe

__all__ = [
    "AddressRange",
    "DhcpConfig",
    "DhcpOptions",
    "DhcpSubnet",
    "Reservation",
    "StaticRoute",
    "dump",
    "parse_range",
]

_MAC = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$")
_HEX = re.compile(r"^[0-9a-f]{2}([:-]?[0-9a-f]{2})*$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_IFNAME = re.compile(r"^[^/\s:]{1,15}$")


def parse_range(value: object) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """``"10.0.0.100-10.0.0.250"`` (or a CIDR such as ``10.0.1.0/25``) -> first, last."""
    text = str(value).strip() if isinstance(value, str) else None
    expected = "expected a range FIRST-LAST such as 10.0.0.100-10.0.0.250, or a CIDR"
    if not text:
        raise ValueError(f"found {describe(value)}: {expected}")
    try:
        if "-" in text:
            first_text, last_text = (part.strip() for part in text.split("-", 1))
            first, last = ipaddress.IPv4Address(first_text), ipaddress.IPv4Address(last_text)
        else:
            net = ipaddress.IPv4Network(text, strict=False)
            first, last = net.network_address, net.broadcast_address
    except ValueError:
        raise ValueError(f"found {describe(value)}: {expected}") from None
    if int(last) < int(first):
        raise ValueError(f"found {describe(value)}: the last address is before the first")
    return first, last


AddressRange = Annotated[
    tuple[ipaddress.IPv4Address, ipaddress.IPv4Address],
    PlainValidator(parse_range),
    PlainSerializer(lambda v: f"{v[0]}-{v[1]}", return_type=str),
    WithJsonSchema({"type": "string", "description": "FIRST-LAST or a CIDR"}),
]


def _hex_bytes(value: object, what: str) -> bytes:
    text = str(value).strip().lower() if isinstance(value, str) else ""
    if not _HEX.match(text):
        raise ValueError(f"found {describe(value)}: expected {what} as hex bytes, e.g. 01:02:0a")
    return bytes.fromhex(text.replace(":", "").replace("-", ""))


def _option_value(value: object) -> bytes:
    """A raw option value: ``"hex:01:02"`` for bytes, any other string as its UTF-8 text."""
    if isinstance(value, str) and value.startswith("hex:"):
        return _hex_bytes(value[4:], "the value")
    if isinstance(value, str):
        return value.encode()
    raise ValueError(f"found {describe(value)}: expected 'hex:01:02...' or text")


RawOption = Annotated[
    bytes,
    PlainValidator(_option_value),
    PlainSerializer(lambda v: "hex:" + v.hex(":"), return_type=str),
    WithJsonSchema({"type": "string", "description": "'hex:01:02' or text"}),
]


class StaticRoute(ConfigModel):
    """One classless static route (option 121, RFC 3442)."""

    destination: ipaddress.IPv4Network
    router: ipaddress.IPv4Address


class DhcpOptions(ConfigModel):
    """Options sent to clients (RFC 2132 unless noted). Unset = not sent."""

    routers: tuple[ipaddress.IPv4Address, ...] | None = None
    dns_servers: tuple[ipaddress.IPv4Address, ...] | None = None
    domain_name: str | None = None
    domain_search: tuple[str, ...] | None = Field(default=None, description="option 119")
    mtu: int | None = Field(default=None, ge=68, le=65535, description="option 26")
    ntp_servers: tuple[ipaddress.IPv4Address, ...] | None = None
    routes: tuple[StaticRoute, ...] | None = Field(default=None, description="option 121")
    vendor_specific: RawOption | None = Field(default=None, description="option 43")
    raw: dict[int, RawOption] = Field(
        default_factory=dict, description="any other option: code -> 'hex:..' or text"
    )

    @model_validator(mode="after")
    def _check(self) -> DhcpOptions:
        problems: list[tuple[str, str]] = []
        reserved = {0, 1, 50, 51, 52, 53, 54, 55, 58, 59, 61, 82, 255}
        for code, value in self.raw.items():
            if not 1 <= code <= 254 or code in reserved:
                problems.append(
                    (
                        f"raw.{code}",
                        f"found option {code}: expected a code from 1 to 254 that the server"
                        " does not set itself (not 1, 50-55, 58, 59, 61, 82)",
                    )
                )
            elif len(value) > 255 * 4:
                problems.append((f"raw.{code}", "value is over 1020 bytes"))
        for name in (self.domain_name, *(self.domain_search or ())):
            if name is not None and not all(_LABEL.match(p) for p in name.rstrip(".").split(".")):
                problems.append(
                    (
                        "domain_name" if name == self.domain_name else "domain_search",
                        f"found {describe(name)}: expected a DNS name such as lab.example",
                    )
                )
        if problems:
            raise Problems(problems)
        return self

    def merged(self, override: DhcpOptions | None) -> DhcpOptions:
        """These options with every key ``override`` sets replaced."""
        if override is None:
            return self
        changes = {k: getattr(override, k) for k in override.model_fields_set}
        if "raw" in changes:
            changes["raw"] = {**self.raw, **override.raw}
        return self.model_copy(update=changes)


class Reservation(ConfigModel):
    """A fixed address for one client, by MAC or by client-id (option 61)."""

    mac: str | None = None
    client_id: str | None = Field(default=None, description="option 61 as hex bytes")
    address: ipaddress.IPv4Address
    hostname: str | None = None
    options: DhcpOptions | None = Field(default=None, description="per-client overrides")

    @model_validator(mode="after")
    def _check(self) -> Reservation:
        problems: list[tuple[str, str]] = []
        if (self.mac is None) == (self.client_id is None):
            problems.append(("", "expected exactly one of mac or client_id"))
        if self.mac is not None and not _MAC.match(self.mac.lower()):
            problems.append(("mac", f"found {describe(self.mac)}: expected 02:00:00:00:00:01"))
        if self.client_id is not None:
            try:
                _hex_bytes(self.client_id, "client_id")
            except ValueError as exc:
                problems.append(("client_id", str(exc)))
        if self.hostname is not None and not _LABEL.match(self.hostname):
            problems.append(
                ("hostname", f"found {describe(self.hostname)}: expected one DNS label")
            )
        if problems:
            raise Problems(problems)
        return self

    @property
    def client_key(self) -> str:
        """The server's key for this client (see :class:`~backhaul.services.dhcp.lease.Lease`)."""
        if self.client_id is not None:
            return "id:" + _hex_bytes(self.client_id, "client_id").hex()
        assert self.mac is not None
        return "hw:" + self.mac.lower().replace("-", "").replace(":", "")


class DhcpSubnet(ConfigModel):
    """One IPv4 subnet with its pools, options and reservations."""

    subnet: ipaddress.IPv4Network
    pools: tuple[AddressRange, ...] = Field(min_length=1)
    lease_time: WholeSeconds = Field(default=3600, description="at least 1m")
    renewal_time: WholeSeconds | None = Field(default=None, description="T1; default half")
    rebinding_time: WholeSeconds | None = Field(default=None, description="T2; default 7/8")
    server_id: ipaddress.IPv4Address | None = Field(
        default=None, description="default: the interface address (relayed: the first one)"
    )
    options: DhcpOptions = Field(default_factory=DhcpOptions)
    reservations: tuple[Reservation, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> DhcpSubnet:
        problems: list[tuple[str, str]] = []
        net = self.subnet
        usable = (int(net.network_address) + 1, int(net.broadcast_address) - 1)
        spans: list[tuple[int, int, int]] = []
        for i, (first, last) in enumerate(self.pools):
            if not (usable[0] <= int(first) and int(last) <= usable[1]):
                problems.append(
                    (
                        f"pools[{i}]",
                        f"found {first}-{last}, which is not inside {net}'s host addresses"
                        f" ({net.network_address + 1}-{net.broadcast_address - 1})",
                    )
                )
            for j, a, b in spans:
                if int(first) <= b and a <= int(last):
                    problems.append((f"pools[{i}]", f"overlaps pools[{j}]"))
            spans.append((i, int(first), int(last)))
        keys: dict[str, int] = {}
        addresses: dict[ipaddress.IPv4Address, int] = {}
        for i, res in enumerate(self.reservations):
            if res.address not in net or res.address in (
                net.network_address,
                net.broadcast_address,
            ):
                problems.append(
                    (
                        f"reservations[{i}].address",
                        f"found {res.address}: expected a host address of {net}",
                    )
                )
            if res.client_key in keys:
                problems.append(
                    (f"reservations[{i}]", f"same client as reservations[{keys[res.client_key]}]")
                )
            if res.address in addresses:
                problems.append(
                    (
                        f"reservations[{i}].address",
                        f"{res.address} is reserved by reservations[{addresses[res.address]}] too",
                    )
                )
            keys.setdefault(res.client_key, i)
            addresses.setdefault(res.address, i)
        if not 60 <= self.lease_time < 0xFFFFFFFF:
            problems.append(
                ("lease_time", f"found {self.lease_time}s: expected from 1m to 136 years")
            )
        t1 = self.renewal_time if self.renewal_time is not None else self.lease_time // 2
        t2 = self.rebinding_time if self.rebinding_time is not None else self.lease_time * 7 // 8
        if not t1 < t2 < self.lease_time:
            problems.append(
                (
                    "renewal_time",
                    f"expected renewal_time ({t1}s) < rebinding_time ({t2}s) < lease_time"
                    f" ({self.lease_time}s)",
                )
            )
        if problems:
            raise Problems(problems)
        return self

    @property
    def t1(self) -> int:
        return self.renewal_time if self.renewal_time is not None else self.lease_time // 2

    @property
    def t2(self) -> int:
        if self.rebinding_time is not None:
            return self.rebinding_time
        return self.lease_time * 7 // 8


class DhcpConfig(ConfigModel):
    """The DHCPv4 server."""

    interfaces: tuple[str, ...] = Field(min_length=1, description="where clients are")
    state_dir: str = Field(default="/var/lib/backhaul", min_length=1, description="lease store")
    offer_hold: WholeSeconds = Field(default=30, description="1s to 10m")
    decline_quarantine: WholeSeconds = Field(default=600, description="at least 1s")
    metrics_address: ListenAddress | None = Field(
        default=None,
        description="where GET /metrics answers; a DHCP-only config uses admin.address",
    )
    subnets: tuple[DhcpSubnet, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> DhcpConfig:
        problems: list[tuple[str, str]] = []
        for i, name in enumerate(self.interfaces):
            if not _IFNAME.match(name):
                problems.append(
                    (f"interfaces[{i}]", f"found {describe(name)}: expected an interface name")
                )
        if not 1 <= self.offer_hold <= 600:
            problems.append(("offer_hold", f"found {self.offer_hold}s: expected 1s to 10m"))
        if self.decline_quarantine < 1:
            problems.append(("decline_quarantine", "expected at least 1s"))
        for i, subnet in enumerate(self.subnets):
            for j in range(i):
                if subnet.subnet.overlaps(self.subnets[j].subnet):
                    problems.append(
                        (
                            f"subnets[{i}].subnet",
                            f"overlaps subnets[{j}] ({self.subnets[j].subnet})",
                        )
                    )
        if problems:
            raise Problems(problems)
        return self


def dump(config: DhcpConfig) -> dict[str, Any]:
    """The section as plain JSON-able data (what crosses into the service's process)."""
    return config.model_dump(mode="json", exclude_unset=False)
