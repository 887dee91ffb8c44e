"""The ``backhaul dig`` driver: dig's command line, queries through dnspython, dig's output.

Three parts:

- :func:`parse_args` reads a dig command line with BIND dig's rules: words in any order;
  ``@server``, ``-p``, ``-x``, ``-t``, ``-c``, ``-q``, ``-4``/``-6``, ``-b``; a word that
  names a type or class sets it (until ``-t``/``-c`` is used, as in dig), any other word is
  a query name; ``+option``/``+nooption`` (unique prefixes accepted, like dig). Options
  before the first name are defaults for every query, options after a name apply to it.
- :func:`run` sends the queries (UDP with a TCP retry on truncation, or TCP; ``+time`` per
  try, ``+tries`` tries per server, then the next server) or walks the delegation chain
  from the root for ``+trace``. The codec and the sockets are dnspython's.
- :func:`render_text`, :func:`render_short` and :func:`render_json` print what dig prints
  (same sections, same column layout) or the RFC 8427 JSON shape
  (:mod:`backhaul.proto.dns_json`).

Errors are :mod:`backhaul.errors`: bad input is a :class:`UsageError` (exit 2); no reply is
:class:`NoAnswer` (exit 1).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.reversename
import dns.rrset
import dns.zonefile

from backhaul import __version__
from backhaul.errors import NoAnswer, RemoteProtocolError, UsageError
from backhaul.proto import dns_json

__all__ = [
    "DigRequest",
    "Exchange",
    "HelpRequested",
    "Lookup",
    "LookupResult",
    "QueryOptions",
    "format_question",
    "format_rr",
    "parse_args",
    "render_json",
    "render_short",
    "render_text",
    "run",
]

DEFAULT_PORT = 53
DEFAULT_BUFSIZE = 1232  # dig 9.18's default EDNS UDP size (DNS flag day 2020)
DEFAULT_RESOLV_CONF = "/etc/resolv.conf"
MAX_TRACE_HOPS = 32


class HelpRequested(Exception):
    """``-h`` on the dig command line: the CLI prints the help."""


# --------------------------------------------------------------------------- the request


@dataclass
class QueryOptions:
    """The ``+options`` of one lookup (dig's defaults)."""

    tcp: bool = False
    ignore_tc: bool = False
    recurse: bool = True
    dnssec: bool = False
    edns: int | None = 0  # EDNS version; None: no OPT record
    bufsize: int = DEFAULT_BUFSIZE
    adflag: bool = True  # dig sets AD in queries by default (RFC 6840 §5.7)
    cdflag: bool = False
    trace: bool = False
    short: bool = False
    timeout: float = 5.0
    tries: int = 3
    cmd: bool = True
    comments: bool = True
    question: bool = True
    answer: bool = True
    authority: bool = True
    additional: bool = True
    stats: bool = True


@dataclass
class Lookup:
    """One query to make: a name, a type, a class and its options."""

    name: str = "."
    rdtype: dns.rdatatype.RdataType = dns.rdatatype.A
    rdclass: dns.rdataclass.RdataClass = dns.rdataclass.IN
    options: QueryOptions = field(default_factory=QueryOptions)
    rdtype_set: bool = False
    rdclass_set: bool = False

    def qname(self) -> dns.name.Name:
        try:
            return dns.name.from_text(self.name)
        except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
            raise UsageError(f"{self.name!r} is not a valid domain name: {exc}") from exc


@dataclass
class DigRequest:
    """A parsed dig command line."""

    lookups: list[Lookup]
    servers: list[str] = field(default_factory=list)  # as typed after @
    port: int = DEFAULT_PORT
    family: int | None = None  # 4 or 6 (-4/-6)
    source: str | None = None  # -b
    warnings: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    root_hints: str | None = None
    resolv_conf: str = DEFAULT_RESOLV_CONF


_BOOL_OPTIONS = {
    "tcp": "tcp",
    "vc": "tcp",
    "ignore": "ignore_tc",
    "recurse": "recurse",
    "dnssec": "dnssec",
    "adflag": "adflag",
    "cdflag": "cdflag",
    "trace": "trace",
    "short": "short",
    "cmd": "cmd",
    "comments": "comments",
    "question": "question",
    "answer": "answer",
    "authority": "authority",
    "additional": "additional",
    "stats": "stats",
}
_VALUE_OPTIONS = ("bufsize", "time", "tries", "retry")
_DISPLAY = ("cmd", "comments", "question", "answer", "authority", "additional", "stats")
_ALL_OPTIONS = sorted({*_BOOL_OPTIONS, *_VALUE_OPTIONS, "all", "edns", "cookie"})
_UNSUPPORTED_TYPES = {dns.rdatatype.AXFR, dns.rdatatype.IXFR}


def _match_option(word: str) -> str:
    if word in _ALL_OPTIONS:
        return word
    candidates = [name for name in _ALL_OPTIONS if name.startswith(word)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates and word == "json":
        raise UsageError("+json is not a dig option; use --json for RFC 8427 JSON")
    if not candidates:
        raise UsageError(
            f"unknown option '+{word}'; known: +" + ", +".join(_ALL_OPTIONS) + " (see --help)"
        )
    raise UsageError(f"ambiguous option '+{word}': +" + ", +".join(candidates))


def _int_value(option: str, value: str | None, low: int, high: int) -> int:
    if value is None or value == "":
        raise UsageError(f"+{option} needs a value, like +{option}=N")
    try:
        number = int(value)
    except ValueError as exc:
        raise UsageError(f"+{option}={value}: not a number") from exc
    if not low <= number <= high:
        raise UsageError(f"+{option}={value}: must be between {low} and {high}")
    return number


def _apply_plus(options: QueryOptions, token: str) -> None:
    body = token[1:]
    value: str | None = None
    if "=" in body:
        body, value = body.split("=", 1)
    state = True
    if body.startswith("no") and body not in _ALL_OPTIONS:
        state, body = False, body[2:]
    if not body:
        raise UsageError(f"unknown option '{token}'")
    name = _match_option(body.lower())
    if name in _BOOL_OPTIONS:
        if value is not None:
            raise UsageError(f"{token}: +{name} takes no value")
        setattr(options, _BOOL_OPTIONS[name], state)
        if name == "short" and state:
            for display in _DISPLAY:
                setattr(options, display, False)
            options.answer = True
        if name == "trace" and state:
            # What dig's +trace turns on: iterative queries, DNSSEC records, answer and
            # authority sections with a "Received ... from" line per step.
            options.recurse = False
            options.dnssec = True
            options.comments = False
            options.question = False
            options.additional = False
            options.stats = False
    elif name == "all":
        for display in _DISPLAY:
            setattr(options, display, state)
    elif name == "edns":
        options.edns = _int_value("edns", value, 0, 255) if state and value is not None else None
        if state and value is None:
            options.edns = 0
    elif name == "cookie":
        if state:
            raise UsageError("+cookie is not supported by backhaul dig (it sends no cookies)")
    elif not state:
        raise UsageError(f"{token}: +{name} cannot be negated")
    elif name == "bufsize":
        options.bufsize = _int_value("bufsize", value, 0, 65535)
        if options.edns is None:
            options.edns = 0
    elif name == "time":
        options.timeout = float(max(1, _int_value("time", value, 0, 300)))
    elif name == "tries":
        options.tries = max(1, _int_value("tries", value, 0, 100))
    elif name == "retry":
        options.tries = _int_value("retry", value, 0, 100) + 1


def _parse_type(text: str) -> dns.rdatatype.RdataType | None:
    try:
        return dns.rdatatype.from_text(text)
    except (dns.rdatatype.UnknownRdatatype, ValueError):
        return None


def _parse_class(text: str) -> dns.rdataclass.RdataClass | None:
    try:
        return dns.rdataclass.from_text(text)
    except (dns.rdataclass.UnknownRdataclass, ValueError):
        return None


def _reverse_name(text: str) -> str:
    try:
        return dns.reversename.from_address(text).to_text()
    except (dns.exception.SyntaxError, ValueError) as exc:
        raise UsageError(f"-x needs an IPv4 or IPv6 address, not {text!r}") from exc


def parse_args(argv: Sequence[str]) -> DigRequest:
    """Parse a dig command line (see the module docstring for the rules)."""
    tokens = list(argv)
    request = DigRequest(lookups=[], argv=list(argv))
    default = Lookup()
    current = default
    open_type_class = True  # cleared by -t/-c, as in dig
    index = 0

    def take_value(flag: str, attached: str) -> str:
        nonlocal index
        if attached:
            return attached
        index += 1
        if index >= len(tokens):
            raise UsageError(f"{flag} needs a value")
        return tokens[index]

    def new_lookup(name: str) -> Lookup:
        lookup = dataclasses.replace(default, options=dataclasses.replace(default.options))
        lookup.name = name
        request.lookups.append(lookup)
        return lookup

    while index < len(tokens):
        token = tokens[index]
        if token == "@":
            raise UsageError("@ needs a server address right after it, such as @127.0.0.1")
        if token.startswith("@") and len(token) > 1:
            request.servers.append(token[1:])
        elif token.startswith("+") and len(token) > 1:
            _apply_plus(current.options, token)
        elif token.startswith("-") and len(token) > 1:
            flag, attached = token[:2], token[2:]
            if flag == "-h":
                raise HelpRequested
            if flag == "-p":
                value = take_value("-p", attached)
                if not value.isdigit() or not 0 < int(value) < 65536:
                    raise UsageError(f"-p {value}: the port must be a number from 1 to 65535")
                request.port = int(value)
            elif flag == "-t":
                value = take_value("-t", attached)
                rdtype = _parse_type(value)
                if rdtype is None:
                    raise UsageError(
                        f"unknown record type {value!r}; use a type such as A, AAAA, MX, "
                        "TXT, SRV, PTR, NS, SOA, CAA or TYPE65"
                    )
                open_type_class = False
                current.rdtype, current.rdtype_set = rdtype, True
            elif flag == "-c":
                value = take_value("-c", attached)
                rdclass = _parse_class(value)
                if rdclass is None:
                    raise UsageError(f"unknown class {value!r}; use IN, CH, HS or CLASSnnn")
                open_type_class = False
                current.rdclass, current.rdclass_set = rdclass, True
            elif flag == "-q":
                current = new_lookup(take_value("-q", attached))
            elif flag == "-x":
                current = new_lookup(_reverse_name(take_value("-x", attached)))
                current.rdtype, current.rdclass = dns.rdatatype.PTR, dns.rdataclass.IN
            elif flag in ("-4", "-6") and not attached:
                request.family = int(flag[1])
            elif flag == "-b":
                request.source = take_value("-b", attached)
                try:
                    ipaddress.ip_address(request.source.split("#", 1)[0])
                except ValueError as exc:
                    raise UsageError(f"-b {request.source}: not an IP address") from exc
            else:
                raise UsageError(
                    f"unknown flag {token!r}; dig flags are @server -p -x -t -c -q -4 -6 -b"
                )
        else:
            rdtype = _parse_type(token) if open_type_class else None
            rdclass = _parse_class(token) if open_type_class and rdtype is None else None
            if rdtype is not None:
                if current.rdtype_set:
                    request.warnings.append(";; Warning, extra type option")
                current.rdtype, current.rdtype_set = rdtype, True
            elif rdclass is not None:
                if current.rdclass_set:
                    request.warnings.append(";; Warning, extra class option")
                current.rdclass, current.rdclass_set = rdclass, True
            else:
                current = new_lookup(token)
        index += 1

    if not request.lookups:
        # dig with no name asks for the root name servers, whatever type was given.
        lookup = new_lookup(".")
        lookup.rdtype, lookup.rdclass = dns.rdatatype.NS, default.rdclass
    for lookup in request.lookups:
        lookup.qname()  # validate every name now, before any query goes out
        if lookup.rdtype in _UNSUPPORTED_TYPES:
            raise UsageError(
                f"{dns.rdatatype.to_text(lookup.rdtype)}: zone transfers are not supported "
                "by backhaul dig; use dig for AXFR/IXFR"
            )
    return request


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class Server:
    """A server to send to: an address and the label dig shows in parentheses."""

    address: str
    label: str


def _family_ok(address: str, family: int | None) -> bool:
    if family is None:
        return True
    return ipaddress.ip_address(address).version == family


def resolve_servers(request: DigRequest) -> list[Server]:
    """The ``@server`` addresses, or the nameservers of the resolv.conf."""
    servers: list[Server] = []
    if request.servers:
        for name in request.servers:
            if dns.inet.is_address(name):
                servers.append(Server(name, name))
                continue
            try:
                infos = socket.getaddrinfo(name, request.port, type=socket.SOCK_DGRAM)
            except socket.gaierror as exc:
                raise UsageError(
                    f"cannot find the address of server {name!r}: {exc.strerror}; "
                    "give an IP address after @"
                ) from exc
            except UnicodeError as exc:
                raise UsageError(
                    f"'@{name}' is not a valid server name; give an IP address after @"
                ) from exc
            for info in infos:
                address = str(info[4][0])
                if Server(address, name) not in servers:
                    servers.append(Server(address, name))
    else:
        for address in system_nameservers(request.resolv_conf):
            servers.append(Server(address, address))
    usable = [s for s in servers if _family_ok(s.address, request.family)]
    if not usable:
        raise UsageError(f"no IPv{request.family} address for the server; drop -{request.family}")
    return usable


def _unreadable(path: str) -> str:
    """Why ``path`` could not be read, in a few words."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        return "no such file"
    except IsADirectoryError:
        return "is a directory"
    except PermissionError:
        return "this user may not read it"
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    return "cannot read it"


def system_nameservers(path: str = DEFAULT_RESOLV_CONF) -> list[str]:
    """The ``nameserver`` lines of ``path`` (read by dnspython).

    Like dig, a missing system file (``/etc/resolv.conf``) or one without nameservers means
    127.0.0.1 and ::1. Any other file that cannot be read is an error: it was asked for.
    """
    try:
        resolver = dns.resolver.Resolver(filename=path, configure=True)
    except dns.resolver.NoResolverConfiguration as exc:
        if path != DEFAULT_RESOLV_CONF:
            raise UsageError(
                f"--resolv-conf {path}: {_unreadable(path)}; give a file with nameserver lines,"
                " or a server with @"
            ) from exc
        return ["127.0.0.1", "::1"]
    addresses = [str(ns) for ns in resolver.nameservers if dns.inet.is_address(str(ns))]
    return addresses or ["127.0.0.1", "::1"]


# --------------------------------------------------------------------------- the exchange


@dataclass
class Exchange:
    """One query and the reply it got (or not)."""

    query: dns.message.Message
    query_wire: bytes
    server: Server
    port: int
    transport: str = "UDP"
    response: dns.message.Message | None = None
    rtt: float = 0.0  # seconds, monotonic
    sent_at: float = 0.0  # wall clock, for WHEN and dateString
    truncated_retry: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        wire = getattr(self.response, "wire", None) if self.response is not None else None
        return len(wire) if wire is not None else 0


@dataclass
class LookupResult:
    """What one lookup produced: a single exchange, or the steps of a trace."""

    lookup: Lookup
    exchanges: list[Exchange]
    trace_hints: tuple[dns.rrset.RRset, str] | None = None  # (root NS, where from)
    error: str | None = None  # a trace that stopped part way: why

    @property
    def final(self) -> Exchange:
        return self.exchanges[-1]

    @property
    def answered(self) -> bool:
        response = self.final.response
        return (
            self.error is None
            and response is not None
            and response.rcode() == dns.rcode.NOERROR
            and any(len(rrset) for rrset in response.answer)
        )


def make_query(lookup: Lookup, options: QueryOptions | None = None) -> dns.message.Message:
    """The query dig would send for ``lookup`` (RD, AD, EDNS0 with the buffer size, DO)."""
    opts = options or lookup.options
    flags = 0
    if opts.recurse:
        flags |= dns.flags.RD
    if opts.adflag:
        flags |= dns.flags.AD
    if opts.cdflag:
        flags |= dns.flags.CD
    use_edns: int | bool = False if opts.edns is None else opts.edns
    return dns.message.make_query(
        lookup.qname(),
        lookup.rdtype,
        lookup.rdclass,
        use_edns=use_edns,
        want_dnssec=opts.dnssec and opts.edns is not None,
        payload=opts.bufsize,
        flags=flags,
    )


def _source(request: DigRequest) -> tuple[str | None, int]:
    if request.source is None:
        return None, 0
    address, _, port = request.source.partition("#")
    return address, int(port) if port.isdigit() else 0


def _send_once(
    query: dns.message.Message,
    server: Server,
    request: DigRequest,
    options: QueryOptions,
    tcp: bool,
) -> dns.message.Message:
    source, source_port = _source(request)
    if tcp:
        return dns.query.tcp(
            query,
            server.address,
            timeout=options.timeout,
            port=request.port,
            source=source,
            source_port=source_port,
        )
    # A connected socket, as dig uses: the kernel hands it the ICMP port-unreachable that a
    # closed port answers with, so the try ends at once with ECONNREFUSED instead of waiting
    # out +time. (dnspython's own socket is unconnected and never hears it.)
    family = socket.AF_INET6 if ":" in server.address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if source is not None or source_port:
            sock.bind((source or ("::" if family == socket.AF_INET6 else "0.0.0.0"), source_port))
        sock.connect((server.address, request.port))
        sock.setblocking(False)
        return dns.query.udp(
            query,
            server.address,
            timeout=options.timeout,
            port=request.port,
            ignore_unexpected=True,
            sock=sock,
        )


def exchange(
    query: dns.message.Message,
    servers: Sequence[Server],
    request: DigRequest,
    options: QueryOptions,
) -> Exchange:
    """Send ``query`` to each server in turn (``tries`` times each) until one replies."""
    wire = query.to_wire()
    failures: list[str] = []
    for server in servers:
        tcp = options.tcp
        for _attempt in range(options.tries):
            record = Exchange(
                query,
                wire,
                server,
                request.port,
                transport="TCP" if tcp else "UDP",
                sent_at=time.time(),
            )
            started = time.monotonic()
            try:
                response = _send_once(query, server, request, options, tcp)
            except dns.exception.Timeout:
                failures.append(f"{server.address}#{request.port}: timed out")
                continue
            except ConnectionRefusedError:
                failures.append(f"{server.address}#{request.port}: connection refused")
                break
            except dns.query.BadResponse as exc:
                raise RemoteProtocolError(
                    f"reply from {server.address}#{request.port} does not match the query: {exc}"
                ) from exc
            except dns.exception.DNSException as exc:
                raise RemoteProtocolError(
                    f"malformed reply from {server.address}#{request.port}: {exc}"
                ) from exc
            except OSError as exc:
                failures.append(f"{server.address}#{request.port}: {exc.strerror or exc}")
                break
            record.rtt = time.monotonic() - started
            if response.flags & dns.flags.TC and not tcp and not options.ignore_tc:
                record.notes.append(";; Truncated, retrying in TCP mode.")
                retried = exchange(query, [server], request, dataclasses.replace(options, tcp=True))
                retried.truncated_retry = True
                retried.notes[:0] = record.notes
                return retried
            record.response = response
            return record
    detail = "; ".join(dict.fromkeys(failures)) or "no server to ask"
    hint = "check the server address and port (@server, -p)"
    if any(f.endswith("timed out") for f in failures):
        hint += ", or raise +time/+tries"
    raise NoAnswer(f"no reply ({detail}); {hint}")


# --------------------------------------------------------------------------- +trace


def _glue(response: dns.message.Message, name: dns.name.Name, family: int | None) -> list[str]:
    addresses = []
    for rrset in response.additional:
        if rrset.name != name or rrset.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
            continue
        addresses += [rdata.to_text() for rdata in rrset]
    return _order(addresses, family)


def _order(addresses: list[str], family: int | None) -> list[str]:
    kept = [a for a in addresses if _family_ok(a, family)]
    return sorted(kept, key=lambda a: ipaddress.ip_address(a).version)  # IPv4 first


def _lookup_address(
    name: dns.name.Name, helpers: Sequence[Server], request: DigRequest, options: QueryOptions
) -> list[str]:
    """Addresses of a name server with no glue, asked of the starting (recursive) server."""
    found: list[str] = []
    if not helpers:
        return found
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        probe = Lookup(name.to_text(), rdtype, dns.rdataclass.IN)
        query = make_query(probe, dataclasses.replace(options, recurse=True, dnssec=False))
        try:
            reply = exchange(query, helpers, request, options).response
        except NoAnswer:
            continue
        if reply is None:
            continue
        for rrset in reply.answer:
            if rrset.rdtype == rdtype:
                found += [rdata.to_text() for rdata in rrset]
    return _order(found, request.family)


def _servers_for(
    ns_rrset: dns.rrset.RRset,
    response: dns.message.Message | None,
    helpers: Sequence[Server],
    request: DigRequest,
    options: QueryOptions,
) -> list[Server]:
    servers: list[Server] = []
    for rdata in ns_rrset:
        target = rdata.target
        label = target.to_text(omit_final_dot=True)
        addresses = _glue(response, target, request.family) if response is not None else []
        if not addresses:
            addresses = _lookup_address(target, helpers, request, options)
        servers += [Server(address, label) for address in addresses]
    return servers


def read_root_hints(path: str) -> tuple[dns.rrset.RRset, dns.message.Message]:
    """A root hints file (named.root format): the root NS set and the glue as a message."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read root hints {path}: {exc.strerror or exc}") from exc
    try:
        rrsets = dns.zonefile.read_rrsets(text, origin=dns.name.root, relativize=False)
    except dns.exception.DNSException as exc:
        raise UsageError(f"{path}: not a root hints file: {exc}") from exc
    ns = [r for r in rrsets if r.name == dns.name.root and r.rdtype == dns.rdatatype.NS]
    if not ns:
        raise UsageError(f"{path}: no NS records for the root zone '.'")
    glue = dns.message.Message()
    glue.additional = [r for r in rrsets if r.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)]
    return ns[0], glue


def _referral(
    response: dns.message.Message, qname: dns.name.Name, zone: dns.name.Name
) -> dns.rrset.RRset | None:
    """The NS set of a child zone closer to ``qname`` than ``zone``, if this is a referral."""
    for rrset in response.authority:
        if (
            rrset.rdtype == dns.rdatatype.NS
            and qname.is_subdomain(rrset.name)
            and rrset.name.is_subdomain(zone)
            and rrset.name != zone
        ):
            return rrset
    return None


def trace(lookup: Lookup, request: DigRequest) -> LookupResult:
    """Walk from the root to the answer, one non-recursive query per zone cut (dig +trace)."""
    options = lookup.options
    qname = lookup.qname()
    helpers: list[Server] = []
    exchanges: list[Exchange] = []
    if request.root_hints is not None:
        root_ns, glue = read_root_hints(request.root_hints)
        if request.servers:
            helpers = resolve_servers(request)
        hints = (root_ns, f"root hints {request.root_hints}")
        servers = _servers_for(root_ns, glue, helpers, request, options)
    else:
        helpers = resolve_servers(request)
        root_query = make_query(
            Lookup(".", dns.rdatatype.NS, dns.rdataclass.IN),
            dataclasses.replace(options, recurse=True),
        )
        first = exchange(root_query, helpers, request, options)
        exchanges.append(first)
        assert first.response is not None
        root_sets = [
            r
            for r in first.response.answer
            if r.name == dns.name.root and r.rdtype == dns.rdatatype.NS
        ]
        if not root_sets:
            raise NoAnswer(
                f"{first.server.address}#{request.port} gave no root NS records for +trace; "
                "name a recursive server with @server or give --root-hints FILE"
            )
        hints = None
        servers = _servers_for(root_sets[0], first.response, helpers, request, options)
    zone = dns.name.root
    for _hop in range(MAX_TRACE_HOPS):
        if not servers:
            problem = (
                f"+trace: no address for any name server of {zone.to_text()}; "
                "the delegation has no glue and the starting server could not resolve it"
            )
            if not exchanges:
                raise NoAnswer(problem)
            return LookupResult(lookup, exchanges, trace_hints=hints, error=problem)
        query = make_query(lookup, dataclasses.replace(options, recurse=False))
        try:
            step = exchange(query, servers, request, options)
        except NoAnswer as exc:
            if not exchanges:
                raise
            # Show the steps that worked, then say where the walk stopped (as dig does).
            names = ", ".join(dict.fromkeys(s.label for s in servers))
            problem = f"+trace stopped at {zone.to_text()} ({names}): {exc}"
            return LookupResult(lookup, exchanges, trace_hints=hints, error=problem)
        exchanges.append(step)
        response = step.response
        assert response is not None
        if response.rcode() != dns.rcode.NOERROR or response.answer:
            break
        child = _referral(response, qname, zone)
        if child is None:
            break  # NODATA, or a lame server: show what it said
        zone = child.name
        servers = _servers_for(child, response, helpers, request, options)
    else:
        raise NoAnswer(f"+trace: more than {MAX_TRACE_HOPS} referrals; the delegation loops")
    return LookupResult(lookup, exchanges, trace_hints=hints)


# --------------------------------------------------------------------------- run


def run(request: DigRequest) -> Iterator[LookupResult]:
    """Make every lookup of ``request`` in order, yielding each result as it completes."""
    servers: list[Server] | None = None
    for lookup in request.lookups:
        if lookup.options.trace:
            yield trace(lookup, request)
            continue
        if servers is None:
            servers = resolve_servers(request)
        yield LookupResult(lookup, [exchange(make_query(lookup), servers, request, lookup.options)])


# --------------------------------------------------------------------------- text output


def _indent(column: int, to: int) -> tuple[str, int]:
    """Tabs then spaces from ``column`` to ``to`` (at least one character), as BIND does."""
    to = max(to, column + 1)
    tabs = to // 8 - column // 8
    pad = ""
    if tabs > 0:
        pad = "\t" * tabs
        column = to // 8 * 8
    return pad + " " * (to - column), to


def _columns(fields: list[tuple[str, int | None]]) -> str:
    out = ""
    column = 0
    for text, to in fields:
        if to is not None:
            pad, column = _indent(column, to)
            out += pad
        out += text
        column += len(text)
    return out


def format_rr(name: dns.name.Name, ttl: int, rdata: dns.rdata.Rdata) -> str:
    """One record in dig's layout: TTL at column 24, class 32, type 40, data 48."""
    return _columns(
        [
            (name.to_text(), None),
            (str(ttl), 24),
            (dns.rdataclass.to_text(rdata.rdclass), 32),
            (dns.rdatatype.to_text(rdata.rdtype), 40),
            (rdata.to_text(), 48),
        ]
    )


def format_question(rrset: dns.rrset.RRset) -> str:
    """A question line: ``;name``, class at column 32, type at 40."""
    return _columns(
        [
            (";" + rrset.name.to_text(), None),
            (dns.rdataclass.to_text(rrset.rdclass), 32),
            (dns.rdatatype.to_text(rrset.rdtype), 40),
        ]
    )


_EDE_NAMES = {  # RFC 8914 §4, the names dig prints
    0: "Other",
    1: "Unsupported DNSKEY Algorithm",
    2: "Unsupported DS Digest Type",
    3: "Stale Answer",
    4: "Forged Answer",
    5: "DNSSEC Indeterminate",
    6: "DNSSEC Bogus",
    7: "Signature Expired",
    8: "Signature Not Yet Valid",
    9: "DNSKEY Missing",
    10: "RRSIGs Missing",
    11: "No Zone Key Bit Set",
    12: "NSEC Missing",
    13: "Cached Error",
    14: "Not Ready",
    15: "Blocked",
    16: "Censored",
    17: "Filtered",
    18: "Prohibited",
    19: "Stale NXDOMAIN Answer",
    20: "Not Authoritative",
    21: "Not Supported",
    22: "No Reachable Authority",
    23: "Network Error",
    24: "Invalid Data",
}

_FLAG_ORDER = (
    ("qr", dns.flags.QR),
    ("aa", dns.flags.AA),
    ("tc", dns.flags.TC),
    ("rd", dns.flags.RD),
    ("ra", dns.flags.RA),
    ("ad", dns.flags.AD),
    ("cd", dns.flags.CD),
)


def _option_lines(message: dns.message.Message) -> list[str]:
    lines = []
    for option in message.options:
        if isinstance(option, dns.edns.EDEOption):
            code = int(option.code)
            text = f"; EDE: {code} ({_EDE_NAMES.get(code, 'Unknown')})"
            if option.text:
                text += f": ({option.text})"
            lines.append(text)
        elif option.otype == dns.edns.OptionType.NSID:
            data = option.to_wire() or b""
            shown = data.decode("ascii", "replace") if data.isascii() else ""
            lines.append(f'; NSID: {data.hex()} ("{shown}")')
        elif option.otype == dns.edns.OptionType.COOKIE:
            lines.append(f"; COOKIE: {(option.to_wire() or b'').hex()}")
        else:
            lines.append(f"; OPT={int(option.otype)}: {(option.to_wire() or b'').hex()}")
    return lines


def _sections(response: dns.message.Message, options: QueryOptions) -> list[str]:
    lines: list[str] = []
    blocks = (
        ("QUESTION", options.question, response.question),
        ("ANSWER", options.answer, response.answer),
        ("AUTHORITY", options.authority, response.authority),
        ("ADDITIONAL", options.additional, response.additional),
    )
    for title, shown, rrsets in blocks:
        if not shown or (title != "QUESTION" and not rrsets):
            continue
        if options.comments:
            lines.append(f";; {title} SECTION:")
        for rrset in rrsets:
            if title == "QUESTION":
                lines.append(format_question(rrset))
            else:
                lines += [format_rr(rrset.name, rrset.ttl, rdata) for rdata in rrset]
        if options.comments:
            lines.append("")
    return lines


def _header(response: dns.message.Message, counts: tuple[int, int, int, int]) -> list[str]:
    flags = "".join(f" {name}" for name, bit in _FLAG_ORDER if response.flags & bit)
    qd, an, ns, ar = counts
    return [
        ";; ->>HEADER<<- opcode: "
        f"{dns_json.opcode_text(response)}, status: {dns_json.rcode_text(response)}, "
        f"id: {response.id}",
        f";; flags:{flags}; QUERY: {qd}, ANSWER: {an}, AUTHORITY: {ns}, ADDITIONAL: {ar}",
    ]


def _opt_lines(response: dns.message.Message) -> list[str]:
    if response.opt is None:
        return []
    eflags = " do" if response.ednsflags & dns.flags.DO else ""
    return [
        ";; OPT PSEUDOSECTION:",
        f"; EDNS: version: {response.edns}, flags:{eflags}; udp: {response.payload}",
        *_option_lines(response),
    ]


def _when(seconds: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S %Z %Y", time.localtime(seconds))


def banner(request: DigRequest) -> list[str]:
    """dig's opening lines (shown with +cmd)."""
    lines = ["", f"; <<>> backhaul dig {__version__} <<>> {' '.join(request.argv)}".rstrip()]
    if request.servers:
        count = len(request.servers)
        lines.append(f"; ({count} server{'s' if count != 1 else ''} found)")
    lines.append(";; global options: +cmd")
    return lines


def _trace_block(records: list[str], footer: str) -> list[str]:
    return [*records, footer, ""]


def _trace_records(response: dns.message.Message, options: QueryOptions) -> list[str]:
    lines = []
    for section, shown in (
        (response.answer, options.answer),
        (response.authority, options.authority),
        (response.additional, options.additional),
    ):
        if shown:
            for rrset in section:
                lines += [format_rr(rrset.name, rrset.ttl, rdata) for rdata in rrset]
    return lines


def render_text(result: LookupResult) -> list[str]:
    """dig's output for one lookup (without the banner), honouring the display options."""
    options = result.lookup.options
    if options.short:
        return render_short(result)
    if options.trace:
        lines: list[str] = []
        if result.trace_hints is not None:
            root_ns, source = result.trace_hints
            records = [format_rr(root_ns.name, root_ns.ttl, rdata) for rdata in root_ns]
            lines += _trace_block(records, f";; Received the root servers from {source}")
        for step in result.exchanges:
            assert step.response is not None
            lines += step.notes
            lines += _trace_block(
                _trace_records(step.response, options),
                f";; Received {step.size} bytes from {step.server.address}#{step.port}"
                f"({step.server.label}) in {int(step.rtt * 1000)} ms",
            )
        return lines
    step = result.final
    response = step.response
    assert response is not None
    lines = list(step.notes)
    if options.comments:
        lines.append(";; Got answer:")
        lines += _header(response, dns_json.section_counts(response))
        lines.append("")
        lines += _opt_lines(response)
    lines += _sections(response, options)
    if options.stats:
        lines += [
            f";; Query time: {int(step.rtt * 1000)} msec",
            f";; SERVER: {step.server.address}#{step.port}({step.server.label}) ({step.transport})",
            f";; WHEN: {_when(step.sent_at)}",
            f";; MSG SIZE  rcvd: {step.size}",
            "",
        ]
    return lines


def render_short(result: LookupResult) -> list[str]:
    """``+short``: the answer's data, one record a line."""
    response = result.final.response
    if response is None:
        return []
    return [rdata.to_text() for rrset in response.answer for rdata in rrset]


def _exchange_json(step: Exchange) -> dict[str, Any]:
    document = dns_json.pair_to_json(
        step.query,
        step.response,
        query_wire=step.query_wire,
        sent_at=step.sent_at,
        received_at=step.sent_at + step.rtt,
    )
    document.update(
        {
            "server": step.server.address,
            "serverName": step.server.label,
            "port": step.port,
            "transport": step.transport,
            "queryTimeMs": round(step.rtt * 1000, 3),
            "msgSize": step.size,
        }
    )
    return document


def render_json(result: LookupResult) -> dict[str, Any]:
    """One lookup as JSON: an RFC 8427 pair with dig's footer facts, or ``{"trace": [...]}``."""
    if result.lookup.options.trace:
        document: dict[str, Any] = {"trace": [_exchange_json(s) for s in result.exchanges]}
        if result.trace_hints is not None:
            root_ns, source = result.trace_hints
            document["rootHints"] = {
                "source": source,
                "answerRRs": [
                    dns_json.rdata_to_json(root_ns.name, root_ns.ttl, r) for r in root_ns
                ],
            }
        document["answered"] = result.answered
        document["error"] = result.error
        return document
    document = _exchange_json(result.final)
    document["answered"] = result.answered
    return document
