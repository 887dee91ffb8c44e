"""``backhaul curl``'s driver: one HTTP exchange (and its redirects), timed phase by phase.

httpcore does the HTTP/1.1 and HTTP/2 (h2) work; its ``trace`` extension reports when each
step starts and ends. Name resolution happens here, in the network backend handed to
httpcore, so that it is timed on its own and follows curl's ``--resolve``,
``--connect-to`` and ``--dns-servers`` (dnspython, asking only the servers named). Names
under ``.invalid`` never resolve (RFC 6761 section 6.4) and are never asked about.

The phases are cumulative marks as curl's ``-w`` variables define them (seconds from the
start of a transfer): ``time_namelookup``, ``time_connect``, ``time_appconnect``,
``time_pretransfer``, ``time_starttransfer``, ``time_total``; the segments between
consecutive marks (DNS, TCP, TLS, request sent, waiting for the first byte, content
transfer) add up to the total exactly. A reused connection has zero-length DNS, TCP and TLS.

Failures raise :class:`CurlFailure` with curl's exit code: 1 unsupported protocol,
3 bad URL, 6 could not resolve, 7 could not connect, 22 HTTP error with ``--fail``,
23 write error, 28 timeout, 35 TLS handshake failed, 47 too many redirects,
52 empty reply, 55 send error, 56 receive error, 60 peer certificate not verified.
"""

from __future__ import annotations

import base64
import datetime
import errno
import importlib
import io
import ipaddress
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit

import httpcore

from backhaul import __version__
from backhaul.errors import BackhaulError

__all__ = [
    "BoundedBuffer",
    "CurlFailure",
    "Exchange",
    "Phases",
    "RequestSpec",
    "Session",
    "TlsInfo",
    "Transfer",
    "fetch",
]

USER_AGENT = f"backhaul-curl/{__version__}"
REDIRECTS = (301, 302, 303, 307, 308)


class CurlFailure(BackhaulError):
    """A transfer failed; ``exit_code`` is curl's number for the failure."""

    def __init__(self, code: int, message: str, exchanges: list[Exchange] | None = None) -> None:
        self.exit_code = code
        self.message = message
        self.exchanges = exchanges or []
        super().__init__(f"({code}) {message}")


@dataclass
class RequestSpec:
    """What to send and how to connect (curl's options, parsed)."""

    url: str
    method: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    remove_headers: set[str] = field(default_factory=set)
    body: bytes | None = None
    user: str | None = None  # "name:password" for Basic
    follow: bool = False
    max_redirects: int = 50
    insecure: bool = False
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    resolve: dict[tuple[str, int], str] = field(default_factory=dict)  # (host, port) -> addr
    connect_to: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    dns_servers: list[tuple[str, int]] = field(default_factory=list)
    head: bool = False
    http: str = "2"  # "1.1"; "2": h2 by ALPN on https (curl's default); "2-prior": h2c
    max_time: float | None = None
    connect_timeout: float | None = None
    fail: bool = False


@dataclass
class Phases:
    """curl's cumulative timing marks for one exchange, in seconds from its start."""

    namelookup: float = 0.0
    connect: float = 0.0
    appconnect: float = 0.0
    pretransfer: float = 0.0
    request_sent: float = 0.0
    starttransfer: float = 0.0
    total: float = 0.0

    def segments(self) -> dict[str, float]:
        """DNS, TCP, TLS, send, wait, transfer: consecutive and summing to ``total``."""
        tls_end = self.appconnect or self.connect
        return {
            "dns": self.namelookup,
            "tcp": self.connect - self.namelookup,
            "tls": (self.appconnect - self.connect) if self.appconnect else 0.0,
            "send": self.request_sent - tls_end,
            "wait": self.starttransfer - self.request_sent,
            "transfer": self.total - self.starttransfer,
        }


@dataclass
class TlsInfo:
    version: str
    cipher: str
    alpn: str | None
    subject: str
    issuer: str
    not_before: str
    not_after: str
    sans: list[str]
    verified: bool


@dataclass
class Exchange:
    """One request and its answer (one hop of a redirect chain)."""

    url: str
    method: str
    request_headers: list[tuple[str, str]]
    http_version: str = ""
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    phases: Phases = field(default_factory=Phases)
    remote_ip: str = ""
    remote_port: int = 0
    local_ip: str = ""
    local_port: int = 0
    reused: bool = False
    tls: TlsInfo | None = None
    size_download: int = 0
    size_header: int = 0
    size_upload: int = 0

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)


@dataclass
class Transfer:
    """The whole run: every hop, and the body of the last one."""

    exchanges: list[Exchange]
    time_redirect: float = 0.0

    @property
    def last(self) -> Exchange:
        return self.exchanges[-1]

    @property
    def time_total(self) -> float:
        return self.time_redirect + self.last.phases.total


class _Resolver:
    """Names to addresses: --resolve, .invalid, --dns-servers (dnspython) or the system's."""

    def __init__(self, spec: RequestSpec) -> None:
        self.spec = spec
        if spec.dns_servers:
            import dns.resolver  # noqa: F401 - imported now so the DNS phase times the lookup

    def resolve(self, host: str, port: int, deadline: float | None) -> list[str]:
        try:
            ipaddress.ip_address(host)
            return [host]
        except ValueError:
            pass
        pinned = self.spec.resolve.get((host.lower(), port)) or self.spec.resolve.get(
            (host.lower(), 0)
        )
        if pinned is not None:
            return [pinned]
        name = host.rstrip(".").lower()
        if name == "invalid" or name.endswith(".invalid"):
            raise CurlFailure(6, f"Could not resolve host: {host}")
        if self.spec.dns_servers:
            return self._ask(host, deadline)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise CurlFailure(6, f"Could not resolve host: {host}") from exc
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    def _ask(self, host: str, deadline: float | None) -> list[str]:
        import dns.exception
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [address for address, _ in self.spec.dns_servers]
        resolver.nameserver_ports = dict(self.spec.dns_servers)
        lifetime = 5.0 if deadline is None else max(0.01, deadline - time.monotonic())
        addresses: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = resolver.resolve(host, rdtype, lifetime=lifetime, search=False)
            except dns.resolver.NXDOMAIN:
                break
            except (dns.resolver.NoAnswer, dns.resolver.NoNameservers):
                continue
            except dns.exception.Timeout as exc:
                raise CurlFailure(28, f"Resolving timed out for host: {host}") from exc
            addresses += [rr.to_text() for rr in answer]
        if not addresses:
            raise CurlFailure(6, f"Could not resolve host: {host}")
        return addresses


class _Backend(httpcore.NetworkBackend):
    """httpcore's sync backend, with our name resolution timed as its own phase."""

    def __init__(self, spec: RequestSpec) -> None:
        self.inner = httpcore.SyncBackend()
        self.resolver = _Resolver(spec)
        self.spec = spec
        self.marks: dict[str, float] = {}
        self.deadline: float | None = None
        self.on_info: Callable[[str], None] | None = None
        self.peer: tuple[str, int] = ("", 0)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        target = self.spec.connect_to.get((host.lower(), port)) or self.spec.connect_to.get(
            (host.lower(), 0)
        )
        if target is not None:
            host, port = target[0] or host, target[1] or port
        addresses = self.resolver.resolve(host, port, self.deadline)
        self.marks["dns"] = time.monotonic()
        error: Exception | None = None
        for address in addresses:
            if self.on_info:
                self.on_info(f"Trying {_join(address, port)}...")
            try:
                stream = self.inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            self.peer = (address, port)
            return stream
        assert error is not None
        raise error

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise NotImplementedError("no unix sockets here")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def _join(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def tls_context(spec: RequestSpec) -> ssl.SSLContext:
    """The client context: verification (or -k), --cacert, --cert/--key, ALPN."""
    try:
        ctx = ssl.create_default_context(cafile=spec.cacert)
        if spec.cert:
            ctx.load_cert_chain(spec.cert, spec.key)
    except (OSError, ssl.SSLError) as exc:
        raise CurlFailure(58, f"Problem with the local certificate or CA file: {exc}") from exc
    if spec.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _tls_info(ssl_object: ssl.SSLObject | ssl.SSLSocket, verified: bool) -> TlsInfo:
    from cryptography import x509

    der = ssl_object.getpeercert(True)
    subject = issuer = not_before = not_after = ""
    sans: list[str] = []
    if der:
        cert = x509.load_der_x509_certificate(der)
        subject = cert.subject.rfc4514_string()
        issuer = cert.issuer.rfc4514_string()
        not_before = cert.not_valid_before_utc.strftime("%b %d %H:%M:%S %Y GMT")
        not_after = cert.not_valid_after_utc.strftime("%b %d %H:%M:%S %Y GMT")
        try:
            ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            sans = [str(name.value) for name in ext.value]
        except x509.ExtensionNotFound:
            pass
    cipher = ssl_object.cipher()
    return TlsInfo(
        version=ssl_object.version() or "",
        cipher=cipher[0] if cipher else "",
        alpn=ssl_object.selected_alpn_protocol(),
        subject=subject,
        issuer=issuer,
        not_before=not_before,
        not_after=not_after,
        sans=sans,
        verified=verified,
    )


def _map_error(exc: Exception, url: str, host: str, port: int) -> CurlFailure:
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, httpcore.ConnectTimeout):
        return CurlFailure(28, f"Connection timed out to {host} port {port}")
    if isinstance(exc, httpcore.TimeoutException):
        return CurlFailure(28, f"Operation timed out ({type(exc).__name__}) on {url}")
    if isinstance(cause, ssl.SSLCertVerificationError):
        return CurlFailure(
            60,
            f"SSL certificate problem: {str(cause.verify_message).rstrip('.')}; "
            "give the CA with --cacert, or -k to skip verification",
        )
    if isinstance(cause, ssl.SSLError):
        return CurlFailure(35, f"TLS connect error with {host} port {port}: {cause.reason}")
    if isinstance(exc, httpcore.ConnectError):
        reason = getattr(cause, "strerror", None) or str(exc) or "failed"
        return CurlFailure(7, f"Failed to connect to {host} port {port}: {reason}")
    if isinstance(exc, httpcore.RemoteProtocolError):
        if "without sending" in str(exc):
            return CurlFailure(52, "Empty reply from server")
        return CurlFailure(56, f"Failure when receiving data from the peer: {exc}")
    if isinstance(exc, httpcore.ReadError):
        return CurlFailure(56, f"Failure when receiving data from the peer: {exc}")
    if isinstance(exc, httpcore.WriteError):
        return CurlFailure(55, f"Failed sending data to the peer: {exc}")
    if isinstance(exc, httpcore.UnsupportedProtocol):
        return CurlFailure(1, f"Protocol not supported in {url}")
    return CurlFailure(56, f"{type(exc).__name__}: {exc}")


class BoundedBuffer(io.BytesIO):
    """A body kept in memory, up to ``limit`` bytes; past that a write fails (curl's 23)."""

    def __init__(self, limit: int = 64 << 20) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self.limit:
            raise OSError(errno.EFBIG, f"the body is larger than {self.limit:,} bytes")
        return super().write(data)


def _split(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, authority) of an absolute http(s) URL, or CurlFailure 1/3."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        if parts.scheme:
            raise CurlFailure(1, f'Protocol "{parts.scheme}" not supported')
        raise CurlFailure(3, f"URL rejected: {url!r} has no http:// or https://")
    if not parts.hostname:
        raise CurlFailure(3, f"URL rejected: no host name in {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise CurlFailure(3, f"URL rejected: bad port number in {url!r}") from exc
    return parts.scheme, parts.hostname, port, parts.netloc.rpartition("@")[2]


def _request_headers(spec: RequestSpec, authority: str, host: str) -> list[tuple[str, str]]:
    given = {name.lower() for name, _ in spec.headers}
    headers: list[tuple[str, str]] = []
    defaults = [("Host", authority), ("User-Agent", USER_AGENT), ("Accept", "*/*")]
    for name, value in defaults:
        if name.lower() not in given and name.lower() not in spec.remove_headers:
            headers.append((name, value))
    original = urlsplit(spec.url).hostname
    if spec.user is not None and "authorization" not in given and host == original:
        token = base64.b64encode(spec.user.encode()).decode()
        headers.append(("Authorization", f"Basic {token}"))
    if spec.body is not None and "content-type" not in given:
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
    headers += spec.headers
    return headers


class Session:
    """Connection pools kept across :func:`fetch` calls (``api run`` reuses connections
    from one request to the next, as Hurl does), one per set of connection settings."""

    def __init__(self) -> None:
        self._pools: dict[tuple[Any, ...], tuple[httpcore.ConnectionPool, _Backend]] = {}

    def pool_for(self, spec: RequestSpec) -> tuple[httpcore.ConnectionPool, _Backend]:
        key = (
            spec.insecure,
            spec.cacert,
            spec.cert,
            spec.key,
            spec.http,
            tuple(sorted(spec.resolve.items())),
            tuple(sorted(spec.connect_to.items())),
            tuple(spec.dns_servers),
        )
        if key not in self._pools:
            backend = _Backend(spec)
            ctx = tls_context(spec)
            # like curl: offer h2 by ALPN on https unless --http1.1; plain http stays
            # HTTP/1.1 unless --http2-prior-knowledge (h2c without an upgrade)
            http1 = spec.http != "2-prior"
            http2 = spec.http != "1.1"
            if http2:
                # httpcore imports its HTTP/2 side (and h2) on first use: do it now, so the
                # phases time the exchange and not an import
                importlib.import_module("httpcore._sync.http2")
            ctx.set_alpn_protocols((["h2"] if http2 else []) + (["http/1.1"] if http1 else []))
            pool = httpcore.ConnectionPool(
                ssl_context=ctx,
                http1=http1,
                http2=http2,
                network_backend=backend,
                retries=0,
                max_connections=4,
            )
            self._pools[key] = (pool, backend)
        return self._pools[key]

    def close(self) -> None:
        for pool, _ in self._pools.values():
            pool.close()
        self._pools.clear()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fetch(
    spec: RequestSpec,
    out: BinaryIO | None,
    on_info: Callable[[str], None] | None = None,
    on_request_head: Callable[[Exchange], None] | None = None,
    on_response_head: Callable[[Exchange], None] | None = None,
    session: Session | None = None,
) -> Transfer:
    """Make the request (following redirects with ``spec.follow``); the last hop's body is
    written to ``out``. Raises :class:`CurlFailure` for every failure curl has a code for.
    Connections are kept in ``session`` when one is given, else closed at the end."""
    if session is None:
        with Session() as own:
            return fetch(spec, out, on_info, on_request_head, on_response_head, own)
    pool, backend = session.pool_for(spec)
    backend.on_info = on_info
    start = time.monotonic()
    deadline = start + spec.max_time if spec.max_time else None
    backend.deadline = deadline
    exchanges: list[Exchange] = []
    url = spec.url
    method = spec.method or ("HEAD" if spec.head else ("POST" if spec.body is not None else "GET"))
    body = spec.body
    time_redirect = 0.0
    while True:
        is_last_allowed = not spec.follow
        exchange = _one(
            pool,
            backend,
            spec,
            url,
            method,
            body,
            deadline,
            out,
            on_info,
            on_request_head,
            on_response_head,
            exchanges,
            follow=spec.follow,
        )
        exchanges.append(exchange)
        location = exchange.header("location")
        if is_last_allowed or exchange.status not in REDIRECTS or location is None:
            break
        if len(exchanges) > spec.max_redirects:
            raise CurlFailure(47, f"Maximum ({spec.max_redirects}) redirects followed", exchanges)
        time_redirect += exchange.phases.total
        url = urljoin(url, location)
        if on_info:
            on_info(f"Issue another request to this URL: '{url}'")
        if exchange.status == 303 or (exchange.status in (301, 302) and method == "POST"):
            method, body = ("GET" if method != "HEAD" else "HEAD"), None
    return Transfer(exchanges, time_redirect)


def _one(
    pool: httpcore.ConnectionPool,
    backend: _Backend,
    spec: RequestSpec,
    url: str,
    method: str,
    body: bytes | None,
    deadline: float | None,
    out: BinaryIO | None,
    on_info: Callable[[str], None] | None,
    on_request_head: Callable[[Exchange], None] | None,
    on_response_head: Callable[[Exchange], None] | None,
    done: list[Exchange],
    follow: bool,
) -> Exchange:
    scheme, host, port, authority = _split(url)
    headers = _request_headers(spec, authority, host)
    exchange = Exchange(url=url, method=method, request_headers=headers)
    exchange.size_upload = len(body or b"")
    marks: dict[str, float] = {}
    backend.marks = marks
    if scheme == "https":
        # the certificate is read while the clock runs: load cryptography's x509 first
        import cryptography.x509  # noqa: F401
    t0 = time.monotonic()

    def trace(name: str, info: dict[str, Any]) -> None:
        now = time.monotonic()
        if name == "connection.connect_tcp.complete":
            marks["connect"] = now
            exchange.remote_ip, exchange.remote_port = backend.peer
            stream = info.get("return_value")
            if stream is not None:
                local = stream.get_extra_info("client_addr")
                if local:
                    exchange.local_ip, exchange.local_port = local[0], local[1]
            if on_info:
                shown = f"{host} ({backend.peer[0]}) port {port}"
                on_info(f"Connected to {shown}")
        elif name == "connection.start_tls.complete":
            marks["tls"] = now
            stream = info.get("return_value")
            ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
            if ssl_object is not None:
                exchange.tls = _tls_info(ssl_object, not spec.insecure)
                if on_info:
                    _say_tls(exchange.tls, on_info)
        elif name.endswith("send_request_headers.started"):
            marks.setdefault("pretransfer", now)
            exchange.http_version = "HTTP/2" if name.startswith("http2.") else "HTTP/1.1"
            if on_request_head:
                on_request_head(exchange)
        elif name.endswith("send_request_body.complete"):
            marks["sent"] = now
        elif name.endswith("receive_response_headers.complete"):
            marks["first_byte"] = now

    def remaining(default: float | None) -> float | None:
        if deadline is None:
            return default
        left = max(0.001, deadline - time.monotonic())
        return left if default is None else min(left, default)

    timeouts = {
        "connect": remaining(spec.connect_timeout or 300.0),
        "read": remaining(None),
        "write": remaining(None),
        "pool": remaining(None),
    }
    extensions: dict[str, Any] = {"trace": trace, "timeout": timeouts}
    if scheme == "https":
        extensions["sni_hostname"] = host
    try:
        with pool.stream(
            method, url, headers=headers, content=body, extensions=extensions
        ) as response:
            exchange.status = response.status
            raw_version = response.extensions.get("http_version", b"HTTP/1.1")
            exchange.http_version = raw_version.decode("ascii", "replace")
            exchange.reason = response.extensions.get("reason_phrase", b"").decode(
                "latin-1", "replace"
            )
            exchange.headers = [
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers
            ]
            exchange.size_header = sum(len(k) + len(v) + 4 for k, v in response.headers) + len(
                f"{exchange.http_version} {exchange.status} {exchange.reason}\r\n\r\n"
            )
            stream = response.extensions.get("network_stream")
            if "connect" not in marks:
                exchange.reused = True
                exchange.remote_ip, exchange.remote_port = backend.peer
                if stream is not None:
                    ssl_object = stream.get_extra_info("ssl_object")
                    if ssl_object is not None:
                        exchange.tls = _tls_info(ssl_object, not spec.insecure)
            if on_response_head:
                on_response_head(exchange)
            if spec.fail and exchange.status >= 400:  # curl -f: no body, exit 22
                raise CurlFailure(22, f"The requested URL returned error: {exchange.status}", done)
            will_follow = follow and exchange.status in REDIRECTS and exchange.header("location")
            for chunk in response.iter_stream():
                exchange.size_download += len(chunk)
                if out is not None and not will_follow:
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        raise CurlFailure(23, f"Failure writing output: {exc.strerror}") from exc
                if deadline is not None and time.monotonic() > deadline:
                    raise CurlFailure(
                        28,
                        f"Operation timed out after {int((time.monotonic() - t0) * 1000)} "
                        f"milliseconds with {exchange.size_download} bytes received",
                        done,
                    )
    except CurlFailure as failure:
        exchange.phases = _phases(t0, marks, time.monotonic())
        failure.exchanges = [*done, exchange]
        raise
    except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
        exchange.phases = _phases(t0, marks, time.monotonic())
        mapped = _map_error(exc, url, host, port)
        mapped.exchanges = [*done, exchange]
        raise mapped from exc
    except httpcore.UnsupportedProtocol as exc:
        raise _map_error(exc, url, host, port) from exc
    end = time.monotonic()
    if out is not None:
        try:
            out.flush()
        except OSError as exc:
            raise CurlFailure(23, f"Failure writing output: {exc.strerror}") from exc
    exchange.phases = _phases(t0, marks, end)
    return exchange


def _phases(t0: float, marks: dict[str, float], end: float) -> Phases:
    """Cumulative marks; a step that did not happen (reuse, no TLS) takes no time."""

    def at(name: str, fallback: float) -> float:
        return max(fallback, marks[name] - t0) if name in marks else fallback

    namelookup = at("dns", 0.0)
    connect = at("connect", namelookup)
    appconnect = at("tls", 0.0)
    after_connect = max(connect, appconnect)
    pretransfer = at("pretransfer", after_connect)
    sent = at("sent", pretransfer)
    starttransfer = at("first_byte", sent)
    total = max(end - t0, starttransfer)
    return Phases(namelookup, connect, appconnect, pretransfer, sent, starttransfer, total)


def _say_tls(tls: TlsInfo, say: Callable[[str], None]) -> None:
    say(f"SSL connection using {tls.version} / {tls.cipher}")
    say(f"ALPN: server accepted {tls.alpn}" if tls.alpn else "ALPN: server did not agree")
    say("Server certificate:")
    say(f" subject: {tls.subject}")
    say(f" start date: {tls.not_before}")
    say(f" expire date: {tls.not_after}")
    if tls.sans:
        say(f" subjectAltName: {', '.join(tls.sans)}")
    say(f" issuer: {tls.issuer}")
    say(" SSL certificate verify ok." if tls.verified else " SSL certificate verify skipped (-k)")


def expires_in_days(tls: TlsInfo, now: datetime.datetime) -> float | None:
    """Days until the peer certificate expires (negative once it has)."""
    if not tls.not_after:
        return None
    when = datetime.datetime.strptime(tls.not_after, "%b %d %H:%M:%S %Y GMT").replace(
        tzinfo=datetime.UTC
    )
    return (when - now).total_seconds() / 86400


def read_data_arg(value: str, binary: bool) -> bytes:
    """curl's ``-d``: ``@file`` (``@-`` stdin) or the text; ``-d`` drops CR and LF from files."""
    if not value.startswith("@"):
        return value.encode()
    path = value[1:]
    try:
        if path == "-":
            import sys

            data = sys.stdin.buffer.read()
        else:
            with open(os.path.expanduser(path), "rb") as handle:
                data = handle.read()
    except OSError as exc:
        raise CurlFailure(
            26, f"Failed to open/read local data from file/application: {path}: {exc.strerror}"
        ) from exc
    if not binary:
        data = data.replace(b"\r", b"").replace(b"\n", b"")
    return data
