"""The TLS work done once per machine, in the supervisor: the session-ticket key every
worker shares (and its rotation), the reload generation that tells workers to re-read
certificate files, and the certificates of listeners with ``tls: {internal: true}``, issued
by the built-in CA before the workers start and renewed before they expire.

This module imports no ``ssl`` and no ``cryptography`` until a listener needs the CA: the
supervisor stays lean (workers install the shared key in their contexts, see
:mod:`backhaul.edge.tls`). Renewal takes ``now`` (a UTC datetime), so tests drive it with a
clock of their own.
"""

from __future__ import annotations

import ipaddress
import mmap
import os
import struct
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

__all__ = [
    "InternalCertificates",
    "TicketKeys",
    "TlsSupervision",
    "internal_names",
    "shared_tickets",
]

_TICKET_KEY_BYTES = 80  # 16 name + 32 HMAC secret + 32 AES secret (OpenSSL 1.1+)
_RENEW_CHECK = 60.0  # seconds between renewal checks


class TicketKeys:
    """One session-ticket key shared by every worker: anonymous shared memory, created
    before fork (the supervisor), written by :meth:`rotate`, read by each worker's tick.

    Layout: generation (int64), then the key. The generation is written last, so a reader
    that sees it changed reads a whole key (one writer; a torn read is caught by re-reading
    the generation)."""

    _FORMAT = struct.Struct("<q")

    def __init__(self, rotation: float = 12 * 3600.0, now: float | None = None) -> None:
        self._map = mmap.mmap(-1, 4096)  # MAP_SHARED | MAP_ANONYMOUS: shared across fork
        self.rotation = rotation
        self.cert_generation_at = 8 + _TICKET_KEY_BYTES
        self.rotated_at = 0.0
        self.rotate(time.monotonic() if now is None else now)

    @property
    def generation(self) -> int:
        return int(self._FORMAT.unpack_from(self._map, 0)[0])

    def key(self) -> tuple[int, bytes]:
        """``(generation, key)`` as of now."""
        while True:
            generation = self.generation
            key = bytes(self._map[8 : 8 + _TICKET_KEY_BYTES])
            if self.generation == generation:
                return generation, key

    def rotate(self, now: float) -> None:
        """A new random key (workers install it on their next tick)."""
        self._map[8 : 8 + _TICKET_KEY_BYTES] = os.urandom(_TICKET_KEY_BYTES)
        self._FORMAT.pack_into(self._map, 0, self.generation + 1)
        self.rotated_at = now

    def rotate_due(self, now: float) -> bool:
        """Rotate when the key is older than ``rotation``; True when it did."""
        if now - self.rotated_at < self.rotation:
            return False
        self.rotate(now)
        return True

    @property
    def cert_generation(self) -> int:
        """Bumped by :meth:`request_reload`: workers then re-read certificate files."""
        return int(self._FORMAT.unpack_from(self._map, self.cert_generation_at)[0])

    def request_reload(self) -> None:
        self._FORMAT.pack_into(self._map, self.cert_generation_at, self.cert_generation + 1)


_shared: TicketKeys | None = None


def shared_tickets() -> TicketKeys | None:
    """The ticket keys the supervisor mapped before forking this worker, if any."""
    return _shared


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def internal_names(listener: Any, routes: Any) -> tuple[str, ...]:
    """The names an internal certificate of ``listener`` certifies: ``tls.names`` when
    given, else every host the routes on this listener match, ``localhost``, and the
    listener's address (loopback addresses for a wildcard one). Works on the validated
    model and on the thawed config alike."""
    tls = listener.tls
    if tls.names:
        return tuple(tls.names)
    names: list[str] = []
    for route in routes:
        only = route.listeners
        if only and listener.name not in only:
            continue
        hosts = route.match.host
        if hosts is None:
            continue
        for host in [hosts] if isinstance(hosts, str) else hosts:
            if not host.startswith("["):
                names.append(host)
    names.append("localhost")
    host = listener.address.host
    if host in ("", "0.0.0.0"):
        names.append("127.0.0.1")
    elif host == "::":
        names += ["127.0.0.1", "::1"]
    elif _is_ip(host):
        names.append(host)
    else:
        names.append(host.lower())
    return tuple(dict.fromkeys(names))


class InternalCertificates:
    """The leaves of the listeners with ``tls: {internal: true}``."""

    def __init__(self, config: Any) -> None:
        routes = tuple(getattr(config, "routes", ()) or ())
        self.wanted: list[tuple[str, tuple[str, ...], str, float]] = []
        for listener in config.listeners:
            tls = getattr(listener, "tls", None)
            if tls is not None and tls.internal:
                names = internal_names(listener, routes)
                self.wanted.append((listener.name, names, tls.state_dir, float(tls.lifetime)))

    def __bool__(self) -> bool:
        return bool(self.wanted)

    def ensure(self, now: datetime) -> list[str]:
        """Issue a leaf for each internal listener that has none, whose names changed, or
        whose renewal is due at ``now``; the names of the listeners renewed. Raises
        :class:`backhaul.pki.CaStoreError` when the CA cannot be read or created."""
        from backhaul.pki import (
            CaStore,
            CertificateProblem,
            certificate_names,
            issue_leaf,
            load_certificates,
            renewal_due,
        )

        renewed: list[str] = []
        for name, names, state_dir, lifetime in self.wanted:
            store = CaStore(state_dir)
            cert_path, key_path = store.leaf_paths(name)
            current = None
            try:
                current = load_certificates(cert_path.read_bytes())[0]
            except (OSError, CertificateProblem):
                current = None
            if current is not None and key_path.exists():
                dns, ips = certificate_names(current)
                same = set(dns) | set(ips) == {n.strip("[]") for n in names}
                if same and not renewal_due(current, now):
                    continue
            authority, created = store.load_or_init(now)
            if created:
                _log(f"created the built-in CA in {store.directory} (root: {store.root_cert_path})")
            from datetime import timedelta  # here: workers import this module (RSS)

            leaf = issue_leaf(authority, names, now, timedelta(seconds=lifetime))
            store.write_leaf(name, leaf)
            renewed.append(name)
            _log(
                f"listener {name}: issued a certificate from the built-in CA for"
                f" {', '.join(names)}, valid until"
                f" {leaf.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
            )
        return renewed


def _log(text: str) -> None:
    print(f"backhaul: {text}", file=sys.stderr, flush=True)


class TlsSupervision:
    """What the supervisor runs for TLS: made before fork, ticked from its loop."""

    def __init__(self, tickets: TicketKeys, internal: InternalCertificates) -> None:
        self.tickets = tickets
        self.internal = internal
        self._next_check = 0.0

    @classmethod
    def before_fork(cls, config: Any) -> TlsSupervision | None:
        """The shared state for ``config`` (None when no listener speaks TLS)."""
        global _shared
        rotations = [
            float(lst.tls.ticket_key_rotation)
            for lst in config.listeners
            if getattr(lst, "tls", None) is not None
        ]
        if not rotations:
            return None
        _shared = TicketKeys(min(rotations))
        return cls(_shared, InternalCertificates(config))

    def request_reload(self) -> None:
        """Workers re-read their certificate files on their next tick (SIGHUP)."""
        self.tickets.request_reload()

    def tick(self, monotonic: float, now: datetime) -> None:
        """Rotate the ticket key when due; renew internal certificates when due."""
        self.tickets.rotate_due(monotonic)
        if not self.internal or monotonic < self._next_check:
            return
        self._next_check = monotonic + _RENEW_CHECK
        try:
            renewed = self.internal.ensure(now)
        except Exception as exc:  # a CA that went unreadable: keep serving, say it
            _log(f"internal certificates not renewed: {exc}")
            return
        if renewed:
            self.tickets.request_reload()
