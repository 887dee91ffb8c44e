"""The DHCP service next to the edge across a config reload: a changed ``dhcp:`` section
restarts it on the new section (the edge keeps serving), an unchanged one leaves it be."""

from __future__ import annotations

import ipaddress
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from backhaul.proto.dhcp import Opt
from backhaul.tools.dhcp_load import mac_for

from .conftest import BACKHAUL, Server, needs_netns
from .test_netns import _get, probe_in

pytestmark = [pytest.mark.netns, needs_netns]

IP = ipaddress.IPv4Address


def _config(state: Path, dns: str, body: str) -> str:
    return textwrap.dedent(
        f"""\
        listeners: [{{name: main, address: "127.0.0.1:8080"}}]
        routes: [{{respond: {{body: {body}}}}}]
        access_log: {{enabled: false}}
        dhcp:
          interfaces: [srv0]
          state_dir: {state}
          subnets:
            - subnet: 10.0.0.0/24
              pools: [10.0.0.100-10.0.0.199]
              options: {{routers: [10.0.0.1], dns_servers: [{dns}]}}
        """
    )


def test_a_changed_dhcp_section_restarts_the_service(
    make_segment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKHAUL_RUN_DIR", str(tmp_path / "run"))
    segment = make_segment()
    config = tmp_path / "edge.yaml"
    config.write_text(_config(tmp_path / "state", "10.0.0.53", "one"))
    server = Server(segment, ["serve", "-c", str(config), "-w", "1"])
    try:
        server.wait_for("lease store")
        with probe_in(segment) as probe:
            _, ack = probe.lease(mac_for(1, 9))
            assert ack is not None and ack.options[Opt.DNS_SERVERS] == IP("10.0.0.53").packed

        def reload() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [BACKHAUL, "reload", "-c", str(config)], capture_output=True, text=True, timeout=90
            )

        config.write_text(_config(tmp_path / "state", "10.0.0.54", "two"))
        done = reload()
        assert done.returncode == 0, done.stderr + server.output()
        server.wait_for("lease store", count=2)  # the service started again on its section
        with probe_in(segment) as probe:
            _, ack = probe.lease(mac_for(2, 9))
            assert ack is not None and ack.options[Opt.DNS_SERVERS] == IP("10.0.0.54").packed
        deadline = time.monotonic() + 20  # old workers answer until they stop accepting
        while not segment.call("server", lambda: _get("127.0.0.1", 8080, "/")).endswith("two"):
            assert time.monotonic() < deadline, "the new route never answered"
            time.sleep(0.05)
        # the edge alone changes: the DHCP service keeps running
        config.write_text(_config(tmp_path / "state", "10.0.0.54", "three"))
        assert reload().returncode == 0
        server.wait_for("generation 3 applied")
        with probe_in(segment) as probe:  # a restarted service would say so before answering
            _, ack = probe.lease(mac_for(3, 9))
            assert ack is not None
        assert len([line for line in server.lines if "lease store" in line]) == 2
    finally:
        server.stop()
