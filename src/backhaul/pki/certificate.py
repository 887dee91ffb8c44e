"""Certificates and keys as values: reading PEM, checking a pair, the names a certificate
serves, and the server-name patterns a config may give.

Pure policy on top of ``cryptography``: bytes in, values or :class:`CertificateProblem` out;
every check that depends on the time takes ``now`` (an aware UTC datetime). No file, socket
or ``ssl`` here: the edge's TLS driver and the config read the files and call these.

Facts followed: a ``*`` may only be the whole left-most label of a DNS name and matches
exactly one label (RFC 6125 6.4.3, CA/Browser Forum baseline requirements 3.2.2.6); a
certificate is valid from ``notBefore`` through ``notAfter`` inclusive (RFC 5280 4.1.2.5).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
)
from cryptography.x509.oid import NameOID

from backhaul.errors import BackhaulError

__all__ = [
    "CertificateProblem",
    "LoadedPair",
    "certificate_names",
    "describe_certificate",
    "load_certificates",
    "load_pair",
    "load_private_key",
    "server_name_problem",
    "validity_problem",
]

PrivateKey = CertificateIssuerPrivateKeyTypes

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class CertificateProblem(BackhaulError):
    """A certificate or key that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class LoadedPair:
    """A certificate chain (leaf first) and the private key that matches the leaf."""

    chain: tuple[x509.Certificate, ...]
    key: PrivateKey

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]


def load_certificates(pem: bytes) -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM text, in order (the leaf first in a chain file)."""
    if b"-----BEGIN" not in pem:
        raise CertificateProblem(
            "found no PEM block: expected a certificate in PEM form ('-----BEGIN CERTIFICATE-----')"
        )
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertificateProblem(
            f"found no readable certificate ({exc}): expected PEM certificates"
        ) from exc
    return tuple(certs)


def load_private_key(pem: bytes, passphrase: bytes | None) -> PrivateKey:
    """The private key of a PEM text, decrypted with ``passphrase`` when it is encrypted."""
    if b"-----BEGIN" not in pem or b"PRIVATE KEY-----" not in pem:
        raise CertificateProblem(
            "found no PEM private key: expected a key in PEM form"
            " ('-----BEGIN PRIVATE KEY-----' or '... EC/RSA PRIVATE KEY-----')"
        )
    encrypted = b"ENCRYPTED" in pem
    if encrypted and passphrase is None:
        raise CertificateProblem(
            "found an encrypted private key and no passphrase: add passphrase_file"
        )
    try:
        key = serialization.load_pem_private_key(pem, passphrase if encrypted else None)
    except (ValueError, TypeError) as exc:
        if encrypted:
            raise CertificateProblem(
                "cannot decrypt the private key with the passphrase given: check"
                " passphrase_file (its first line is the passphrase)"
            ) from exc
        raise CertificateProblem(f"found an unreadable private key ({exc})") from exc
    except Exception as exc:  # cryptography raises its own UnsupportedAlgorithm
        raise CertificateProblem(f"found an unusable private key ({exc})") from exc
    if not isinstance(
        key,
        ec.EllipticCurvePrivateKey
        | rsa.RSAPrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise CertificateProblem(
            f"found a {type(key).__name__}: expected an EC, RSA or EdDSA private key"
        )
    return key


def _public_der(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_pair(cert_pem: bytes, key_pem: bytes, passphrase: bytes | None = None) -> LoadedPair:
    """A certificate chain and its key, checked to belong together."""
    chain = load_certificates(cert_pem)
    key = load_private_key(key_pem, passphrase)
    if _public_der(chain[0].public_key()) != _public_der(key.public_key()):
        raise CertificateProblem(
            f"the key does not match the certificate ({describe_certificate(chain[0])}):"
            " expected the private key made with this certificate (is the chain's first"
            " certificate the leaf?)"
        )
    return LoadedPair(chain, key)


def validity_problem(cert: x509.Certificate, now: datetime) -> str | None:
    """Why ``cert`` is not valid at ``now`` (expired or not yet valid), or None."""
    if now > cert.not_valid_after_utc:
        ago = now - cert.not_valid_after_utc
        return (
            f"the certificate ({describe_certificate(cert)}) expired"
            f" {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC ({_span(ago)} ago): renew it"
        )
    if now < cert.not_valid_before_utc:
        return (
            f"the certificate ({describe_certificate(cert)}) is not valid before"
            f" {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: check this machine's clock"
        )
    return None


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 2 * 86400:
        return f"{seconds // 86400} days"
    if seconds >= 7200:
        return f"{seconds // 3600} hours"
    return f"{max(seconds // 60, 1)} minutes"


def certificate_names(cert: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(dns names, ip addresses)`` the certificate is for: its subjectAltName entries,
    or its common name when it has no SAN (as old clients read it)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        names = tuple(str(a.value).lower() for a in cns if isinstance(a.value, str))
        return names, ()
    dns = tuple(name.lower() for name in san.get_values_for_type(x509.DNSName))
    ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    return dns, ips


def describe_certificate(cert: x509.Certificate) -> str:
    """``subject CN=a.test, names a.test, *.a.test, expires 2027-01-01``."""
    dns, ips = certificate_names(cert)
    names = ", ".join((*dns, *ips)) or "none"
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()[:16]
    return (
        f"subject {cert.subject.rfc4514_string() or '-'}, names {names},"
        f" expires {cert.not_valid_after_utc:%Y-%m-%d}, sha256 {fingerprint}…"
    )


def server_name_problem(name: str) -> str | None:
    """Why ``name`` is not a host name or ``*.`` wildcard a certificate may carry, or None."""
    text = name.strip().lower().rstrip(".")
    if not text:
        return "found an empty name: expected a host name such as 'api.example.com'"
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        pass
    else:
        return None
    labels = text.split(".")
    for i, label in enumerate(labels):
        if "*" in label:
            if i != 0 or label != "*":
                return (
                    f"found the wildcard in the wrong place in {name!r}: expected '*' only as"
                    " the whole left-most label, such as '*.example.com'"
                )
            if len(labels) < 3:
                return (
                    f"found {name!r}, a wildcard over a top-level domain: expected at least two"
                    " labels after '*.', such as '*.example.com'"
                )
            continue
        if not _LABEL.fullmatch(label):
            return (
                f"found {name!r}, which is not a host name: expected letters, digits and"
                " hyphens in dot-separated labels"
            )
    return None
