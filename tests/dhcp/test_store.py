"""The lease journal: replay, torn tails, compaction; DNS records from leases; config errors."""

from __future__ import annotations

import os
import time

import dns.rdatatype
import pytest

from backhaul.config import load_text
from backhaul.errors import ConfigError, ProtocolError
from backhaul.services.dhcp.records import dns_records
from backhaul.state.dhcp_leases import (
    JOURNAL_NAME,
    LeaseJournal,
    LeaseRecord,
    LeaseStoreError,
    read_leases,
)


def record(n: int, state: str = "bound", host: str = "", expires: float = 2e9) -> LeaseRecord:
    return LeaseRecord(
        address=f"10.0.0.{n}",
        subnet="10.0.0.0/24",
        state=state,
        client=f"hw:02000000000{n % 10}",
        mac=f"02:00:00:00:00:0{n % 10}",
        client_id="",
        hostname=host,
        expires=expires,
        granted=expires - 3600,
    )


def test_committed_records_replay_newest_per_address(tmp_path):
    journal = LeaseJournal(tmp_path)
    assert journal.open() == []
    journal.append(record(1))
    journal.append(record(2))
    assert journal.commit() == 2
    journal.append(record(1, state="released"))
    journal.commit()
    journal.append(record(3))  # never committed: lost, and never acknowledged
    journal.close()
    again = LeaseJournal(tmp_path)
    leases = {r.address: r.state for r in again.open()}
    assert leases == {"10.0.0.1": "released", "10.0.0.2": "bound"}
    assert again.records == 3


@pytest.mark.parametrize("tail", [b'0000abcd {"address":', b"deadbeef {}\n", b"\x00\x00\x00"])
def test_a_torn_or_corrupt_tail_is_cut_off(tmp_path, tail):
    journal = LeaseJournal(tmp_path)
    journal.open()
    journal.append(record(1))
    journal.commit()
    journal.close()
    path = tmp_path / JOURNAL_NAME
    good = path.stat().st_size
    with open(path, "ab") as handle:
        handle.write(tail)
    again = LeaseJournal(tmp_path)
    assert [r.address for r in again.open()] == ["10.0.0.1"]
    assert path.stat().st_size == good
    again.append(record(2))
    again.commit()
    assert len(read_leases(tmp_path)) == 2


def test_compaction_keeps_the_live_set_and_bounds_the_file(tmp_path):
    journal = LeaseJournal(tmp_path)
    journal.open()
    for round_ in range(30):
        for n in range(1, 101):
            journal.append(record(n, expires=2e9 + round_))
        journal.commit()
    assert journal.wants_compaction(live=100)
    live = [record(n, expires=2e9 + 29) for n in range(1, 101)]
    journal.compact(live)
    assert journal.records == 100 and not journal.wants_compaction(live=100)
    journal.append(record(1, state="released"))
    journal.commit()
    journal.close()
    leases = {r.address: r for r in LeaseJournal(tmp_path).open()}
    assert len(leases) == 100 and leases["10.0.0.1"].state == "released"
    assert not (tmp_path / "dhcp-leases.compact").exists()


def test_a_state_dir_that_cannot_be_made_is_a_clear_error(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")  # a file where the directory should be
    with pytest.raises(LeaseStoreError, match=r"check that the state directory is writable"):
        LeaseJournal(target / "sub").open()


def test_dns_records_from_bound_named_leases():
    now = time.time()
    leases = [
        record(5, host="web1", expires=now + 100),
        record(6, host="", expires=now + 100),
        record(7, host="old", expires=now - 1),
        record(8, state="released", host="gone", expires=now + 100),
        record(9, host="web1", expires=now + 3000),  # granted later: wins the name
    ]
    rrsets = dns_records(leases, "lab.example", now)
    text = sorted(r.to_text() for r in rrsets)
    assert len(rrsets) == 2
    a = next(r for r in rrsets if r.rdtype == dns.rdatatype.A)
    assert a.name.to_text() == "web1.lab.example." and a[0].address == "10.0.0.9"
    assert a.ttl == 300
    ptr = next(r for r in rrsets if r.rdtype == dns.rdatatype.PTR)
    assert ptr.name.to_text() == "9.0.0.10.in-addr.arpa."
    assert "web1.lab.example." in text[1] or "web1.lab.example." in text[0]


def _problems(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, "t.yaml")
    return dict(info.value.problems)


GOOD = """
dhcp:
  interfaces: [eth1]
  subnets:
    - subnet: 10.0.0.0/24
      pools: [10.0.0.100-10.0.0.250]
"""


def test_config_section_is_validated_with_paths():
    config = load_text(GOOD, "t.yaml")
    assert config.dhcp is not None and not config.listeners
    found = _problems(GOOD.replace("10.0.0.250", "10.0.1.9"))
    assert "outside" not in found and "not inside 10.0.0.0/24" in found["dhcp.subnets[0].pools[0]"]
    found = _problems(GOOD + "      lease_time: 10s\n")
    assert "dhcp.subnets[0].lease_time" in found
    found = _problems(
        GOOD + "      reservations:\n        - {mac: 02:00:00:00:00:01, address: 10.9.0.1}\n"
    )
    assert (
        "expected a host address of 10.0.0.0/24" in found["dhcp.subnets[0].reservations[0].address"]
    )
    found = _problems(GOOD + "      options: {raw: {53: 'x'}}\n")
    assert "does not set itself" in found["dhcp.subnets[0].options.raw.53"]
    found = _problems(GOOD.replace("pools: [10.0.0.100-10.0.0.250]", "pools: [banana]"))
    assert "expected a range FIRST-LAST" in found["dhcp.subnets[0].pools[0]"]
    found = _problems(
        'admin: {address: "127.0.0.1:9901"}\n' + GOOD + '  metrics_address: "127.0.0.1:9901"\n'
    )
    assert "overlaps admin.address" in found["dhcp.metrics_address"]
    found = _problems("listeners: []\n")
    assert "or a dhcp: section" in found["listeners"]


def test_exported_names_are_what_we_mean():
    import backhaul.proto.dhcp as codec
    import backhaul.services.dhcp as service

    assert set(service.__all__) == {
        "Lease",
        "LeaseEvent",
        "LeaseState",
        "LeaseTransitionError",
        "dns_records",
    }
    assert {"decode", "encode", "DhcpPacket", "DhcpFormatError", "MessageType", "Opt"} <= set(
        codec.__all__
    )
    assert issubclass(codec.DhcpFormatError, ProtocolError)


def test_extra_metrics_are_whole_fresh_and_bounded(tmp_path, monkeypatch):
    from backhaul.state import extra_metrics

    fresh, stale = str(tmp_path / "a.prom"), str(tmp_path / "b.prom")
    monkeypatch.setattr(extra_metrics, "PATHS", [fresh, stale, str(tmp_path / "missing")])
    extra_metrics.publish(fresh, b"a_total 1\n")
    extra_metrics.publish(stale, b"b_total 2\n")
    old = time.time() - 60
    os.utime(stale, (old, old))
    assert extra_metrics.collect() == b"a_total 1\n"
    extra_metrics.publish(fresh, b"x" * (extra_metrics.MAX_BYTES + 10))
    assert len(extra_metrics.collect()) == extra_metrics.MAX_BYTES


def test_one_server_per_lease_store(tmp_path):
    first = LeaseJournal(tmp_path)
    first.open()
    with pytest.raises(LeaseStoreError, match="in use by another running DHCP server"):
        LeaseJournal(tmp_path).open()
    first.close()
    second = LeaseJournal(tmp_path)
    second.open()  # free again
    second.close()


def test_the_section_survives_the_json_trip_to_its_process():
    import json

    from backhaul.config.dhcp import DhcpConfig, dump

    text = (
        GOOD
        + "      options: {vendor_specific: 'hex:01:02', raw: {252: wpad}, mtu: 1400}\n"
        + "      reservations: [{client_id: 'ff:01', address: 10.0.0.9, hostname: h}]\n"
        + '  metrics_address: "127.0.0.1:9967"\n'
        + "  offer_hold: 45s\n"
    )
    config = load_text(text, "t.yaml").dhcp
    assert config is not None
    again = DhcpConfig.model_validate(json.loads(json.dumps(dump(config))))
    assert again == config
