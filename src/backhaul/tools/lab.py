"""A multi-hop test network in Linux network namespaces (``backhaul lab`` and the tests).

Topology, one namespace per host, veth pairs between them::

    client ── router1 ── router2 ── server
      eth0  eth0   eth1  eth0   eth1  eth0

    link        IPv4              IPv6
    client-r1   192.0.2.0/24      2001:db8:1::/64    client .2 / ::2, router1 .1 / ::1
    r1-r2       198.51.100.0/24   2001:db8:2::/64    router1 .1 / ::1, router2 .2 / ::2
    r2-server   203.0.113.0/24    2001:db8:3::/64    router2 .1 / ::1, server .2 / ::2

The prefixes are the documentation ranges (RFC 5737, RFC 3849): they exist only inside the
lab's namespaces, so nothing leaves the machine. Routers forward IPv4 and IPv6; ICMP rate
limiting is switched off in every namespace (so traces and reports are not thinned by the
kernel's 1-per-second default) and unprivileged ICMP echo sockets are allowed
(``net.ipv4.ping_group_range``), unless asked otherwise.

Impairments, each applied to one link in the client → server direction only, so a ping's
measured loss equals the configured rate:

- loss: nftables ``numgen random mod 100 < N drop`` at the receiving end of the link
  (neighbour discovery is never dropped);
- rate: ``tc tbf`` on the sending end of the link;
- mtu: set on both ends of the link.

The kernel here has no netem, so delay cannot be injected.

Host names (``client.lab``, ``router1.lab`` ...) are written to ``/etc/netns/NS/hosts`` and
a ``resolv.conf`` that points at 127.0.0.1, which ``ip netns exec`` mounts over ``/etc`` for
commands run in the lab: reverse lookups answer from the file, and no DNS query ever leaves
the machine.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from backhaul.errors import BackhaulError, UsageError

__all__ = [
    "IPV6_MIN_MTU",
    "LINKS",
    "ROLES",
    "Lab",
    "LabError",
    "LabUnavailable",
    "Segment",
    "backhaul_command",
    "call_in_namespace",
    "lab_unavailable_reason",
]

ROLES = ("client", "router1", "router2", "server")
_SHORT = {"client": "client", "router1": "r1", "router2": "r2", "server": "server"}


@dataclass(frozen=True)
class _LinkPlan:
    a: str  # the end nearer the client
    a_dev: str
    b: str
    b_dev: str
    v4: ipaddress.IPv4Network
    v6: ipaddress.IPv6Network
    a_host: int
    b_host: int


LINKS: dict[str, _LinkPlan] = {
    "client-r1": _LinkPlan(
        "client",
        "eth0",
        "router1",
        "eth0",
        ipaddress.IPv4Network("192.0.2.0/24"),
        ipaddress.IPv6Network("2001:db8:1::/64"),
        2,
        1,
    ),
    "r1-r2": _LinkPlan(
        "router1",
        "eth1",
        "router2",
        "eth0",
        ipaddress.IPv4Network("198.51.100.0/24"),
        ipaddress.IPv6Network("2001:db8:2::/64"),
        1,
        2,
    ),
    "r2-server": _LinkPlan(
        "router2",
        "eth1",
        "server",
        "eth0",
        ipaddress.IPv4Network("203.0.113.0/24"),
        ipaddress.IPv6Network("2001:db8:3::/64"),
        1,
        2,
    ),
}

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,23}$")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$")
_RATE_SCALE = {"bit": 1, "kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}
_NFT_TABLE = "backhaul_lab"
_ND_TYPES = "nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert"


class LabError(BackhaulError):
    """The lab could not be set up, changed or torn down; the message says why."""

    exit_code = 1


class LabUnavailable(LabError):
    """Network namespaces cannot be made here (no root, no iproute2, no netns support)."""

    exit_code = 2


#: capability numbers (linux/capability.h)
_CAP_NET_ADMIN = 12
_CAP_SYS_ADMIN = 21


def _has_capabilities(*caps: int) -> bool:
    """Whether this process holds every one of ``caps`` in its effective set.

    Being uid 0 is not enough (a container or ``setpriv`` may have dropped them), and a
    non-root process may hold them (file capabilities, ambient capabilities).
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return os.geteuid() == 0
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            effective = int(line.split()[1], 16)
            return all(effective >> cap & 1 for cap in caps)
    return os.geteuid() == 0


#: The least MTU an IPv6 link may have (RFC 8200, section 5); every lab link carries IPv6.
IPV6_MIN_MTU = 1280


def backhaul_command() -> str:
    """This program as a command that works where the venv is not on PATH (under ``sudo``,
    in ``ip netns exec``): its full path, shell-quoted."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "backhaul" and script.is_file():
        return shlex.quote(str(script.resolve()))
    installed = Path(sys.executable).with_name("backhaul")
    if installed.is_file():
        return shlex.quote(str(installed))
    return f"{shlex.quote(sys.executable)} -m backhaul"


def lab_unavailable_reason() -> str | None:
    """Why a lab cannot be built on this machine, or ``None`` if it looks possible."""
    if not _has_capabilities(_CAP_NET_ADMIN, _CAP_SYS_ADMIN):
        return (
            "network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN): "
            f"run as root, e.g. `sudo {backhaul_command()} lab up`"
        )
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed: apt-get install iproute2"
    if not Path("/proc/self/ns/net").exists():
        return "this kernel has no network namespaces (/proc/self/ns/net is missing)"
    return None


@dataclass(frozen=True)
class Interface:
    name: str
    v4: ipaddress.IPv4Interface
    v6: ipaddress.IPv6Interface
    link: str


@dataclass(frozen=True)
class Host:
    role: str
    namespace: str
    interfaces: tuple[Interface, ...]

    def addresses(self, family: int = 4) -> list[str]:
        return [str(i.v4.ip if family == 4 else i.v6.ip) for i in self.interfaces]


def _plan_hosts(name: str) -> dict[str, Host]:
    ifaces: dict[str, list[Interface]] = {role: [] for role in ROLES}
    for link_name, plan in LINKS.items():
        for role, dev, host in (
            (plan.a, plan.a_dev, plan.a_host),
            (plan.b, plan.b_dev, plan.b_host),
        ):
            ifaces[role].append(
                Interface(
                    dev,
                    ipaddress.IPv4Interface(f"{plan.v4[host]}/{plan.v4.prefixlen}"),
                    ipaddress.IPv6Interface(f"{plan.v6[host]}/{plan.v6.prefixlen}"),
                    link_name,
                )
            )
    return {
        role: Host(
            role, f"{name}-{_SHORT[role]}", tuple(sorted(ifaces[role], key=lambda i: i.name))
        )
        for role in ROLES
    }


def _parse_rate(rate: str) -> int:
    match = _RATE.match(rate.strip().lower())
    if match is None:
        raise UsageError(f"bad rate {rate!r}: write it like 10mbit, 500kbit or 1gbit")
    bits = int(float(match.group(1)) * _RATE_SCALE[match.group(2)])
    if bits < 8_000:
        raise UsageError(f"rate {rate!r} is below 8kbit; tbf cannot shape that slowly")
    return bits


def _check_link(link: str) -> _LinkPlan:
    plan = LINKS.get(link)
    if plan is None:
        raise UsageError(f"unknown link {link!r}: use one of {', '.join(LINKS)}")
    return plan


def _check_mtu(link: str, mtu: int) -> _LinkPlan:
    plan = _check_link(link)
    if not IPV6_MIN_MTU <= mtu <= 65535:
        raise UsageError(
            f"mtu {mtu} on {link} is not within {IPV6_MIN_MTU}-65535: every lab link carries"
            f" IPv6, whose links need an MTU of at least {IPV6_MIN_MTU} (RFC 8200)"
        )
    return plan


@dataclass
class Lab:
    """The four-namespace lab. Use as a context manager: it is always torn down on exit.

    ``loss`` maps a link name to a drop percentage, ``rate`` to a tbf rate (``"10mbit"``),
    ``mtu`` to an MTU; all can be changed while the lab is up.
    """

    name: str = "bhlab"
    loss: dict[str, int] = field(default_factory=dict)
    rate: dict[str, str] = field(default_factory=dict)
    mtu: dict[str, int] = field(default_factory=dict)
    icmp_ratelimit: bool = False
    unprivileged_ping: bool = True
    hosts: dict[str, Host] = field(init=False)
    _started: list[subprocess.Popen[Any]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise UsageError(
                f"bad lab name {self.name!r}: use 1-24 lowercase letters, digits, - or _, "
                "starting with a letter"
            )
        for link, percent in self.loss.items():
            _check_link(link)
            if not 0 <= percent <= 100:
                raise UsageError(f"loss {percent}% on {link} is not within 0-100")
        for link, rate in self.rate.items():
            _check_link(link)
            _parse_rate(rate)
        for link, mtu in self.mtu.items():
            _check_mtu(link, mtu)
        self.hosts = _plan_hosts(self.name)

    # ------------------------------------------------------------------ addresses

    def namespace(self, role: str) -> str:
        return self._host(role).namespace

    def _host(self, role: str) -> Host:
        host = self.hosts.get(role)
        if host is None:
            raise UsageError(f"unknown lab host {role!r}: use one of {', '.join(ROLES)}")
        return host

    def address(self, role: str, family: int = 4) -> str:
        """The address of ``role`` as seen from the client side (its first interface)."""
        return self._host(role).addresses(family)[0]

    def addresses(self, role: str, family: int = 4) -> list[str]:
        return self._host(role).addresses(family)

    def hostnames(self) -> list[tuple[str, str]]:
        names = []
        for role in ROLES:
            host = self.hosts[role]
            for family in (4, 6):
                names += [(addr, f"{role}.lab") for addr in host.addresses(family)]
        return names

    # ------------------------------------------------------------------ running things

    def command(self, role: str, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside the namespace of ``role``."""
        return ["ip", "netns", "exec", self.namespace(role), *argv]

    def run(
        self, role: str, argv: Sequence[str], *, timeout: float = 30.0, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``role``'s namespace; output captured as text."""
        return subprocess.run(
            self.command(role, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def popen(self, role: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``role``'s namespace; the lab kills it on teardown."""
        proc = subprocess.Popen(self.command(role, argv), **kwargs)
        self._started.append(proc)
        return proc

    # ------------------------------------------------------------------ lifecycle

    def exists(self) -> dict[str, bool]:
        listed = _ip(["netns", "list"], check=False).stdout.split()
        return {role: self.hosts[role].namespace in listed for role in ROLES}

    def up(self) -> Lab:
        """Build the lab; on any failure what was built is torn down and LabError raised."""
        reason = lab_unavailable_reason()
        if reason is not None:
            raise LabUnavailable(reason)
        if any(self.exists().values()):
            raise LabError(
                f"lab {self.name!r} is already (partly) up; "
                f"run `{backhaul_command()} lab down --name {self.name}` first"
            )
        try:
            self._build()
        except BaseException:
            self.down(missing_ok=True)
            raise
        return self

    def _build(self) -> None:
        first = self.hosts["client"].namespace
        made = _ip(["netns", "add", first], check=False)
        if made.returncode != 0:
            raise LabUnavailable(
                f"cannot create network namespace {first}: {made.stderr.strip()} "
                "(a container may need --privileged or CAP_SYS_ADMIN)"
            )
        for role in ROLES[1:]:
            _ip(["netns", "add", self.hosts[role].namespace])
        for role in ROLES:
            self._write_etc(role)
            ns = self.hosts[role].namespace
            self._sysctl(role, self._base_sysctls(role))
            _ip(["-n", ns, "link", "set", "lo", "up"])
        for plan in LINKS.values():
            a_ns, b_ns = self.hosts[plan.a].namespace, self.hosts[plan.b].namespace
            _ip(
                [
                    *("link", "add", plan.a_dev, "netns", a_ns, "type", "veth"),
                    *("peer", "name", plan.b_dev, "netns", b_ns),
                ]
            )
        for role in ROLES:
            ns = self.hosts[role].namespace
            for iface in self.hosts[role].interfaces:
                _ip(["-n", ns, "addr", "add", str(iface.v4), "dev", iface.name])
                _ip(["-n", ns, "-6", "addr", "add", str(iface.v6), "dev", iface.name, "nodad"])
                _ip(["-n", ns, "link", "set", iface.name, "up"])
        self._routes()
        self._wait_reachable()
        for link, mtu in self.mtu.items():
            self.set_mtu(link, mtu)
        for link, percent in self.loss.items():
            self.set_loss(link, percent)
        for link, rate in self.rate.items():
            self.set_rate(link, rate)

    def _base_sysctls(self, role: str) -> dict[str, str]:
        values = {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0"}
        if role.startswith("router"):
            values["net.ipv4.ip_forward"] = "1"
            values["net.ipv6.conf.all.forwarding"] = "1"
        if not self.icmp_ratelimit:
            values["net.ipv4.icmp_ratelimit"] = "0"
            values["net.ipv6.icmp.ratelimit"] = "0"
        if self.unprivileged_ping:
            values["net.ipv4.ping_group_range"] = "0 2147483647"
        return values

    def _sysctl(self, role: str, values: dict[str, str]) -> None:
        for key, value in values.items():
            path = Path("/proc/sys") / key.replace(".", "/")
            # /proc/sys is per network namespace only when read from inside it
            done = self.run(role, ["sh", "-c", f'echo "{value}" > {path}'], timeout=10)
            if done.returncode != 0:
                raise LabError(f"cannot set {key}={value} in {self.namespace(role)}: {done.stderr}")

    def _routes(self) -> None:
        l1, l2, l3 = LINKS["client-r1"], LINKS["r1-r2"], LINKS["r2-server"]
        routes = {
            "client": [("default", l1.v4[l1.b_host]), ("default", l1.v6[l1.b_host])],
            "router1": [(str(l3.v4), l2.v4[l2.b_host]), (str(l3.v6), l2.v6[l2.b_host])],
            "router2": [(str(l1.v4), l2.v4[l2.a_host]), (str(l1.v6), l2.v6[l2.a_host])],
            "server": [("default", l3.v4[l3.a_host]), ("default", l3.v6[l3.a_host])],
        }
        for role, entries in routes.items():
            ns = self.hosts[role].namespace
            for dest, via in entries:
                fam = "-4" if via.version == 4 else "-6"
                _ip(["-n", ns, fam, "route", "add", dest, "via", str(via)])

    def _wait_reachable(self, timeout: float = 5.0) -> None:
        """Until the client reaches the server over IPv4 and IPv6 (neighbours resolved)."""
        if shutil.which("ping") is None:
            return
        deadline = time.monotonic() + timeout
        for family in (4, 6):
            target = self.address("server", family)
            while self.run("client", ["ping", f"-{family}", "-c1", "-W1", target]).returncode:
                if time.monotonic() > deadline:
                    raise LabError(f"lab is built but the client cannot reach {target}")
                time.sleep(0.05)

    def _write_etc(self, role: str) -> None:
        etc = Path("/etc/netns") / self.hosts[role].namespace
        etc.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        lines += [f"{addr} {name}" for addr, name in self.hostnames()]
        (etc / "hosts").write_text("\n".join(lines) + "\n")
        (etc / "resolv.conf").write_text(
            "# backhaul lab: no DNS server here, names come from hosts\n"
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
        )

    def down(self, *, missing_ok: bool = True) -> None:
        """Tear everything down: processes started in the lab, namespaces, /etc/netns files.

        Every step is tried even when an earlier one fails; failures are reported together.
        """
        problems: list[str] = []
        for proc in self._started:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                problems.append(f"process {proc.pid} did not exit")
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        self._started.clear()
        for role in ROLES:
            ns = self.hosts[role].namespace
            pids = _ip(["netns", "pids", ns], check=False)
            for pid in pids.stdout.split():
                # processes inside a lab namespace were started for the lab
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            gone = _ip(["netns", "del", ns], check=False)
            if gone.returncode != 0 and not (missing_ok and "No such file" in gone.stderr):
                problems.append(f"{ns}: {gone.stderr.strip()}")
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        try:
            Path("/etc/netns").rmdir()
        except OSError:
            pass
        if problems:
            raise LabError("lab teardown incomplete: " + "; ".join(problems))

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    # ------------------------------------------------------------------ impairments

    def set_loss(self, link: str, percent: int) -> None:
        """Drop ``percent`` % of packets entering ``link`` towards the server (0 removes)."""
        plan = _check_link(link)
        if not 0 <= percent <= 100:
            raise UsageError(f"loss {percent}% on {link} is not within 0-100")
        if shutil.which("nft") is None:
            raise LabUnavailable("packet loss needs nftables: apt-get install nftables")
        role, dev = plan.b, plan.b_dev
        chain = f"loss_{dev}"
        ruleset = [
            f"add table inet {_NFT_TABLE}",
            f"add chain inet {_NFT_TABLE} {chain} "
            "{ type filter hook prerouting priority -150; policy accept; }",
            f"flush chain inet {_NFT_TABLE} {chain}",
        ]
        if percent > 0:
            chance = "" if percent == 100 else f"numgen random mod 100 lt {percent} "
            ruleset += [
                f"add rule inet {_NFT_TABLE} {chain} icmpv6 type {{ {_ND_TYPES} }} accept",
                f'add rule inet {_NFT_TABLE} {chain} iifname "{dev}" {chance}counter drop',
            ]
        done = subprocess.run(
            self.command(role, ["nft", "-f", "-"]),
            input="\n".join(ruleset) + "\n",
            capture_output=True,
            text=True,
            timeout=10,
        )
        if done.returncode != 0:
            raise LabError(f"nft in {self.namespace(role)} failed: {done.stderr.strip()}")
        self.loss[link] = percent

    def set_rate(self, link: str, rate: str | None) -> None:
        """Limit ``link`` towards the server to ``rate`` (tc tbf); ``None`` removes it."""
        plan = _check_link(link)
        ns, dev = self.hosts[plan.a].namespace, plan.a_dev
        if rate is None:
            _tc(["-n", ns, "qdisc", "del", "dev", dev, "root"], check=False)
            self.rate.pop(link, None)
            return
        bits = _parse_rate(rate)
        # burst: at least 10 ms of traffic and a few full frames, or tbf starves itself
        burst = max(bits // 8 // 100, 16 * 1514)
        _tc(
            [
                *("-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf"),
                *("rate", str(bits), "burst", str(burst), "latency", "50ms"),
            ]
        )
        self.rate[link] = rate

    def set_mtu(self, link: str, mtu: int) -> None:
        plan = _check_mtu(link, mtu)
        for role, dev in ((plan.a, plan.a_dev), (plan.b, plan.b_dev)):
            _ip(["-n", self.hosts[role].namespace, "link", "set", dev, "mtu", str(mtu)])
        self.mtu[link] = mtu

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """What exists now: namespaces, addresses and the impairments found in place."""
        present = self.exists()
        hosts = []
        for role in ROLES:
            host = self.hosts[role]
            hosts.append(
                {
                    "role": role,
                    "namespace": host.namespace,
                    "up": present[role],
                    "interfaces": [
                        {"name": i.name, "link": i.link, "ipv4": str(i.v4), "ipv6": str(i.v6)}
                        for i in host.interfaces
                    ],
                }
            )
        links = []
        for link, plan in LINKS.items():
            entry: dict[str, Any] = {"link": link, "loss_percent": 0, "rate": None, "mtu": None}
            if present[plan.b]:
                rules = subprocess.run(
                    self.command(plan.b, ["nft", "list", "table", "inet", _NFT_TABLE]),
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                found = re.search(r"mod 100 < (\d+)", rules.stdout)
                if found:
                    entry["loss_percent"] = int(found.group(1))
                elif re.search(r'iifname "\w+" counter packets \d+ bytes \d+ drop', rules.stdout):
                    entry["loss_percent"] = 100
            if present[plan.a]:
                qd = _tc(["-n", self.hosts[plan.a].namespace, "qdisc", "show", "dev", plan.a_dev])
                found = re.search(r"tbf .*?rate (\S+)", qd.stdout)
                entry["rate"] = found.group(1) if found else None
                shown = _ip(["-n", self.hosts[plan.a].namespace, "link", "show", plan.a_dev])
                found = re.search(r"mtu (\d+)", shown.stdout)
                entry["mtu"] = int(found.group(1)) if found else None
            links.append(entry)
        return {"name": self.name, "up": all(present.values()), "hosts": hosts, "links": links}


def _ip(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _tool("ip", argv, check=check)


def _tc(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _tool("tc", argv, check=check)


def _tool(name: str, argv: list[str], *, check: bool) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run([name, *argv], capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise LabUnavailable(f"`{name}` is not installed: apt-get install iproute2") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`{name} {' '.join(argv)}` did not finish in 30 s") from exc
    if check and done.returncode != 0:
        raise LabError(f"`{name} {' '.join(argv)}` failed: {done.stderr.strip()}")
    return done


@dataclass
class Segment:
    """One Ethernet segment between two namespaces, for layer-2 tests (DHCP).

    ``NAME-srv`` holds ``srv0`` with ``server_address``; ``NAME-cli`` holds ``cli0`` with
    ``client_address`` (``None``: no address, as a DHCP client starts). ``extra`` maps a role
    to more addresses for its interface (a relay agent's, say); ``routes`` maps a role to
    ``(destination, via)`` pairs. Use as a context manager: it is always torn down.
    """

    name: str
    server_address: str = "10.0.0.1/24"
    client_address: str | None = None
    extra: dict[str, list[str]] = field(default_factory=dict)
    routes: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    _started: list[subprocess.Popen[Any]] = field(default_factory=list, init=False, repr=False)

    ROLES = ("server", "client")

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise UsageError(f"bad segment name {self.name!r}: 1-24 lowercase letters or digits")

    def namespace(self, role: str) -> str:
        return f"{self.name}-{'srv' if role == 'server' else 'cli'}"

    def interface(self, role: str) -> str:
        return "srv0" if role == "server" else "cli0"

    def command(self, role: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(role), *argv]

    def run(
        self, role: str, argv: Sequence[str], *, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(role, argv), capture_output=True, text=True, timeout=timeout
        )

    def popen(self, role: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``role``'s namespace; killed on teardown."""
        proc = subprocess.Popen(self.command(role, argv), **kwargs)
        self._started.append(proc)
        return proc

    def up(self) -> Segment:
        reason = lab_unavailable_reason()
        if reason is not None:
            raise LabUnavailable(reason)
        try:
            for role in self.ROLES:
                made = _ip(["netns", "add", self.namespace(role)], check=False)
                if made.returncode != 0:
                    raise LabUnavailable(
                        f"cannot create network namespace {self.namespace(role)}:"
                        f" {made.stderr.strip()}"
                    )
                etc = Path("/etc/netns") / self.namespace(role)
                etc.mkdir(parents=True, exist_ok=True)
                (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
                _ip(["-n", self.namespace(role), "link", "set", "lo", "up"])
            _ip(
                [
                    *("link", "add", "srv0", "netns", self.namespace("server"), "type", "veth"),
                    *("peer", "name", "cli0", "netns", self.namespace("client")),
                ]
            )
            for role, address in (("server", self.server_address), ("client", self.client_address)):
                ns, dev = self.namespace(role), self.interface(role)
                for addr in ([address] if address else []) + self.extra.get(role, []):
                    _ip(["-n", ns, "addr", "add", addr, "dev", dev])
                _ip(["-n", ns, "link", "set", dev, "up"])
                for dest, via in self.routes.get(role, []):
                    _ip(["-n", ns, "route", "add", dest, "via", via])
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        for proc in self._started:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        self._started.clear()
        for role in self.ROLES:
            ns = self.namespace(role)
            for pid in _ip(["netns", "pids", ns], check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip(["netns", "del", ns], check=False)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)

    def call(self, role: str, factory: Callable[[], T]) -> T:
        """``factory()`` run inside ``role``'s namespace; see :func:`call_in_namespace`."""
        return call_in_namespace(self.namespace(role), factory)

    def __enter__(self) -> Segment:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


T = TypeVar("T")
_CLONE_NEWNET = 0x40000000


def call_in_namespace(namespace: str, factory: Callable[[], T]) -> T:
    """``factory()`` run in a thread that has joined network namespace ``namespace``.

    A socket belongs to the namespace it was created in for its whole life, so a socket
    made here can be used from any thread afterwards: a test talks from inside a namespace
    without a subprocess. Only the helper thread changes namespace, never the caller.
    """
    import ctypes
    import threading

    result: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise LabError(
                        f"cannot enter namespace {namespace}: {os.strerror(ctypes.get_errno())}"
                    )
            finally:
                os.close(fd)
            result.append(factory())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{namespace}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]
