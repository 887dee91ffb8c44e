"""The server's decisions, sans-IO: every message kind and client state of RFC 2131 §4.3."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backhaul.config.dhcp import DhcpConfig
from backhaul.proto.dhcp import (
    BOOTREPLY,
    FLAG_BROADCAST,
    DhcpPacket,
    MessageType,
    Opt,
    decode,
    decode_u32,
    encode,
)
from backhaul.services.dhcp.lease import LeaseState
from backhaul.services.dhcp.responder import Destination, Responder, plan_subnets

IP = ipaddress.IPv4Address
SERVER = IP("10.0.0.1")
T0 = 1_000_000.0

CONFIG = {
    "interfaces": ["eth0"],
    "offer_hold": "30s",
    "decline_quarantine": "10m",
    "subnets": [
        {
            "subnet": "10.0.0.0/24",
            "pools": ["10.0.0.100-10.0.0.102"],
            "lease_time": "1h",
            "options": {
                "routers": ["10.0.0.1"],
                "dns_servers": ["10.0.0.53", "10.0.0.54"],
                "domain_name": "lab.example",
                "domain_search": ["lab.example"],
                "mtu": 1400,
                "ntp_servers": ["10.0.0.123"],
                "routes": [{"destination": "10.9.0.0/16", "router": "10.0.0.1"}],
                "vendor_specific": "hex:01:02",
                "raw": {"252": "http://wpad/wpad.dat"},
            },
            "reservations": [
                {"mac": "02:00:00:00:00:aa", "address": "10.0.0.10", "hostname": "printer",
                 "options": {"routers": ["10.0.0.254"]}},
                {"client_id": "ff:00:01", "address": "10.0.0.11"},
            ],
        },
        {"subnet": "10.1.0.0/24", "pools": ["10.1.0.100-10.1.0.150"]},
    ],
}  # fmt: skip


@pytest.fixture
def server() -> Responder:
    config = DhcpConfig.model_validate(CONFIG)
    plans = plan_subnets(config, {"eth0": [ipaddress.IPv4Interface("10.0.0.1/24")]})
    return Responder(plans, offer_hold=config.offer_hold, decline_quarantine=600)


def mac(n: int) -> bytes:
    return bytes.fromhex(f"0200000000{n:02x}")


def msg(kind, client, *, xid=1, ciaddr="0.0.0.0", giaddr="0.0.0.0", flags=0, **options):
    opts = {Opt.MESSAGE_TYPE: bytes((kind,))}
    for name, value in options.items():
        opts[int(name[1:])] = value
    packet = DhcpPacket(
        xid=xid, flags=flags, ciaddr=IP(ciaddr), giaddr=IP(giaddr), chaddr=client, options=opts
    )
    return decode(encode(packet))  # what goes through the wire


def lease(server, client, now=T0, **options):
    offer = server.handle(msg(MessageType.DISCOVER, client, **options), "eth0", now)
    assert offer.reply is not None, offer.dropped
    address = offer.reply.yiaddr
    options = {**options, "o50": address.packed, "o54": SERVER.packed}
    ack = server.handle(
        msg(MessageType.REQUEST, client, **options),
        "eth0",
        now,
    )
    return offer, ack


def test_discover_request_ack_with_options_and_durable_lease(server):
    offer, ack = lease(server, mac(1), o12=b"web1")
    assert offer.reply.message_type is MessageType.OFFER and offer.durable == []
    assert offer.reply.op == BOOTREPLY and offer.destination is Destination.HARDWARE
    assert ack.reply.message_type is MessageType.ACK
    assert ack.reply.yiaddr == IP("10.0.0.100")
    opts = ack.reply.options
    assert opts[Opt.SUBNET_MASK] == IP("255.255.255.0").packed
    assert opts[Opt.ROUTER] == SERVER.packed
    assert opts[Opt.DNS_SERVERS] == IP("10.0.0.53").packed + IP("10.0.0.54").packed
    assert opts[Opt.DOMAIN_NAME] == b"lab.example"
    assert decode_u32(opts[Opt.LEASE_TIME]) == 3600
    assert decode_u32(opts[Opt.RENEWAL_TIME]) == 1800
    assert decode_u32(opts[Opt.REBINDING_TIME]) == 3150
    for code in (26, 42, 43, 119, 121, 252):  # no parameter list: every configured option
        assert code in opts
    [durable] = ack.durable
    assert durable.state is LeaseState.BOUND and durable.hostname == "web1"
    assert durable.expires == T0 + 3600
    assert list(opts)[:2] == [Opt.MESSAGE_TYPE, Opt.SERVER_ID]


def test_parameter_list_limits_the_optional_options(server):
    offer, _ = lease(server, mac(1), o55=bytes((1, 3, 121)))
    opts = offer.reply.options
    assert 121 in opts and 3 in opts and 6 in opts  # 6: always sent when configured
    assert 26 not in opts and 42 not in opts and 252 not in opts


def test_two_discovers_never_get_one_address_and_offers_are_held(server):
    a = server.handle(msg(MessageType.DISCOVER, mac(1)), "eth0", T0)
    b = server.handle(msg(MessageType.DISCOVER, mac(2)), "eth0", T0)
    assert a.reply.yiaddr != b.reply.yiaddr
    again = server.handle(msg(MessageType.DISCOVER, mac(1)), "eth0", T0 + 1)
    assert again.reply.yiaddr == a.reply.yiaddr  # same client, same offer
    c = server.handle(msg(MessageType.DISCOVER, mac(3)), "eth0", T0 + 2)
    assert c.reply.yiaddr not in (a.reply.yiaddr, b.reply.yiaddr)
    full = server.handle(msg(MessageType.DISCOVER, mac(4)), "eth0", T0 + 3)
    assert full.reply is None and full.dropped == "pool_exhausted"
    assert full.log  # logged once...
    assert not server.handle(msg(MessageType.DISCOVER, mac(5)), "eth0", T0 + 4).log  # ...not twice
    late = server.handle(msg(MessageType.DISCOVER, mac(4)), "eth0", T0 + 31)
    assert late.reply is not None  # the offers' hold ran out


def test_requested_address_honoured_when_free_else_another(server):
    _, ack = lease(server, mac(1), o50=IP("10.0.0.102").packed)
    assert ack.reply.yiaddr == IP("10.0.0.102")
    held = server.handle(msg(MessageType.DISCOVER, mac(2), o50=IP("10.0.0.102").packed), "eth0", T0)
    assert held.reply.yiaddr != IP("10.0.0.102")
    outside = server.handle(
        msg(MessageType.DISCOVER, mac(3), o50=IP("10.0.0.5").packed), "eth0", T0
    )
    assert outside.reply.yiaddr in (IP("10.0.0.100"), IP("10.0.0.101"))


def test_selecting_another_server_drops_our_offer(server):
    offer = server.handle(msg(MessageType.DISCOVER, mac(1)), "eth0", T0)
    other = server.handle(
        msg(MessageType.REQUEST, mac(1), o50=offer.reply.yiaddr.packed, o54=IP("10.0.0.9").packed),
        "eth0",
        T0,
    )
    assert other.reply is None and other.dropped == "other_server"
    assert server.table.get(int(offer.reply.yiaddr)).state is LeaseState.FREE


def test_init_reboot_ack_nak_and_silence(server):
    _, ack = lease(server, mac(1))
    mine = ack.reply.yiaddr
    again = server.handle(msg(MessageType.REQUEST, mac(1), o50=mine.packed), "eth0", T0 + 5)
    assert again.reply.message_type is MessageType.ACK and again.durable
    wrong = server.handle(msg(MessageType.REQUEST, mac(1), o50=IP("10.0.0.101").packed), "eth0", T0)
    assert wrong.reply.message_type is MessageType.NAK
    assert wrong.destination is Destination.BROADCAST
    assert wrong.reply.yiaddr == IP("0.0.0.0") and Opt.LEASE_TIME not in wrong.reply.options
    other_net = server.handle(
        msg(MessageType.REQUEST, mac(1), o50=IP("192.168.1.5").packed), "eth0", T0
    )
    assert other_net.reply.message_type is MessageType.NAK
    stolen = server.handle(msg(MessageType.REQUEST, mac(2), o50=mine.packed), "eth0", T0)
    assert stolen.reply.message_type is MessageType.NAK
    unknown = server.handle(
        msg(MessageType.REQUEST, mac(3), o50=IP("10.0.0.101").packed), "eth0", T0
    )
    assert unknown.reply is None and unknown.dropped == "unknown_client"  # RFC 2131 §4.3.2


def test_renewing_and_rebinding(server):
    _, ack = lease(server, mac(1))
    mine = str(ack.reply.yiaddr)
    renew = server.handle(msg(MessageType.REQUEST, mac(1), ciaddr=mine), "eth0", T0 + 1800)
    assert renew.reply.message_type is MessageType.ACK
    assert renew.destination is Destination.UNICAST
    assert renew.durable[0].expires == T0 + 1800 + 3600
    rebind = server.handle(
        msg(MessageType.REQUEST, mac(1), ciaddr=mine, flags=FLAG_BROADCAST), "eth0", T0 + 3200
    )
    assert rebind.reply.message_type is MessageType.ACK
    thief = server.handle(msg(MessageType.REQUEST, mac(2), ciaddr=mine), "eth0", T0 + 3200)
    assert thief.reply.message_type is MessageType.NAK


def test_release_then_same_client_gets_it_back_and_others_later(server):
    _, ack = lease(server, mac(1))
    mine = ack.reply.yiaddr
    out = server.handle(msg(MessageType.RELEASE, mac(1), ciaddr=str(mine)), "eth0", T0 + 10)
    assert out.reply is None and out.durable[0].state is LeaseState.RELEASED
    offer = server.handle(msg(MessageType.DISCOVER, mac(1)), "eth0", T0 + 20)
    assert offer.reply.yiaddr == mine
    bogus = server.handle(msg(MessageType.RELEASE, mac(2), ciaddr=str(mine)), "eth0", T0)
    assert bogus.durable == [] and bogus.dropped == "release_unknown"


def test_a_full_pool_frees_up_on_release_at_once(server):
    acks = [lease(server, mac(n))[1] for n in (1, 2, 3)]
    for n in (4, 5):
        assert server.handle(msg(MessageType.DISCOVER, mac(n)), "eth0", T0 + 1).dropped
    freed = acks[1].reply.yiaddr
    server.handle(msg(MessageType.RELEASE, mac(2), ciaddr=str(freed)), "eth0", T0 + 2)
    offer = server.handle(msg(MessageType.DISCOVER, mac(4)), "eth0", T0 + 2)
    assert offer.reply is not None and offer.reply.yiaddr == freed
    assert server.handle(msg(MessageType.DISCOVER, mac(5)), "eth0", T0 + 3).dropped
    assert server.statistics()["dropped_pool_exhausted"] == 3


def test_decline_quarantines_the_address(server):
    _, ack = lease(server, mac(1))
    bad = ack.reply.yiaddr
    out = server.handle(msg(MessageType.DECLINE, mac(1), o50=bad.packed), "eth0", T0 + 1)
    assert out.reply is None and out.durable[0].state is LeaseState.DECLINED
    assert out.durable[0].expires == T0 + 1 + 600
    offers = {
        server.handle(msg(MessageType.DISCOVER, mac(n)), "eth0", T0 + 2).reply.yiaddr
        for n in (1, 2)
    }
    assert bad not in offers and len(offers) == 2
    assert server.statistics()["declines"] == 1
    later = server.handle(msg(MessageType.DISCOVER, mac(9)), "eth0", T0 + 700)
    assert later.reply is not None  # quarantine over: reusable


def test_inform_acks_options_without_a_lease(server):
    out = server.handle(msg(MessageType.INFORM, mac(5), ciaddr="10.0.0.77"), "eth0", T0)
    assert out.reply.message_type is MessageType.ACK
    assert out.reply.yiaddr == IP("0.0.0.0") and out.reply.ciaddr == IP("10.0.0.77")
    assert Opt.LEASE_TIME not in out.reply.options and Opt.ROUTER in out.reply.options
    assert out.destination is Destination.UNICAST and out.durable == []


def test_relay_selects_the_subnet_by_giaddr_and_echoes_option_82(server):
    agent = bytes((1, 6)) + b"port-7"
    offer = server.handle(
        msg(MessageType.DISCOVER, mac(1), giaddr="10.1.0.1", o82=agent), "eth0", T0
    )
    assert offer.reply.yiaddr in ipaddress.IPv4Network("10.1.0.0/24")
    assert offer.destination is Destination.RELAY
    assert offer.reply.giaddr == IP("10.1.0.1")
    assert list(offer.reply.options)[-1] == Opt.RELAY_AGENT
    assert offer.reply.options[Opt.RELAY_AGENT] == agent
    nak = server.handle(
        msg(MessageType.REQUEST, mac(1), giaddr="10.1.0.1", o50=IP("10.0.0.100").packed),
        "eth0",
        T0,
    )
    assert nak.reply.message_type is MessageType.NAK and nak.destination is Destination.RELAY
    assert nak.reply.broadcast  # RFC 2131 §4.3.2: NAK through a relay sets BROADCAST
    unknown = server.handle(msg(MessageType.DISCOVER, mac(1), giaddr="172.16.0.1"), "eth0", T0)
    assert unknown.dropped == "no_subnet"


def test_reservations_by_mac_and_client_id_with_overrides(server):
    printer = bytes.fromhex("0200000000aa")
    _, ack = lease(server, printer, o12=b"whatever")
    assert ack.reply.yiaddr == IP("10.0.0.10")
    assert ack.reply.options[Opt.ROUTER] == IP("10.0.0.254").packed  # per-reservation
    assert ack.durable[0].hostname == "printer"
    _, ack = lease(server, mac(7), o61=bytes.fromhex("ff0001"))
    assert ack.reply.yiaddr == IP("10.0.0.11")
    assert ack.reply.options[Opt.CLIENT_ID] == bytes.fromhex("ff0001")  # RFC 6842
    grab = server.handle(msg(MessageType.DISCOVER, mac(8), o50=IP("10.0.0.10").packed), "eth0", T0)
    assert grab.reply.yiaddr != IP("10.0.0.10")


def test_client_id_identifies_the_client_across_hardware(server):
    cid = b"\x01my-laptop"
    _, first = lease(server, mac(1), o61=cid)
    offer = server.handle(msg(MessageType.DISCOVER, mac(2), o61=cid), "eth0", T0 + 5)
    assert offer.reply.yiaddr == first.reply.yiaddr


def test_expired_leases_are_reclaimed_oldest_first(server):
    for n in (1, 2, 3):
        lease(server, mac(n), now=T0 + n)
    assert server.handle(msg(MessageType.DISCOVER, mac(4)), "eth0", T0 + 10).dropped
    lines = server.expire(T0 + 3601.5)
    assert len(lines) == 1 and "expire ip=10.0.0.100" in lines[0]
    offer = server.handle(msg(MessageType.DISCOVER, mac(4)), "eth0", T0 + 3601.5)
    assert offer.reply.yiaddr == IP("10.0.0.100")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"htype": 6}, "not_ethernet"),
        ({"chaddr": b"\x01\x02"}, "not_ethernet"),
        ({"options": {}}, "no_message_type"),
        ({"op": BOOTREPLY}, "not_request"),
    ],
)
def test_unservable_requests_are_dropped_and_counted(server, change, reason):
    packet = msg(MessageType.DISCOVER, mac(1))
    for key, value in change.items():
        setattr(packet, key, value)
    out = server.handle(packet, "eth0", T0)
    assert out.reply is None and out.dropped == reason
    assert server.statistics()[f"dropped_{reason}"] == 1


_KINDS = st.sampled_from([*MessageType, 0, 9, 200])
_ADDR = st.sampled_from(["0.0.0.0", "10.0.0.100", "10.0.0.10", "10.1.0.1", "10.0.0.255", "8.8.8.8"])


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            _KINDS,
            st.integers(0, 4),
            _ADDR,
            _ADDR,
            st.dictionaries(
                st.sampled_from([12, 50, 51, 54, 55, 57, 61, 81, 82, 119]),
                st.binary(max_size=12),
                max_size=5,
            ),
            st.floats(0, 10_000),
        ),
        max_size=25,
    )
)
def test_any_request_sequence_never_raises_and_never_double_binds(steps):
    config = DhcpConfig.model_validate(CONFIG)
    server = Responder(
        plan_subnets(config, {"eth0": [ipaddress.IPv4Interface("10.0.0.1/24")]}),
        offer_hold=30,
    )
    for kind, who, ciaddr, giaddr, options, dt in steps:
        opts = {Opt.MESSAGE_TYPE: bytes((kind,)), **options}
        packet = DhcpPacket(
            xid=1, ciaddr=IP(ciaddr), giaddr=IP(giaddr), chaddr=mac(who), options=opts
        )
        out = server.handle(packet, "eth0", T0 + dt)
        if out.reply is not None:
            encode(out.reply, max_size=out.max_size)
        bound = [
            lease.address
            for lease in server.table
            if lease.state is LeaseState.BOUND and lease.held(T0 + dt)
        ]
        assert len(bound) == len(set(bound))


def test_host_name_from_option_81_when_no_option_12(server):
    fqdn = b"\x05\x00\x00\x05db-01\x03lab\x00"  # E flag: wire format (RFC 4702)
    _, ack = lease(server, mac(1), o81=fqdn)
    assert ack.durable[0].hostname == "db-01"
    _, ack = lease(server, mac(2), o12=b"Web_Server.example")
    assert ack.durable[0].hostname == "web-server"  # one label, DNS-safe
