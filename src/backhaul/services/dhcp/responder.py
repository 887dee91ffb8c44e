"""The DHCPv4 server's decisions, sans-IO: a decoded request and ``now`` in, an
:class:`Outcome` out (the reply, where it goes, the leases to make durable first).

RFC 2131 §4.3 and §4.4, server side:

- DISCOVER -> OFFER of the address the allocation policy picks, held for ``offer_hold``.
- REQUEST, in the four client states the RFC tells apart by option 54, option 50 and ciaddr
  (§4.3.2): SELECTING (server id present: ours -> ACK of the offered address, another ->
  the offer is dropped), INIT-REBOOT (requested address, no server id: ACK if it is the
  client's, NAK if it is wrong, silence if the client is unknown), RENEWING and REBINDING
  (ciaddr: ACK to extend, NAK if the address is not the client's).
- DECLINE quarantines the address; RELEASE ends the lease (no reply to either).
- INFORM -> ACK with the options only.

Replies go where §4.1 says: to the relay (giaddr) on port 67; a NAK broadcast; to ciaddr
when set; broadcast when the client set the BROADCAST flag; otherwise unicast to yiaddr at the
client's hardware address (the driver does that with a packet socket, since the client has
no address yet to be ARPed). Option 82 from a relay is echoed (RFC 3046 §2.2), option 61 too
(RFC 6842).

A request that cannot be served (not Ethernet, no message type, no subnet, pool full) is
dropped with a named reason, counted in :meth:`Responder.statistics`.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from backhaul.config.dhcp import DhcpConfig, DhcpOptions, DhcpSubnet
from backhaul.proto.dhcp import (
    BOOTREPLY,
    BOOTREQUEST,
    FLAG_BROADCAST,
    DhcpFormatError,
    DhcpPacket,
    MessageType,
    Opt,
    decode_fqdn,
    decode_u32,
    encode_addresses,
    encode_classless_routes,
    encode_domain_search,
    encode_u16,
    encode_u32,
)
from backhaul.services.dhcp.allocation import LeaseTable, PoolPlan
from backhaul.services.dhcp.lease import Lease, LeaseEvent, LeaseState, dotted

__all__ = [
    "Destination",
    "Outcome",
    "Responder",
    "SubnetPlan",
    "client_key",
    "plan_subnets",
]

_ZERO = ipaddress.IPv4Address(0)
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9-]+")
# sent whenever configured; the rest only when the client lists them in option 55
_ALWAYS = (Opt.SUBNET_MASK, Opt.ROUTER, Opt.DNS_SERVERS, Opt.DOMAIN_NAME)
_RECEIVED = {kind: f"received_{kind.name.lower()}" for kind in MessageType}


class Destination(enum.Enum):
    RELAY = "relay"  # giaddr, port 67
    UNICAST = "unicast"  # ciaddr, port 68
    BROADCAST = "broadcast"  # 255.255.255.255, port 68
    HARDWARE = "hardware"  # yiaddr at chaddr, port 68, without ARP


@dataclass(frozen=True)
class SubnetPlan:
    """A configured subnet made ready to answer from: encoded options, pools as integers."""

    network: ipaddress.IPv4Network
    server_id: ipaddress.IPv4Address
    interface: str | None  # the interface it is served on directly; None = relayed only
    pool: PoolPlan
    lease_time: int
    t1: int
    t2: int
    options: dict[int, bytes]
    per_client: dict[str, tuple[str | None, dict[int, bytes]]]  # key -> hostname, options

    @property
    def name(self) -> str:
        return self.pool.name


@dataclass(slots=True)
class Outcome:
    """What to do about one request: ``reply`` sent to ``destination`` after every lease in
    ``durable`` is on stable storage; ``log`` lines to write; ``dropped`` names why nothing
    happens."""

    reply: DhcpPacket | None = None
    destination: Destination | None = None
    address: ipaddress.IPv4Address | None = None
    durable: list[Lease] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    dropped: str | None = None
    max_size: int = 1472  # the reply's bound: the client's option 57 less IP and UDP


def client_key(packet: DhcpPacket) -> str:
    """Option 61 client-id if sent, else the hardware address (RFC 2131 §4.2)."""
    cid = packet.options.get(Opt.CLIENT_ID)
    if cid:
        return "id:" + cid.hex()
    return "hw:" + packet.chaddr.hex()


def _encode_options(options: DhcpOptions, network: ipaddress.IPv4Network) -> dict[int, bytes]:
    out: dict[int, bytes] = {Opt.SUBNET_MASK: network.netmask.packed}
    if options.routers:
        out[Opt.ROUTER] = encode_addresses(options.routers)
    if options.dns_servers:
        out[Opt.DNS_SERVERS] = encode_addresses(options.dns_servers)
    if options.domain_name:
        out[Opt.DOMAIN_NAME] = options.domain_name.rstrip(".").encode()
    out[Opt.BROADCAST_ADDRESS] = network.broadcast_address.packed
    if options.mtu is not None:
        out[Opt.INTERFACE_MTU] = encode_u16(options.mtu)
    if options.ntp_servers:
        out[Opt.NTP_SERVERS] = encode_addresses(options.ntp_servers)
    if options.vendor_specific is not None:
        out[Opt.VENDOR_SPECIFIC] = options.vendor_specific
    if options.domain_search:
        out[Opt.DOMAIN_SEARCH] = encode_domain_search(options.domain_search)
    if options.routes:
        out[Opt.CLASSLESS_ROUTES] = encode_classless_routes(
            (r.destination, r.router) for r in options.routes
        )
    out.update(options.raw)
    return out


def plan_subnets(
    config: DhcpConfig, interface_addresses: dict[str, list[ipaddress.IPv4Interface]]
) -> list[SubnetPlan]:
    """Each configured subnet with its server id and interface. ``interface_addresses``
    maps each of ``config.interfaces`` to its IPv4 addresses (read by the driver)."""
    plans = []
    first_address = next(
        (a.ip for name in config.interfaces for a in interface_addresses.get(name, [])), None
    )
    for subnet in config.subnets:
        interface, server_id = _local(subnet, config.interfaces, interface_addresses)
        server_id = subnet.server_id or server_id or first_address
        if server_id is None:
            raise ValueError(f"no address to use as server id for {subnet.subnet}")
        plans.append(_plan(subnet, interface, server_id))
    return plans


def _local(
    subnet: DhcpSubnet,
    interfaces: Iterable[str],
    addresses: dict[str, list[ipaddress.IPv4Interface]],
) -> tuple[str | None, ipaddress.IPv4Address | None]:
    for name in interfaces:
        for address in addresses.get(name, []):
            if address.ip in subnet.subnet:
                return name, address.ip
    return None, None


def _plan(
    subnet: DhcpSubnet, interface: str | None, server_id: ipaddress.IPv4Address
) -> SubnetPlan:
    reserved = {int(r.address): r.client_key for r in subnet.reservations}
    by_client = {r.client_key: int(r.address) for r in subnet.reservations}
    per_client = {
        r.client_key: (r.hostname, _encode_options(subnet.options.merged(r.options), subnet.subnet))
        for r in subnet.reservations
    }
    return SubnetPlan(
        network=subnet.subnet,
        server_id=server_id,
        interface=interface,
        pool=PoolPlan(
            name=str(subnet.subnet),
            pools=tuple((int(a), int(b)) for a, b in subnet.pools),
            reserved=reserved,
            reservations=by_client,
        ),
        lease_time=subnet.lease_time,
        t1=subnet.t1,
        t2=subnet.t2,
        options=_encode_options(subnet.options, subnet.subnet),
        per_client=per_client,
    )


def _hostname(packet: DhcpPacket) -> str:
    raw = packet.options.get(Opt.HOST_NAME)
    name: str | None = None
    if raw:
        name = raw.decode("ascii", "replace").split(".")[0]
    else:
        fqdn = packet.options.get(Opt.CLIENT_FQDN)
        if fqdn:
            try:
                name = decode_fqdn(fqdn)
            except DhcpFormatError:
                name = None
    if not name:
        return ""
    return _NOT_LABEL.sub("-", name).strip("-")[:63].lower()


class Responder:
    """The server's decision logic over a :class:`LeaseTable`; see the module docstring."""

    def __init__(
        self,
        subnets: list[SubnetPlan],
        *,
        offer_hold: float = 30.0,
        decline_quarantine: float = 600.0,
        table: LeaseTable | None = None,
    ) -> None:
        self.subnets = subnets
        self.table = table if table is not None else LeaseTable()
        self.offer_hold = offer_hold
        self.decline_quarantine = decline_quarantine
        self.counters: Counter[str] = Counter()
        self._by_interface = {p.interface: p for p in subnets if p.interface is not None}
        self._by_name = {p.name: p for p in subnets}
        self._exhausted_logged: dict[str, float] = {}
        self._times_cache: dict[tuple[str, int], dict[int, bytes]] = {}

    def statistics(self) -> dict[str, int]:
        """Counters: ``received_<type>``, ``offers``, ``acks``, ``naks``, ``declines``,
        ``releases``, ``informs``, ``dropped_<reason>``."""
        return dict(self.counters)

    def subnet_of(self, name: str) -> SubnetPlan | None:
        return self._by_name.get(name)

    def drop(self, reason: str) -> Outcome:
        self.counters[f"dropped_{reason}"] += 1
        return Outcome(dropped=reason)

    def select(self, packet: DhcpPacket, interface: str) -> SubnetPlan | None:
        """The subnet a request is for: the relay's giaddr's, else the interface's."""
        if int(packet.giaddr):
            for plan in self.subnets:
                if packet.giaddr in plan.network:
                    return plan
            return None
        return self._by_interface.get(interface)

    # ------------------------------------------------------------------ entry point

    def handle(self, packet: DhcpPacket, interface: str, now: float) -> Outcome:
        """Decide what to do about ``packet``, received on ``interface``, at ``now``."""
        if packet.op != BOOTREQUEST:
            return self.drop("not_request")
        if packet.htype != 1 or len(packet.chaddr) != 6:
            return self.drop("not_ethernet")
        kind = packet.message_type
        if kind is None:
            return self.drop("no_message_type")
        self.counters[_RECEIVED[kind]] += 1
        plan = self.select(packet, interface)
        if plan is None:
            return self.drop("no_subnet")
        if kind is MessageType.DISCOVER:
            return self._discover(packet, plan, now)
        if kind is MessageType.REQUEST:
            return self._request(packet, plan, now)
        if kind is MessageType.RELEASE:
            return self._release(packet, plan, now)
        if kind is MessageType.DECLINE:
            return self._decline(packet, plan, now)
        if kind is MessageType.INFORM:
            return self._inform(packet, plan)
        return self.drop("not_for_server")

    # ------------------------------------------------------------------ messages

    def _discover(self, packet: DhcpPacket, plan: SubnetPlan, now: float) -> Outcome:
        key = client_key(packet)
        requested = packet.address_option(Opt.REQUESTED_ADDRESS)
        address = self.table.choose(
            plan.pool, key, int(requested) if requested is not None else None, now
        )
        if address is None:
            out = self.drop("pool_exhausted")
            if now - self._exhausted_logged.get(plan.name, -1e18) >= 10.0:  # one line per 10 s
                self._exhausted_logged[plan.name] = now
                out.log.append(f"pool-exhausted subnet={plan.name} mac={packet.chaddr.hex(':')}")
            return out
        lease = self.table.lease_for(plan.pool, address)
        self.table.settle(lease, now)
        self.table.assign(lease, key)
        if lease.state is not LeaseState.BOUND:
            lease.move(LeaseEvent.OFFER)
            lease.expires = now + self.offer_hold
        self._describe(lease, packet, plan)
        self.counters["offers"] += 1
        lease_time = self._lease_time(packet, plan, lease, now)
        reply = self._reply(packet, plan, MessageType.OFFER, address, lease_time)
        return self._out(packet, reply, [], f"offer {lease_line(lease)}")

    def _request(self, packet: DhcpPacket, plan: SubnetPlan, now: float) -> Outcome:
        key = client_key(packet)
        server_id = packet.address_option(Opt.SERVER_ID)
        requested = packet.address_option(Opt.REQUESTED_ADDRESS)
        if server_id is not None:  # SELECTING
            own = self.table.of_client(plan.name, key)
            if server_id != plan.server_id:
                if own is not None and own.state is LeaseState.OFFERED:
                    self.table.settle(own, now)
                    if own.state is LeaseState.OFFERED:
                        own.move(LeaseEvent.RELEASE)
                        self.table.forget_client(own)
                        self.table.freed(plan.name)
                        own.client = ""
                return self.drop("other_server")
            target = requested if requested is not None else packet.ciaddr
            if own is None or int(target) != own.address:
                return self._nak(packet, plan, f"{target} was not offered to this client")
            self.table.settle(own, now)
            if own.state not in (LeaseState.OFFERED, LeaseState.BOUND) and not (
                self.table.available(plan.pool, own.address, key, now)
            ):
                return self._nak(packet, plan, f"{target} is no longer available")
            return self._ack(packet, plan, own, now)
        if requested is not None and not int(packet.ciaddr):  # INIT-REBOOT
            return self._confirm(packet, plan, requested, key, now)
        if int(packet.ciaddr):  # RENEWING (unicast) or REBINDING (broadcast)
            return self._confirm(packet, plan, packet.ciaddr, key, now)
        return self.drop("request_without_address")

    def _confirm(
        self,
        packet: DhcpPacket,
        plan: SubnetPlan,
        address: ipaddress.IPv4Address,
        key: str,
        now: float,
    ) -> Outcome:
        if address not in plan.network:
            return self._nak(packet, plan, f"{address} is not on this network ({plan.name})")
        lease = self.table.get(int(address))
        if lease is not None:
            self.table.settle(lease, now)
        own = self.table.of_client(plan.name, key)
        if lease is not None and lease.client == key and lease.state is not LeaseState.DECLINED:
            reserved = plan.pool.reservations.get(key)
            if reserved is not None and reserved != lease.address:
                return self._nak(packet, plan, f"this client has a reservation, not {address}")
            if not (plan.pool.in_pool(lease.address) or reserved == lease.address):
                return self._nak(packet, plan, f"{address} is no longer in a pool")
            return self._ack(packet, plan, lease, now)
        if own is not None or (lease is not None and lease.held(now) and lease.client != key):
            return self._nak(packet, plan, f"{address} is not this client's address")
        if not self.table.available(plan.pool, int(address), key, now):
            return self._nak(packet, plan, f"{address} is not available to this client")
        # RFC 2131 §4.3.2: no record of this client -> remain silent
        return self.drop("unknown_client")

    def _ack(self, packet: DhcpPacket, plan: SubnetPlan, lease: Lease, now: float) -> Outcome:
        self.table.assign(lease, client_key(packet))
        lease_time = self._lease_time(packet, plan, lease, now)
        lease.move(LeaseEvent.ACK)
        lease.expires = now + lease_time
        lease.granted = now
        self._describe(lease, packet, plan)
        self.counters["acks"] += 1
        reply = self._reply(packet, plan, MessageType.ACK, lease.address, lease_time)
        return self._out(packet, reply, [lease], f"ack {lease_line(lease)}")

    def _nak(self, packet: DhcpPacket, plan: SubnetPlan, why: str) -> Outcome:
        self.counters["naks"] += 1
        reply = DhcpPacket(
            op=BOOTREPLY,
            xid=packet.xid,
            htype=packet.htype,
            flags=packet.flags | (FLAG_BROADCAST if int(packet.giaddr) else 0),
            giaddr=packet.giaddr,
            chaddr=packet.chaddr,
            options={
                Opt.MESSAGE_TYPE: bytes((MessageType.NAK,)),
                Opt.SERVER_ID: plan.server_id.packed,
                Opt.MESSAGE: why.encode()[:255],
            },
        )
        self._echo(packet, reply)
        destination = Destination.RELAY if int(packet.giaddr) else Destination.BROADCAST
        line = f"nak mac={packet.chaddr.hex(':')} subnet={plan.name} reason={why!r}"
        return Outcome(reply=reply, destination=destination, log=[line])

    def _release(self, packet: DhcpPacket, plan: SubnetPlan, now: float) -> Outcome:
        lease = self.table.get(int(packet.ciaddr))
        if lease is None or lease.client != client_key(packet):
            return self.drop("release_unknown")
        self.table.settle(lease, now)
        if lease.state is not LeaseState.BOUND:
            return self.drop("release_unbound")
        lease.move(LeaseEvent.RELEASE)
        lease.expires = now
        self.table.freed(plan.name)
        self.counters["releases"] += 1
        return Outcome(durable=[lease], log=[f"release {lease_line(lease)}"])

    def _decline(self, packet: DhcpPacket, plan: SubnetPlan, now: float) -> Outcome:
        address = packet.address_option(Opt.REQUESTED_ADDRESS)
        lease = self.table.get(int(address)) if address is not None else None
        if lease is None or lease.client != client_key(packet):
            return self.drop("decline_unknown")
        self.table.settle(lease, now)
        if lease.state not in (LeaseState.OFFERED, LeaseState.BOUND):
            return self.drop("decline_unbound")
        lease.move(LeaseEvent.DECLINE)
        lease.expires = now + self.decline_quarantine
        self.table.forget_client(lease)
        self.counters["declines"] += 1
        return Outcome(durable=[lease], log=[f"decline {lease_line(lease)}"])

    def _inform(self, packet: DhcpPacket, plan: SubnetPlan) -> Outcome:
        self.counters["informs"] += 1
        reply = self._reply(packet, plan, MessageType.ACK, None, None)
        return self._out(
            packet, reply, [], f"inform mac={packet.chaddr.hex(':')} ip={packet.ciaddr}"
        )

    # ------------------------------------------------------------------ building replies

    def _lease_time(self, packet: DhcpPacket, plan: SubnetPlan, lease: Lease, now: float) -> int:
        wanted = packet.options.get(Opt.LEASE_TIME)
        lease_time = plan.lease_time
        if wanted is not None and len(wanted) == 4:
            lease_time = max(60, min(lease_time, decode_u32(wanted)))
        return lease_time

    def _describe(self, lease: Lease, packet: DhcpPacket, plan: SubnetPlan) -> None:
        lease.mac = packet.chaddr.hex(":")
        cid = packet.options.get(Opt.CLIENT_ID)
        lease.client_id = cid.hex(":") if cid else ""
        reserved = plan.per_client.get(lease.client)
        if reserved is None:
            reserved = plan.per_client.get("hw:" + packet.chaddr.hex())
        name = reserved[0] if reserved is not None and reserved[0] else _hostname(packet)
        lease.hostname = name or lease.hostname

    def _reply(
        self,
        packet: DhcpPacket,
        plan: SubnetPlan,
        kind: MessageType,
        address: int | None,
        lease_time: int | None,
    ) -> DhcpPacket:
        options: dict[int, bytes] = {
            Opt.MESSAGE_TYPE: bytes((kind,)),
            Opt.SERVER_ID: plan.server_id.packed,
        }
        if lease_time is not None:
            options.update(self._times(plan, lease_time))
        configured = plan.options
        key = client_key(packet)
        special = plan.per_client.get(key) or plan.per_client.get("hw:" + packet.chaddr.hex())
        if special is not None:
            configured = special[1]
        wanted = packet.options.get(Opt.PARAMETER_LIST)
        for code, value in configured.items():
            if wanted is None or code in _ALWAYS or code in wanted:
                options[code] = value
        reply = DhcpPacket(
            op=BOOTREPLY,
            xid=packet.xid,
            htype=packet.htype,
            flags=packet.flags,
            ciaddr=packet.ciaddr if kind is MessageType.ACK else _ZERO,
            yiaddr=ipaddress.IPv4Address(address) if address is not None else _ZERO,
            giaddr=packet.giaddr,
            chaddr=packet.chaddr,
            options=options,
        )
        self._echo(packet, reply)
        return reply

    def _times(self, plan: SubnetPlan, lease_time: int) -> dict[int, bytes]:
        """Options 51, 58, 59 for ``lease_time`` (T1/T2 shortened with a shorter lease)."""
        key = (plan.name, lease_time)
        cached = self._times_cache.get(key)
        if cached is None:
            shorter = lease_time < plan.lease_time
            t1 = min(plan.t1, lease_time // 2) if shorter else plan.t1
            t2 = min(plan.t2, lease_time * 7 // 8) if shorter else plan.t2
            cached = {
                Opt.LEASE_TIME: encode_u32(lease_time),
                Opt.RENEWAL_TIME: encode_u32(t1),
                Opt.REBINDING_TIME: encode_u32(t2),
            }
            if len(self._times_cache) < 1024:  # bounded: clients may ask for any lease time
                self._times_cache[key] = cached
        return cached

    @staticmethod
    def _echo(packet: DhcpPacket, reply: DhcpPacket) -> None:
        cid = packet.options.get(Opt.CLIENT_ID)
        if cid is not None:
            reply.options[Opt.CLIENT_ID] = cid
        relay = packet.options.get(Opt.RELAY_AGENT)
        if relay is not None and int(packet.giaddr):
            reply.options[Opt.RELAY_AGENT] = relay  # last, as RFC 3046 §2.1 asks

    @staticmethod
    def _out(packet: DhcpPacket, reply: DhcpPacket, durable: list[Lease], line: str) -> Outcome:
        if int(packet.giaddr):
            destination = Destination.RELAY
            line += f" via={packet.giaddr}"  # the relay agent
        elif int(packet.ciaddr):
            destination = Destination.UNICAST
        elif packet.broadcast:
            destination = Destination.BROADCAST
        else:
            destination = Destination.HARDWARE
        out = Outcome(reply=reply, destination=destination, durable=durable, log=[line])
        wanted = packet.options.get(Opt.MAX_MESSAGE_SIZE)
        if wanted is not None and len(wanted) == 2:
            # RFC 2132 §9.10: at least 576; the reply never grows past one 1500-byte frame
            out.max_size = min(1472, max(576, int.from_bytes(wanted, "big")) - 28)
        return out

    # ------------------------------------------------------------------ housekeeping

    def expire(self, now: float) -> list[str]:
        """Apply the clock to every lease; log lines for the leases that ended."""
        lines = []
        for lease in self.table:
            before = lease.state
            self.table.settle(lease, now)
            if before is LeaseState.BOUND and lease.state is LeaseState.EXPIRED:
                lines.append(f"expire {lease_line(lease)}")
            elif before is LeaseState.DECLINED and lease.state is LeaseState.FREE:
                lines.append(f"unquarantine ip={dotted(lease.address)}")
        return lines


def lease_line(lease: Lease) -> str:
    """``ip=10.0.0.100 mac=.. client_id=.. hostname=.. subnet=.. expires=..`` for logs."""
    return (
        f"ip={dotted(lease.address)} mac={lease.mac}"
        f" client_id={lease.client_id or '-'}"
        f" hostname={lease.hostname or '-'} subnet={lease.subnet} state={lease.state.value}"
        f" expires={int(lease.expires)}"
    )
