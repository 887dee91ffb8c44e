"""TLS at the edge: the ``ssl.SSLContext`` of each HTTPS listener and of each cluster that
speaks TLS to its upstreams, choosing a certificate by SNI, session-ticket keys shared by all
workers, certificate reload, RFC 9440 client-certificate headers, handshake-failure counts,
and the tiny protocol of a listener that redirects plain HTTP to HTTPS.

Downstream, the TLS itself runs in the edge's own driver (:mod:`backhaul.edge.tlsstream`,
compiled: the ``_ssl`` object of the context on memory BIOs over the plain TCP transport);
upstream, in uvloop's TLS transport. This module prepares contexts and hooks in where the
standard library allows:

- **Server contexts** follow Mozilla's "intermediate" profile restricted to ECDHE: TLS 1.2
  and 1.3 only, AEAD ECDHE suites for 1.2 (1.3's suites are OpenSSL's), no compression, no
  client-initiated renegotiation, ALPN ``http/1.1``.
- **SNI**: one context per certificate. With several certificates (or ``unknown_sni:
  refuse``) the listener's context gets an ``sni_callback`` that switches the connection to
  the context whose certificate names the server name (:class:`backhaul.pki.NameIndex`),
  keeps the default, or refuses the name (OpenSSL fails the handshake with the alert
  ``unrecognized_name``). A listener with one certificate has no callback (no Python call
  per handshake).
- **Session tickets**: OpenSSL makes random ticket keys per ``SSL_CTX``, so each worker
  would mint tickets the others cannot read, and the stdlib has no API to set them. The
  supervisor keeps one 80-byte key (name, HMAC and AES secrets) in anonymous shared memory
  (:class:`TicketKeys`, mapped before fork) and rotates it; each worker installs it in its
  contexts with ``SSL_CTX_set_tlsext_ticket_keys`` through ctypes on the ``SSL_CTX*`` of
  the Python context (checked before use: the pointer must answer ``SSL_CTX_get_options``
  with the context's own options, and the keys read back equal). Where that check fails
  (another OpenSSL build), each worker keeps OpenSSL's own keys and says so once: resumption
  then works only when a client returns to the same worker. One key at a time: a ticket
  minted before a rotation gets a full handshake.
- **Reload**: :meth:`ServerTls.reload` re-reads the certificate files; a set that does not
  load (missing file, key mismatch, expired) is refused and the old one kept, with one log
  line. Connections already established keep their session; new handshakes get the new
  certificates (the context the driver holds is reloaded in place, which OpenSSL
  allows: an ``SSL`` copies its certificate when it is created; the others are replaced).
- **Handshake failures** are counted by reason (:data:`HANDSHAKE_FAILURES`) by the
  driver, which sends the client OpenSSL's alert of a refused handshake; handshakes that end
  by the listener's ``handshake_timeout`` (enforced by the worker's tick, see
  :meth:`EdgeTls.tick`) or by the client closing first are counted too. The worker logs a
  summary at most once a minute per listener.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import weakref
from base64 import b64encode
from collections.abc import Callable, Iterable
from typing import Any

from backhaul.edge.routing import CLIENT_CERT_FIELD, CLIENT_SUBJECT_FIELD
from backhaul.edge.tls_supervisor import TicketKeys, shared_tickets
from backhaul.errors import BackhaulError
from backhaul.state.shared_counters import TLS_HANDSHAKE_FAILURES

__all__ = [
    "HANDSHAKE_FAILURES",
    "MOZILLA_INTERMEDIATE_ECDHE",
    "ClientTls",
    "EdgeTls",
    "HttpsRedirect",
    "ServerTls",
    "TlsSetupError",
]

MOZILLA_INTERMEDIATE_ECDHE = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
"""Mozilla's intermediate TLS 1.2 suites (v5.7) without the DHE ones: forward secrecy by
ECDHE, AEAD only."""

HANDSHAKE_FAILURES = TLS_HANDSHAKE_FAILURES
"""Reasons a downstream handshake failed, the ``reason`` label of
``backhaul_tls_handshake_failures_total``. ``certificate_rejected``: the client refused the
edge's certificate (an alert such as unknown_ca); ``plain_http``: an HTTP request arrived on
the TLS port; ``timeout``: no complete handshake within the listener's ``handshake_timeout``
(a client that sends nothing or stops half-way); ``client_closed``: the client closed before
the handshake ended (a bare TCP connect, such as a load balancer's check, counts here)."""

_REASONS = {
    "UNSUPPORTED_PROTOCOL": "protocol_version",
    "WRONG_VERSION_NUMBER": "protocol_version",
    "VERSION_TOO_LOW": "protocol_version",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol_version",
    "NO_PROTOCOLS_AVAILABLE": "protocol_version",
    "NO_SHARED_CIPHER": "no_shared_cipher",
    "NO_SHARED_GROUPS": "no_shared_cipher",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "no_shared_cipher",
    "NO_CIPHERS_AVAILABLE": "no_shared_cipher",
    "CALLBACK_FAILED": "unknown_sni",  # our sni_callback refused the name
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no_client_certificate",
    "CERTIFICATE_VERIFY_FAILED": "bad_client_certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "certificate_rejected",
    "SSLV3_ALERT_BAD_CERTIFICATE": "certificate_rejected",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "certificate_rejected",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "certificate_rejected",
    "TLSV1_ALERT_DECRYPT_ERROR": "certificate_rejected",
    "HTTP_REQUEST": "plain_http",
    "HTTPS_PROXY_REQUEST": "plain_http",
}
_REASON_INDEX = {name: i for i, name in enumerate(HANDSHAKE_FAILURES)}
_OTHER = _REASON_INDEX["other"]
_TIMEOUT = _REASON_INDEX["timeout"]
_CLIENT_CLOSED = _REASON_INDEX["client_closed"]

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_LOG_EVERY = 60.0  # seconds between handshake-failure summaries of one listener


class TlsSetupError(BackhaulError):
    """A TLS context could not be built from files that passed the config checks (they
    changed since); the message names the file and what to do."""


def _log(text: str) -> None:
    print(f"backhaul: worker {os.getpid()}: {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- ticket keys

_TICKET_KEY_BYTES = 80  # 16 name + 32 HMAC secret + 32 AES secret (OpenSSL 1.1+)
_SSL_CTRL_GET_TLSEXT_TICKET_KEYS = 58
_SSL_CTRL_SET_TLSEXT_TICKET_KEYS = 59


class _LibSsl:
    """The libssl that the ``_ssl`` module uses, reached through ctypes, and the
    ``SSL_CTX*`` inside a Python ``SSLContext``. ``usable`` is False when either cannot be
    found and checked."""

    def __init__(self) -> None:
        import ctypes  # here and below: a worker without TLS does not load ctypes (RSS)

        self.lib: Any = None
        self.why = ""
        path = self._path()
        if path is None:
            self.why = "the _ssl module's libssl was not found in this process's mappings"
            return
        try:
            lib = ctypes.CDLL(path)
            lib.SSL_CTX_get_options.restype = ctypes.c_uint64
            lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
            lib.SSL_CTX_ctrl.restype = ctypes.c_long
            lib.SSL_CTX_ctrl.argtypes = [
                ctypes.c_void_p,
                ctypes.c_int,
                ctypes.c_long,
                ctypes.c_void_p,
            ]
        except (OSError, AttributeError) as exc:
            self.why = f"cannot call {path}: {exc}"
            return
        self.lib = lib

    @staticmethod
    def _path() -> str | None:
        try:
            with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
                for line in maps:
                    if "libssl.so" in line:
                        return line.split()[-1]
        except OSError:
            return None
        return None

    def ctx_pointer(self, context: ssl.SSLContext) -> int | None:
        """The ``SSL_CTX*`` of ``context`` (CPython keeps it right after the object header
        of ``PySSLContext``), or None when it does not answer like that context."""
        import ctypes

        if self.lib is None:
            return None
        pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
        if not pointer or self.lib.SSL_CTX_get_options(pointer) != context.options:
            return None
        return int(pointer)

    def set_ticket_key(self, context: ssl.SSLContext, key: bytes) -> bool:
        import ctypes

        pointer = self.ctx_pointer(context)
        if pointer is None:
            return False
        buf = ctypes.create_string_buffer(key, _TICKET_KEY_BYTES)
        if self.lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_SET_TLSEXT_TICKET_KEYS, len(key), buf) != 1:
            return False
        back = ctypes.create_string_buffer(_TICKET_KEY_BYTES)
        got = self.lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_GET_TLSEXT_TICKET_KEYS, len(key), back)
        return got == 1 and back.raw == key


_libssl: _LibSsl | None = None


def _openssl() -> _LibSsl:
    global _libssl
    if _libssl is None:
        _libssl = _LibSsl()
    return _libssl


# --------------------------------------------------------------------------- contexts


def _read_passphrase(path: str | None) -> bytes | None:
    if path is None:
        return None
    from backhaul.pki.files import read_passphrase

    return read_passphrase(path)


def _load_chain(context: ssl.SSLContext, cert: str, key: str, passphrase_file: str | None) -> None:
    try:
        password = _read_passphrase(passphrase_file)
        context.load_cert_chain(cert, key, password=password)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TlsSetupError(f"{cert} / {key}: {exc}") from exc
    except Exception as exc:  # CertificateProblem from the passphrase file
        raise TlsSetupError(str(exc)) from exc


def server_context(config: Any, pair: tuple[str, str, str | None]) -> ssl.SSLContext:
    """A server context for one certificate of a listener's ``tls`` block."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[config.min_version]
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(MOZILLA_INTERMEDIATE_ECDHE)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.options |= ssl.OP_SINGLE_ECDH_USE
    context.set_alpn_protocols(["http/1.1"])
    if not config.session_tickets:
        context.options |= ssl.OP_NO_TICKET
        context.num_tickets = 0
    client_auth = config.client_auth
    if client_auth is not None:
        try:
            context.load_verify_locations(cafile=client_auth.ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(f"client_auth.ca {client_auth.ca}: {exc}") from exc
        context.verify_mode = (
            ssl.CERT_REQUIRED if client_auth.mode == "require" else ssl.CERT_OPTIONAL
        )
    _load_chain(context, *pair)
    return context


def _pair_names(cert_path: str) -> tuple[str, ...]:
    from backhaul.pki import certificate_names, load_certificates

    try:
        with open(cert_path, "rb") as stream:
            leaf = load_certificates(stream.read())[0]
    except Exception as exc:
        raise TlsSetupError(f"{cert_path}: {exc}") from exc
    dns, _ = certificate_names(leaf)
    return dns


class ServerTls:
    """The TLS side of one HTTPS listener: its context (the one the driver wraps each
    connection in), the per-certificate contexts SNI switches to, HSTS per route, counters,
    the handshakes under way (:meth:`stream_factory`)."""

    def __init__(
        self,
        listener: Any,
        routes: Iterable[Any] = (),
        tickets: TicketKeys | None = None,
    ) -> None:
        self.name: str = listener.name
        self.config = listener.tls
        self.tickets = tickets
        self.handshake_timeout = float(self.config.handshake_timeout)
        self.refuse_unknown = self.config.unknown_sni == "refuse"
        # Failures by reason, then completed handshakes (last slot).
        self.counts = [0] * (len(HANDSHAKE_FAILURES) + 1)
        self._logged = [0] * len(HANDSHAKE_FAILURES)
        self._log_at = 0.0
        self.forward_client_cert = self.config.client_auth is not None and bool(
            self.config.client_auth.forward
        )
        self._client_cert: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()
        self.client_auth = self.config.client_auth is not None
        self._route_fields: weakref.WeakKeyDictionary[Any, list[tuple[bytes, bytes]]] = (
            weakref.WeakKeyDictionary()
        )
        self.hsts: dict[int, bytes] = {}
        for i, route in enumerate(routes):
            if route.hsts is not None and (not route.listeners or self.name in route.listeners):
                self.hsts[i] = b"Strict-Transport-Security: " + hsts_value(route.hsts) + b"\r\n"
        self.pairs = self._pairs(listener)
        self.ticket_generation = -1
        self.ticket_keys_shared = False
        self.context, self.contexts, self.index = self._build()
        self.install_ticket_key(force=True)
        self.driver: Any = None  # the listener's tlsstream.TlsListener once it serves

    def stream_factory(self, app_factory: Callable[[], Any], loop: Any) -> Callable[[], Any]:
        """The protocol factory for the listener's plain TCP server: the TLS driver of each
        connection, handing the decrypted stream to ``app_factory()``'s protocol."""
        from backhaul.edge.tlsstream import TlsListener, TlsStreamFactory

        if self.driver is None:
            reasons = {name: _REASON_INDEX[reason] for name, reason in _REASONS.items()}
            self.driver = TlsListener(
                self.context,
                self.counts,
                self.handshake_timeout,
                loop,
                reasons,
                _OTHER,
                _TIMEOUT,
                _CLIENT_CLOSED,
            )
        return TlsStreamFactory(self.driver, app_factory)  # type: ignore[no-any-return]

    def expire_handshakes(self, now: float) -> int:
        """End the handshakes that passed the deadline at ``now`` (the loop's clock)."""
        return 0 if self.driver is None else int(self.driver.expire(now))

    def _pairs(self, listener: Any) -> list[tuple[str, str, str | None]]:
        if self.config.internal:
            from backhaul.pki.store import CaStore

            cert, key = CaStore(self.config.state_dir).leaf_paths(listener.name)
            return [(str(cert), str(key), None)]
        return [(c.cert, c.key, c.passphrase_file) for c in self.config.certificates]

    def _build(self) -> tuple[ssl.SSLContext, list[ssl.SSLContext], Any]:
        from backhaul.pki import NameIndex

        contexts = [server_context(self.config, pair) for pair in self.pairs]
        index = NameIndex(_pair_names(pair[0]) for pair in self.pairs)
        main = contexts[0]
        if len(contexts) > 1 or self.refuse_unknown:
            main.sni_callback = self._on_sni
        return main, contexts, index

    def _on_sni(self, sslobj: Any, server_name: str | None, context: ssl.SSLContext) -> int | None:
        found = self.index.select(server_name)
        if found is None:
            if server_name and self.refuse_unknown:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            found = 0
        chosen = self.contexts[found]
        if chosen is not context:
            sslobj.context = chosen
        return None

    # -- ticket keys ---------------------------------------------------------------------
    def install_ticket_key(self, force: bool = False) -> None:
        """Install the shared ticket key in every context when it changed."""
        tickets = self.tickets
        if tickets is None or not self.config.session_tickets:
            return
        generation, key = tickets.key()
        if generation == self.ticket_generation and not force:
            return
        self.ticket_generation = generation
        openssl = _openssl()
        shared = all(openssl.set_ticket_key(ctx, key) for ctx in self.contexts)
        if not shared and (force or self.ticket_keys_shared):
            why = openssl.why or "the SSL_CTX pointer check failed"
            _log(
                f"listener {self.name}: session-ticket keys are per worker ({why}); a client"
                " resumes only on the worker that issued its ticket"
            )
        self.ticket_keys_shared = shared

    # -- reload --------------------------------------------------------------------------
    def reload(self, now: Any = None) -> bool:
        """Re-read the certificate files; a set that fails (checked at ``now``, a UTC
        datetime, default the wall clock) is refused and the old one kept."""
        from backhaul.pki.files import check_pair_files

        problems: list[str] = []
        for cert, key, passphrase in self.pairs:
            problems += [
                msg for _, msg in check_pair_files(cert, key, passphrase, now or _utc_now())
            ]
        if not problems:
            try:
                fresh = [server_context(self.config, pair) for pair in self.pairs]
                from backhaul.pki import NameIndex

                index = NameIndex(_pair_names(pair[0]) for pair in self.pairs)
                # The context create_server holds stays; it takes the new default pair (and
                # the client CAs again: added to its store, so a CA removed from the file
                # stays trusted until a restart).
                _load_chain(self.context, *self.pairs[0])
                if self.config.client_auth is not None:
                    self.context.load_verify_locations(cafile=self.config.client_auth.ca)
            except (TlsSetupError, OSError, ssl.SSLError) as exc:
                problems.append(str(exc))
        if problems:
            _log(
                f"listener {self.name}: new certificates refused, the old ones still serve: "
                + "; ".join(problems)
            )
            return False
        fresh[0] = self.context
        self.contexts = fresh
        self.index = index
        self.install_ticket_key(force=True)
        _log(f"listener {self.name}: certificates reloaded ({len(fresh)})")
        return True

    # -- per request hooks ----------------------------------------------------------------
    def client_cert_lines(self, transport: Any) -> bytes:
        """``Client-Cert`` and ``Client-Cert-Chain`` header lines (RFC 9440) for the
        connection's verified client certificate, CRLF-terminated; b"" without one."""
        sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
        if sslobj is None:
            return b""
        lines = self._client_cert.get(transport)
        if lines is None:
            lines = b""
            c_object = getattr(sslobj, "_sslobj", sslobj)  # ssl.SSLObject or its C half
            chain = c_object.get_unverified_chain() if sslobj.getpeercert() else None
            if chain:
                der = [c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]
                lines = b"Client-Cert: :" + b64encode(der[0]) + b":\r\n"
                if len(der) > 1:
                    lines += (
                        b"Client-Cert-Chain: "
                        + b", ".join(b":" + b64encode(d) + b":" for d in der[1:])
                        + b"\r\n"
                    )
            self._client_cert[transport] = lines
        return lines

    def route_headers(
        self, headers: list[tuple[bytes, bytes]], transport: Any
    ) -> list[tuple[bytes, bytes]]:
        """``headers`` plus the pseudo-fields routes match the client certificate on (see
        :mod:`backhaul.edge.routing`); clients cannot send such names (llhttp refuses a
        name that starts with ':'). Unchanged on a listener without ``client_auth``."""
        if not self.client_auth:
            return headers
        sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
        if sslobj is None:
            return headers
        fields = self._route_fields.get(transport)
        if fields is None:
            fields = []
            der = sslobj.getpeercert(True)
            if der:
                from cryptography import x509

                subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
                fields = [(CLIENT_CERT_FIELD, b"1"), (CLIENT_SUBJECT_FIELD, subject.encode())]
            self._route_fields[transport] = fields
        return headers + fields if fields else headers

    def add_hsts(self, head: bytes, route: Any) -> bytes:
        """``head`` (ending in CRLF CRLF) with the route's Strict-Transport-Security."""
        if route is None:
            return head
        line = self.hsts.get(route.index)
        if line is None:
            return head
        return head[:-2] + line + b"\r\n"

    # -- counters --------------------------------------------------------------------------
    def log_failures(self, now: float) -> None:
        """At most once a minute: how many handshakes failed since the last line, by why."""
        if now < self._log_at:
            return
        counts = self.counts[: len(HANDSHAKE_FAILURES)]
        fresh = [
            (n - old, name)
            for n, old, name in zip(counts, self._logged, HANDSHAKE_FAILURES, strict=True)
            if n != old
        ]
        if not fresh:
            return
        self._logged = counts
        self._log_at = now + _LOG_EVERY
        total = sum(n for n, _ in fresh)
        parts = ", ".join(f"{name} {n}" for n, name in fresh)
        _log(f"listener {self.name}: {total} TLS handshake(s) failed ({parts})")


def hsts_value(hsts: Any) -> bytes:
    """The Strict-Transport-Security value of a route's ``hsts`` block (RFC 6797 6.1)."""
    value = b"max-age=%d" % int(hsts.max_age)
    if hsts.include_subdomains:
        value += b"; includeSubDomains"
    if hsts.preload:
        value += b"; preload"
    return value


def _utc_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


class ClientTls:
    """TLS from the edge to one cluster's endpoints."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.server_name: str | None = config.server_name
        self.verify_name: str | None = getattr(config, "verify_name", None)
        self.context = self._build()

    def _build(self) -> ssl.SSLContext:
        config = self.config
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = _VERSIONS[config.min_version]
        context.set_alpn_protocols(["http/1.1"])
        if config.verify:
            try:
                if config.ca is not None:
                    context.load_verify_locations(cafile=config.ca)
                else:
                    context.load_default_certs(ssl.Purpose.SERVER_AUTH)
            except (OSError, ssl.SSLError) as exc:
                raise TlsSetupError(f"tls.ca {config.ca}: {exc}") from exc
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if config.verify and self.verify_name is not None:
            context.check_hostname = False  # the chain is verified; the name by check_peer
        if config.cert is not None:
            _load_chain(context, config.cert, config.key, config.passphrase_file)
        return context

    def server_hostname(self, host: str) -> str | None:
        """The name sent in SNI and verified: the configured one, else the endpoint host
        (an IP address is verified against the certificate's IP entries, without SNI)."""
        return self.server_name or host

    def check_peer(self, transport: Any) -> str | None:
        """With ``verify_name``: why the upstream's (verified) certificate is not for that
        name, or None. Without it the handshake already checked the name."""
        name = self.verify_name
        if name is None:
            return None
        from backhaul.pki import NameIndex, certificate_names

        sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
        der = sslobj.getpeercert(True) if sslobj is not None else None
        if not der:
            return "upstream TLS: no certificate to verify"
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        dns, ips = certificate_names(cert)
        if name in ips or NameIndex([dns]).select(name) is not None:
            return None
        return (
            f"upstream TLS certificate not trusted: it is for {', '.join((*dns, *ips))},"
            f" not {name!r} (tls.verify_name)"
        )

    def reload(self, now: Any = None) -> bool:
        try:
            self.context = self._build()
        except TlsSetupError as exc:
            _log(f"upstream TLS: new client certificate refused, the old one kept: {exc}")
            return False
        return True


def describe_connect_error(exc: BaseException) -> str:
    """An upstream TLS failure in words (for the 502 detail)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"upstream TLS certificate not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"upstream TLS handshake failed: {exc.reason or exc}"
    return str(exc)


# --------------------------------------------------------------------------- the worker's view


class EdgeTls:
    """Every TLS context of one worker, by listener and by cluster."""

    def __init__(
        self,
        config: Any,
        tickets: TicketKeys | None = None,
        clock: Callable[[], Any] | None = None,
    ) -> None:
        """``clock``: the UTC wall clock certificates are checked against on reload (tests
        give their own)."""
        self.tickets = tickets if tickets is not None else shared_tickets()
        self.clock = clock or _utc_now
        self.listeners: dict[str, ServerTls] = {}
        self.clusters: dict[str, ClientTls] = {}
        self.cert_generation = self.tickets.cert_generation if self.tickets is not None else 0
        routes = tuple(getattr(config, "routes", ()) or ())
        for listener in config.listeners:
            if getattr(listener, "tls", None) is not None:
                self.listeners[listener.name] = ServerTls(listener, routes, self.tickets)
        for name, cluster in (getattr(config, "clusters", None) or {}).items():
            if getattr(cluster, "tls", None) is not None:
                self.clusters[name] = ClientTls(cluster.tls)

    @classmethod
    def empty(cls) -> EdgeTls:
        """No TLS at all (a worker before start)."""
        return cls(_NoConfig(), None)

    def server(self, name: str) -> ServerTls | None:
        return self.listeners.get(name)

    def protocol_factory(self, listener: Any, loop: Any) -> Callable[[], Any] | None:
        """The protocol of a listener that is not the HTTP driver: ``redirect_https``."""
        if getattr(listener, "redirect_https", None) is not None:
            return HttpsRedirect.factory(listener, loop)
        return None

    def reload(self) -> None:
        now = self.clock()
        for server in self.listeners.values():
            server.reload(now)
        for client in self.clusters.values():
            client.reload(now)

    def tick(self, now: float, metrics: Any = None) -> None:
        """Install a rotated ticket key, reload certificates when asked, end handshakes past
        their deadline, log failures, copy the handshake counters into ``metrics`` (a
        WorkerMetrics). ``now``: the loop's clock."""
        tickets = self.tickets
        if tickets is not None:
            if tickets.cert_generation != self.cert_generation:
                self.cert_generation = tickets.cert_generation
                self.reload()
            for server in self.listeners.values():
                server.install_ticket_key()
        for server in self.listeners.values():
            server.expire_handshakes(now)
            server.log_failures(now)
        if metrics is not None:
            names = metrics.layout.tls_listeners
            for i, name in enumerate(names):
                listener = self.listeners.get(name)
                if listener is not None:
                    metrics.sync_tls(i, listener.counts)


class _NoConfig:
    listeners: tuple[Any, ...] = ()
    routes: tuple[Any, ...] = ()
    clusters: dict[str, Any] = {}


# --------------------------------------------------------------------------- http → https


class HttpsRedirect(asyncio.Protocol):
    """A plain-HTTP listener's whole job: answer each request with a redirect to the same
    host and target over HTTPS, then close. Bounded: one request head of at most 16 KiB,
    within the listener's request-head timeout."""

    __slots__ = (
        "host",
        "parse_error",
        "parser",
        "port",
        "status",
        "timer",
        "transport",
        "url",
        "size",
    )

    _LIMIT = 16 * 1024

    def __init__(self, port: int, status: int, timeout: float, loop: Any) -> None:
        self.port = port
        self.status = status
        import httptools  # here: a worker without such a listener does not load it (RSS)

        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.parse_error: type[Exception] = httptools.HttpParserError
        self.url = b""
        self.host = b""
        self.size = 0
        self.timer = loop.call_later(timeout, self._timeout)

    @classmethod
    def factory(cls, listener: Any, loop: Any) -> Callable[[], HttpsRedirect]:
        redirect = listener.redirect_https
        timeout = float(listener.timeouts.request_headers)
        return lambda: cls(int(redirect.port), int(redirect.status), timeout, loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._LIMIT:
            self._answer(431, b"")
            return
        try:
            self.parser.feed_data(data)
        except self.parse_error:
            if self.transport is not None and not self.transport.is_closing():
                self._answer(400, b"")

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"host":
            self.host = value.strip()

    def on_headers_complete(self) -> None:
        host = self.host.rsplit(b":", 1)[0] if not self.host.endswith(b"]") else self.host
        if not host or any(c in host for c in b" /\\@?#") or not self.url.startswith(b"/"):
            self._answer(400, b"")
            return
        port = b"" if self.port == 443 else b":%d" % self.port
        self._answer(self.status, b"https://" + host + port + self.url)

    def _answer(self, status: int, location: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        reasons = {301: b"Moved Permanently", 302: b"Found", 307: b"Temporary Redirect"}
        reasons |= {308: b"Permanent Redirect", 400: b"Bad Request"}
        reason = reasons.get(status, b"Request Header Fields Too Large")
        head = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if location:
            head += b"Location: " + location + b"\r\n"
        transport.write(head + b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        transport.close()

    def _timeout(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()
        self.transport = None
