"""The DHCP server against real clients, in namespaces joined by a veth pair.

busybox udhcpc and ISC dhclient get leases; the load generator's probe plays many clients
(and a relay agent) for the rest: parallel clients, a SIGKILL and restart, DECLINE, RELEASE,
NAK, relays, reservations, garbage on the wire.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from backhaul.proto.dhcp import MessageType, Opt
from backhaul.tools.dhcp_load import DhcpProbe, mac_for, run_load

from .conftest import BACKHAUL, Server, needs_netns, quick_server

pytestmark = [pytest.mark.netns, needs_netns]

IP = ipaddress.IPv4Address
SERVER_ID = IP("10.0.0.1").packed


def leases_json(state: Path, *extra: str) -> list[dict]:
    done = subprocess.run(
        [BACKHAUL, "dhcp", "leases", "--state", str(state), "--json", *extra],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _get(host: str, port: int, path: str) -> str:
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        body = b""
        while chunk := conn.recv(65536):
            body += chunk
    return body.decode()


def probe_in(segment, **kwargs) -> DhcpProbe:
    return segment.call("client", lambda: DhcpProbe("cli0", **kwargs))


def test_udhcpc_gets_a_lease_with_mask_router_dns(make_segment, tmp_path):
    segment = make_segment()
    server = quick_server(segment, tmp_path / "state", "--domain", "lab.example")
    script = tmp_path / "udhcpc.sh"
    out = tmp_path / "udhcpc.out"
    script.write_text(
        f'#!/bin/sh\necho "$1 ip=$ip subnet=$subnet router=$router dns=$dns'
        f' domain=$domain lease=$lease serverid=$serverid" >> {out}\n'
    )
    script.chmod(0o755)
    done = segment.run(
        "client",
        ["udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "1", "-i", "cli0", "-s", str(script),
         "-x", "hostname:alpha"],
        timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + server.output()
    bound = [line for line in out.read_text().splitlines() if line.startswith("bound")]
    assert bound == [
        "bound ip=10.0.0.100 subnet=255.255.255.0 router=10.0.0.1 dns=10.0.0.53"
        " domain=lab.example lease=3600 serverid=10.0.0.1"
    ]
    [lease] = leases_json(tmp_path / "state")
    assert lease["address"] == "10.0.0.100" and lease["hostname"] == "alpha"
    assert lease["state"] == "bound"
    link = segment.run("client", ["cat", "/sys/class/net/cli0/address"]).stdout.strip()
    assert lease["mac"] == link
    server.wait_for("ack ip=10.0.0.100")  # one log line per lease event
    table = subprocess.run(
        [BACKHAUL, "dhcp", "leases", "--state", str(tmp_path / "state")],
        capture_output=True,
        text=True,
    ).stdout
    assert f"10.0.0.100  {link}  01:{link}  alpha" in table  # no ":ab:" emoji in ids


def _wait_file(path: Path, text: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        assert proc.poll() is None, f"client exited ({proc.returncode})"
        assert time.monotonic() < deadline, f"no {text!r} in {path}"
        time.sleep(0.05)


def test_udhcpc_renews_by_unicast_and_releases(make_segment, tmp_path):
    segment = make_segment()
    server = quick_server(segment, tmp_path / "state")
    script, out = tmp_path / "udhcpc.sh", tmp_path / "events"
    # configures the address inside the client namespace only, so renewing works
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in bound|renew) ip addr flush dev "$interface";'
        ' ip addr add "$ip/$mask" dev "$interface";; esac\n'
        f'echo "$1 $ip" >> {out}\n'
    )
    script.chmod(0o755)
    client = segment.popen(
        "client",
        ["udhcpc", "-f", "-i", "cli0", "-s", str(script), "-t", "5", "-T", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_file(out, "bound 10.0.0.100", client)
    client.send_signal(signal.SIGUSR1)  # busybox: renew now (RENEWING, unicast)
    _wait_file(out, "renew 10.0.0.100", client)
    server.wait_for("ack ip=10.0.0.100", count=2)
    client.send_signal(signal.SIGUSR2)  # busybox: release
    server.wait_for("release ip=10.0.0.100")
    client.kill()
    client.wait(timeout=10)
    assert leases_json(tmp_path / "state") == []  # released leases are listed with --all
    [released] = leases_json(tmp_path / "state", "--all")
    assert released["state"] == "released"


def test_dhclient_gets_a_lease_with_mask_router_dns(make_segment, tmp_path):
    segment = make_segment()
    server = quick_server(segment, tmp_path / "state")
    lease_file, pid_file = tmp_path / "dhclient.leases", tmp_path / "dhclient.pid"
    config = tmp_path / "dhclient.conf"
    config.write_text(
        'send host-name "beta";\n'
        "request subnet-mask, broadcast-address, routers, domain-name-servers, domain-name;\n"
    )
    client = segment.popen(
        "client",
        ["dhclient", "-4", "-d", "-1", "-v", "-sf", "/bin/true", "-cf", str(config),
         "-lf", str(lease_file), "-pf", str(pid_file), "cli0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    text = ""
    while "fixed-address" not in text:
        assert time.monotonic() < deadline, server.output()
        assert client.poll() is None, client.stderr.read() if client.stderr else ""
        time.sleep(0.1)
        text = lease_file.read_text() if lease_file.exists() else ""
    client.kill()
    client.wait(timeout=10)
    assert "fixed-address 10.0.0.100;" in text
    assert "option subnet-mask 255.255.255.0;" in text
    assert "option routers 10.0.0.1;" in text
    assert "option domain-name-servers 10.0.0.53;" in text
    assert "option dhcp-lease-time 3600;" in text
    [lease] = leases_json(tmp_path / "state")
    assert lease["hostname"] == "beta"


def test_fifty_clients_in_parallel_get_distinct_addresses(make_segment, tmp_path):
    segment = make_segment()
    quick_server(segment, tmp_path / "state")
    with probe_in(segment) as probe:
        result = run_load(probe, 50, window=50, deadline=30)
    assert result.unfinished == 0 and result.naks == 0
    assert len(result.leases) == 50
    assert len(set(result.leases.values())) == 50
    stored = {
        lease["mac"].replace(":", ""): lease["address"] for lease in leases_json(tmp_path / "state")
    }
    assert stored == result.leases


def test_sigkill_and_restart_every_client_gets_its_address_back(make_segment, tmp_path):
    segment = make_segment()
    state = tmp_path / "state"
    server = quick_server(segment, state)
    with probe_in(segment) as probe:
        before = run_load(probe, 30, window=30, salt=7, deadline=30)
        assert len(before.leases) == 30
        server.proc.send_signal(signal.SIGKILL)  # no chance to flush anything
        server.kill()
        restarted = quick_server(segment, state)
        assert "30 bound" in restarted.wait_for("lease store")
        for index in range(30):
            mac = mac_for(index, 7)
            xid = random.getrandbits(32)
            offer = probe.exchange(probe.packet(MessageType.DISCOVER, mac, xid))  # plain
            assert offer is not None and offer.message_type is MessageType.OFFER
            assert str(offer.yiaddr) == before.leases[mac.hex()]
        # and a new client gets an address nobody holds
        _, ack = probe.lease(mac_for(99, 8))
        assert ack is not None and str(ack.yiaddr) not in before.leases.values()


def test_held_address_decline_release_and_nak(make_segment, tmp_path):
    segment = make_segment()
    state = tmp_path / "state"
    server = quick_server(segment, state)
    a, b, c = mac_for(1, 1), mac_for(2, 1), mac_for(3, 1)
    with probe_in(segment) as probe:
        _, ack = probe.lease(a)
        assert ack is not None and ack.message_type is MessageType.ACK
        held = ack.yiaddr
        # another client asking for the held address gets another one
        _, other = probe.lease(b, requested=str(held))
        assert other is not None and other.message_type is MessageType.ACK
        assert other.yiaddr != held
        # INIT-REBOOT for an address that is not the client's: NAK
        nak = probe.exchange(
            probe.packet(MessageType.REQUEST, b, 5, options={Opt.REQUESTED_ADDRESS: held.packed})
        )
        assert nak is not None and nak.message_type is MessageType.NAK
        wrong_net = probe.exchange(
            probe.packet(
                MessageType.REQUEST, a, 6, options={Opt.REQUESTED_ADDRESS: IP("192.0.2.9").packed}
            )
        )
        assert wrong_net is not None and wrong_net.message_type is MessageType.NAK
        # INIT-REBOOT for its own address: ACK
        mine = probe.exchange(
            probe.packet(MessageType.REQUEST, a, 7, options={Opt.REQUESTED_ADDRESS: held.packed})
        )
        assert mine is not None and mine.message_type is MessageType.ACK and mine.yiaddr == held
        # DECLINE: quarantined, not offered again
        decline = probe.packet(
            MessageType.DECLINE,
            a,
            8,
            options={Opt.REQUESTED_ADDRESS: held.packed, Opt.SERVER_ID: SERVER_ID},
        )
        assert probe.silent(decline, wait=0.3)
        server.wait_for(f"decline ip={held}")
        offer = probe.exchange(
            probe.packet(MessageType.DISCOVER, c, 9, options={Opt.REQUESTED_ADDRESS: held.packed})
        )
        assert offer is not None and offer.yiaddr != held
        again = probe.exchange(probe.packet(MessageType.DISCOVER, a, 10))
        assert again is not None and again.yiaddr != held
        # RELEASE: the lease ends; the same client gets the address back
        release = probe.packet(
            MessageType.RELEASE, b, 11, ciaddr=str(other.yiaddr), options={Opt.SERVER_ID: SERVER_ID}
        )
        assert probe.silent(release, wait=0.3)
        server.wait_for(f"release ip={other.yiaddr}")
        back = probe.exchange(probe.packet(MessageType.DISCOVER, b, 12))
        assert back is not None and back.yiaddr == other.yiaddr
    states = {lease["address"]: lease["state"] for lease in leases_json(state, "--all")}
    assert states[str(held)] == "declined" and states[str(other.yiaddr)] == "released"


def test_relay_agent_subnet_and_option_82_echo(make_segment, tmp_path):
    segment = make_segment(
        client_address="10.0.0.2/24",
        extra={"client": ["10.1.0.1/24"]},
        routes={"server": [("10.1.0.0/24", "10.0.0.2")]},
    )
    config = tmp_path / "dhcp.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            dhcp:
              interfaces: [srv0]
              state_dir: {tmp_path / "state"}
              subnets:
                - subnet: 10.0.0.0/24
                  pools: [10.0.0.100-10.0.0.199]
                - subnet: 10.1.0.0/24
                  pools: [10.1.0.50-10.1.0.60]
                  options: {{routers: [10.1.0.1]}}
            """
        )
    )
    server = Server(segment, ["serve", "-c", str(config)])
    assert "through relays" in server.wait_for("serving 10.1.0.0/24")
    server.wait_for("lease store")
    with probe_in(segment, relay="10.1.0.1", server="10.0.0.1", circuit_id=b"rack7") as relay:
        offer, ack = relay.lease(mac_for(1, 2))
    assert offer is not None and offer.message_type is MessageType.OFFER
    assert offer.yiaddr in ipaddress.IPv4Network("10.1.0.0/24")
    assert offer.options[Opt.RELAY_AGENT] == bytes((1, 5)) + b"rack7"
    assert offer.giaddr == IP("10.1.0.1")
    assert ack is not None and ack.message_type is MessageType.ACK
    assert ack.options[Opt.ROUTER] == IP("10.1.0.1").packed
    assert ack.options[Opt.SUBNET_MASK] == IP("255.255.255.0").packed


def test_config_mode_reservations_metrics_and_garbage_on_the_wire(make_segment, tmp_path):
    segment = make_segment(client_address="10.0.0.2/24")
    reserved = mac_for(5, 3)
    config = tmp_path / "dhcp.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            admin: {{address: "127.0.0.1:9901"}}
            dhcp:
              interfaces: [srv0]
              state_dir: {tmp_path / "state"}
              subnets:
                - subnet: 10.0.0.0/24
                  pools: [10.0.0.100-10.0.0.199]
                  options: {{routers: [10.0.0.1], dns_servers: [10.0.0.53]}}
                  reservations:
                    - mac: "{reserved.hex(":")}"
                      address: 10.0.0.20
                      hostname: printer
                      options: {{dns_servers: [10.0.0.54]}}
                    - client_id: "ff:01:02"
                      address: 10.0.0.21
            """
        )
    )
    check = subprocess.run([BACKHAUL, "check", str(config)], capture_output=True, text=True)
    assert check.returncode == 0 and "10.0.0.20 (printer)" in check.stdout, check.stderr
    server = Server(segment, ["serve", "-c", str(config)])  # a config with only dhcp:
    server.wait_for("metrics on http://127.0.0.1:9901/metrics")
    with probe_in(segment) as probe:
        _, ack = probe.lease(reserved)
        assert ack is not None and ack.yiaddr == IP("10.0.0.20")
        assert ack.options[Opt.DNS_SERVERS] == IP("10.0.0.54").packed
        _, ack = probe.lease(mac_for(6, 3), options={Opt.CLIENT_ID: bytes.fromhex("ff0102")})
        assert ack is not None and ack.yiaddr == IP("10.0.0.21")
        inform = probe.packet(MessageType.INFORM, mac_for(9, 3), 77, ciaddr="10.0.0.2")
        inform.flags = 0  # the answer comes unicast to ciaddr
        answer = probe.exchange(inform)
        assert answer is not None and answer.message_type is MessageType.ACK
        assert answer.yiaddr == IP("0.0.0.0") and Opt.LEASE_TIME not in answer.options
        assert answer.options[Opt.DNS_SERVERS] == IP("10.0.0.53").packed
        rng = random.Random(11)
        for _ in range(300):
            size = rng.choice([0, 10, 239, 240, 300, 600, 1400])
            junk = bytearray(rng.randbytes(size))
            if size >= 240 and rng.random() < 0.7:
                junk[236:240] = b"\x63\x82\x53\x63"
                junk[0], junk[1], junk[2] = 1, rng.choice([1, 6, 32]), rng.choice([6, 16, 20])
            probe.sock.sendto(bytes(junk), ("255.255.255.255", 67))
        _, ack = probe.lease(mac_for(7, 3))
        assert ack is not None and ack.message_type is MessageType.ACK  # still serving
    assert server.proc.poll() is None
    by_config = subprocess.run(
        [BACKHAUL, "dhcp", "leases", "-c", str(config), "--json"], capture_output=True, text=True
    )
    assert {lease["hostname"] for lease in json.loads(by_config.stdout)} >= {"printer"}
    text = segment.call("server", lambda: _get("127.0.0.1", 9901, "/metrics"))
    assert 'backhaul_dhcp_replies_total{type="ack"} 4' in text  # 3 leases, 1 inform
    assert 'backhaul_dhcp_pool_addresses{subnet="10.0.0.0/24"} 100' in text
    assert 'backhaul_dhcp_pool_used{subnet="10.0.0.0/24"} 3' in text
    dropped = {
        line.split('"')[1]: int(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("backhaul_dhcp_dropped_total{")
    }
    assert dropped.get("malformed", 0) > 100 and sum(dropped.values()) > 150, dropped
    assert server.stop() == 0


def test_serve_runs_dhcp_next_to_the_edge(make_segment, tmp_path):
    segment = make_segment()
    config = tmp_path / "both.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            admin: {{address: "127.0.0.1:9901"}}
            listeners: [{{address: "127.0.0.1:8080"}}]
            routes: [{{respond: {{status: 200, body: "hi"}}}}]
            dhcp:
              interfaces: [srv0]
              state_dir: {tmp_path / "state"}
              subnets: [{{subnet: 10.0.0.0/24, pools: [10.0.0.100-10.0.0.109]}}]
            """
        )
    )
    server = Server(segment, ["serve", "-c", str(config), "--workers", "1"])
    server.wait_for("lease store")
    with probe_in(segment) as probe:
        _, ack = probe.lease(mac_for(1, 4))
    assert ack is not None and ack.message_type is MessageType.ACK
    # the DHCP service's counters appear on the edge's admin listener (published each second)
    deadline = time.monotonic() + 15
    text = ""
    while 'backhaul_dhcp_replies_total{type="ack"} 1' not in text:
        assert time.monotonic() < deadline, text
        text = segment.call("server", lambda: _get("127.0.0.1", 9901, "/metrics"))
        time.sleep(0.2)
    assert "backhaul_workers" in text  # the edge's own metrics are there too
    # the supervisor restarts a DHCP service that dies; its leases are still there
    # (pids are machine-wide: match this test's own metrics file, not another run's service)
    mine = f"services.dhcp --config-fd [0-9]+ --metrics-file {tmp_path / 'state'}/"
    found = segment.run("server", ["pgrep", "-f", mine]).stdout.split()
    assert len(found) == 1
    os.kill(int(found[0]), signal.SIGKILL)
    server.wait_for("dhcp exited (-9); restarting")
    assert "1 bound" in server.wait_for("lease store", count=2)
    with probe_in(segment) as probe:
        offer = probe.exchange(probe.packet(MessageType.DISCOVER, mac_for(1, 4), 99))
    assert offer is not None and offer.yiaddr == ack.yiaddr
    assert server.stop() == 0
    assert segment.run("server", ["pgrep", "-f", "services.dhcp --config-fd"]).returncode == 1


@pytest.mark.parametrize(
    ("role", "args", "words"),
    [
        ("server", ["-i", "nosuch0", "--pool", "10.0.0.100-10.0.0.110"], "does not exist"),
        ("client", ["-i", "cli0", "--pool", "10.0.0.100-10.0.0.110"], "has no IPv4 address"),
        ("server", ["-i", "srv0", "--pool", "10.9.0.1-10.9.0.5"], "lies outside srv0's subnet"),
        ("server", ["-i", "srv0", "--pool", "nonsense"], "expected a range"),
    ],
)
def test_refuses_to_start_with_a_clear_message(make_segment, tmp_path, role, args, words):
    segment = make_segment()
    done = segment.run(
        role, [BACKHAUL, "dhcp", "serve", *args, "--state", str(tmp_path)], timeout=30
    )
    assert done.returncode == 2, done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert words in lines[0]


def test_leases_command_without_a_state_directory(tmp_path):
    done = subprocess.run(
        [BACKHAUL, "dhcp", "leases", "--state", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "does not exist" in done.stderr
    assert os.path.exists(tmp_path) and "Traceback" not in done.stderr


def test_sigkill_under_load_loses_no_acknowledged_lease(make_segment, tmp_path):
    """Every lease a client got an ACK for is in the store after a kill -9 mid-run."""
    import threading

    from backhaul.state.dhcp_leases import JOURNAL_NAME

    segment = make_segment(server_address="10.0.0.1/20")
    state = tmp_path / "state"
    server = quick_server(segment, state, pool="10.0.0.10-10.0.15.250")
    journal = state / JOURNAL_NAME
    killed = threading.Event()

    def kill_when_busy() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if journal.exists() and journal.stat().st_size > 15_000:  # ~120 records
                server.proc.send_signal(signal.SIGKILL)
                killed.set()
                return
            time.sleep(0.002)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    with probe_in(segment) as probe:
        result = run_load(probe, 2000, window=64, step_timeout=0.2, deadline=6)
    killer.join()
    assert killed.is_set(), "the load ended before the server was killed"
    server.kill()
    assert 0 < len(result.leases) < 2000  # the kill really came mid-run
    stored = {
        lease["mac"].replace(":", ""): lease["address"]
        for lease in leases_json(state)
        if lease["state"] == "bound"
    }
    missing = {mac: ip for mac, ip in result.leases.items() if stored.get(mac) != ip}
    assert missing == {}


def test_the_journal_is_compacted_and_survives_a_restart(make_segment, tmp_path):
    from backhaul.state.dhcp_leases import JOURNAL_NAME

    segment = make_segment()
    state = tmp_path / "state"
    server = quick_server(segment, state)
    mac = mac_for(1, 9)
    with probe_in(segment) as probe:
        _, ack = probe.lease(mac)
        assert ack is not None
        mine = ack.yiaddr
        for xid in range(1100):  # each INIT-REBOOT ACK appends one record
            again = probe.exchange(
                probe.packet(
                    MessageType.REQUEST, mac, xid, options={Opt.REQUESTED_ADDRESS: mine.packed}
                )
            )
            assert again is not None and again.message_type is MessageType.ACK
        server.wait_for("lease store compacted")
        lines = (state / JOURNAL_NAME).read_text().splitlines()
        assert len(lines) < 100  # 1,101 records of one lease, compacted
        server.kill()
        server = quick_server(segment, state)
        offer = probe.exchange(probe.packet(MessageType.DISCOVER, mac, 5000))
        assert offer is not None and offer.yiaddr == mine


def test_a_second_server_on_the_same_interface_or_store_is_refused(make_segment, tmp_path):
    segment = make_segment()
    quick_server(segment, tmp_path / "state")
    for state, words in (
        (tmp_path / "state", "in use by another"),
        (tmp_path / "other", "port 67"),
    ):
        done = segment.run(
            "server",
            [BACKHAUL, "dhcp", "serve", "-i", "srv0", "--pool", "10.0.0.100-10.0.0.199",
             "--state", str(state)],
            timeout=30,
        )  # fmt: skip
        assert done.returncode == 1, done
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and words in lines[0], done.stderr


@pytest.mark.skipif(
    shutil.which("dhcrelay") is None, reason="isc-dhcp-relay missing: scripts/sysdeps.sh test"
)
def test_udhcpc_through_isc_dhcrelay_two_routers_away(routed_lab, tmp_path):
    """A real relay agent (ISC dhcrelay on router1, adding option 82) between udhcpc and the
    server: the relay's giaddr selects the client's subnet, replies go back through it."""
    lab = routed_lab
    config = tmp_path / "dhcp.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            dhcp:
              interfaces: [eth0]
              state_dir: {tmp_path / "state"}
              subnets:
                - subnet: 203.0.113.0/24
                  pools: [203.0.113.100-203.0.113.150]
                - subnet: 192.0.2.0/24
                  pools: [192.0.2.100-192.0.2.150]
                  options: {{routers: [192.0.2.1], dns_servers: [192.0.2.53]}}
            """
        )
    )
    server = Server(lab, ["serve", "-c", str(config)])
    assert "through relays" in server.wait_for("serving 192.0.2.0/24")
    server.wait_for("lease store")
    relay = lab.popen(
        "router1",
        ["dhcrelay", "-4", "-d", "-a", "--no-pid", "-id", "eth0", "-iu", "eth1", "203.0.113.2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    script, out = tmp_path / "udhcpc.sh", tmp_path / "events"
    script.write_text(f'#!/bin/sh\necho "$1 ip=$ip mask=$mask router=$router dns=$dns" >> {out}\n')
    script.chmod(0o755)
    done = lab.run(
        "client",
        ["udhcpc", "-f", "-q", "-n", "-t", "8", "-T", "1", "-i", "eth0", "-s", str(script)],
        timeout=40,
    )
    assert relay.poll() is None, "dhcrelay exited"
    assert done.returncode == 0, done.stderr + server.output()
    bound = [line for line in out.read_text().splitlines() if line.startswith("bound")]
    assert bound == ["bound ip=192.0.2.100 mask=24 router=192.0.2.1 dns=192.0.2.53"]
    [lease] = leases_json(tmp_path / "state")
    assert lease["subnet"] == "192.0.2.0/24" and lease["address"] == "192.0.2.100"
    assert "via=192.0.2.1" in server.wait_for("ack ip=192.0.2.100")  # giaddr: router1
