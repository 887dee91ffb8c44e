"""DHCP clients' host names in DNS: the DNS service publishes the bound, named leases of the
DHCP service's lease store (``dns.leases``), and follows the store as it changes."""

from __future__ import annotations

import time
from pathlib import Path

import dns.rdatatype
import dns.reversename

from backhaul.state.dhcp_leases import LeaseJournal, LeaseRecord
from tests.services.dns_harness import ask, dig, start_backhaul


def grant(state_dir: Path, address: str, hostname: str, mac: str, state: str = "bound") -> None:
    now = time.time()
    journal = LeaseJournal(state_dir)
    journal.open()
    try:
        journal.append(
            LeaseRecord(
                address=address,
                subnet="10.0.0.0/24",
                state=state,
                client=mac,
                mac=mac,
                client_id="",
                hostname=hostname,
                expires=now + 3600,
                granted=now,
            )
        )
        journal.commit()
    finally:
        journal.close()


def a_records(port: int, name: str) -> list[str]:
    answer = ask(port, name).answer
    return [r.to_text() for rrset in answer if rrset.rdtype == dns.rdatatype.A for r in rrset]


def test_leases_are_published_and_followed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    grant(state, "10.0.0.5", "printer", "02:00:00:00:00:05")
    grant(state, "10.0.0.7", "", "02:00:00:00:00:07")  # no host name: nothing to publish
    server = start_backhaul(
        tmp_path, {"leases": {"state_dir": str(state), "zone": "lan.internal", "max_ttl": 120}}
    )
    try:
        assert a_records(server.port, "printer.lan.internal") == ["10.0.0.5"]
        reply = ask(server.port, "printer.lan.internal")
        assert 0 < reply.answer[0].ttl <= 120
        ptr = ask(server.port, dns.reversename.from_address("10.0.0.5").to_text(), "PTR")
        assert [r.to_text() for r in ptr.answer[0]] == ["printer.lan.internal."]
        out = dig(*server.at(), "+short", "printer.lan.internal")
        assert out.stdout.split() == ["10.0.0.5"]
        # A new lease in the store reaches DNS without a restart (the store is watched).
        grant(state, "10.0.0.6", "scanner", "02:00:00:00:00:06")
        deadline = time.monotonic() + 10
        while a_records(server.port, "scanner.lan.internal") != ["10.0.0.6"]:
            assert time.monotonic() < deadline, "the new lease never reached DNS"
            time.sleep(0.1)
        # A released lease goes away.
        grant(state, "10.0.0.5", "printer", "02:00:00:00:00:05", state="released")
        deadline = time.monotonic() + 10
        while a_records(server.port, "printer.lan.internal"):
            assert time.monotonic() < deadline, "the released lease stayed in DNS"
            time.sleep(0.1)
    finally:
        server.stop()
