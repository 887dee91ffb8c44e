"""A small certificate authority: an ECDSA P-256 root and the short-lived leaf certificates
it signs for the edge's listeners (the model is Caddy's ``tls internal`` and mkcert).

Pure: keys and certificates are values, ``now`` is passed in. The files live in
:mod:`backhaul.pki.store`.

Leaves carry what browsers and curl check (RFC 5280, CA/Browser Forum): subjectAltName with
every DNS name and IP address, extendedKeyUsage serverAuth (and clientAuth, so the same CA
can sign client certificates for mutual TLS), keyUsage digitalSignature, a random 159-bit
serial, an Authority Key Identifier pointing at the root. Lifetimes are short (days), so
renewal, not revocation, is how a leaf goes away.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from backhaul.pki.certificate import (
    CertificateProblem,
    PrivateKey,
    server_name_problem,
)

__all__ = [
    "DEFAULT_LEAF_LIFETIME",
    "DEFAULT_ROOT_LIFETIME",
    "Authority",
    "IssuedLeaf",
    "create_root",
    "issue_leaf",
    "key_pem",
    "renewal_due",
]

DEFAULT_ROOT_LIFETIME = timedelta(days=3650)
DEFAULT_LEAF_LIFETIME = timedelta(days=7)
_BACKDATE = timedelta(minutes=5)  # tolerate clients whose clock is a little behind


@dataclass(frozen=True)
class Authority:
    """The root certificate and its key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class IssuedLeaf:
    """A leaf certificate with its key; ``chain_pem`` is leaf then root."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain_pem: bytes
    key_pem: bytes


def key_pem(key: PrivateKey) -> bytes:
    """An unencrypted PKCS#8 PEM of ``key`` (files holding it are mode 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def create_root(
    now: datetime,
    common_name: str = "backhaul local CA",
    lifetime: timedelta = DEFAULT_ROOT_LIFETIME,
) -> Authority:
    """A new self-signed ECDSA P-256 root, valid from ``now`` (a little backdated)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "backhaul"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def _split_names(names: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    dns: list[str] = []
    ips: list[str] = []
    for raw in names:
        name = raw.strip().lower().rstrip(".")
        problem = server_name_problem(name)
        if problem is not None:
            raise CertificateProblem(problem)
        try:
            ips.append(str(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            dns.append(name)
    return list(dict.fromkeys(dns)), list(dict.fromkeys(ips))


def issue_leaf(
    authority: Authority,
    names: list[str] | tuple[str, ...],
    now: datetime,
    lifetime: timedelta = DEFAULT_LEAF_LIFETIME,
) -> IssuedLeaf:
    """A new ECDSA P-256 leaf for ``names`` (host names, ``*.`` wildcards, IP addresses),
    signed by ``authority``, valid from ``now`` for ``lifetime`` (never past the root)."""
    dns, ips = _split_names(names)
    if not dns and not ips:
        raise CertificateProblem("found no names: expected at least one host name or address")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    not_after = min(now + lifetime, authority.cert.not_valid_after_utc)
    issuer_ski = authority.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (dns or ips)[0])]))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski.value),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(authority.key, hashes.SHA256())
    )
    chain = cert.public_bytes(serialization.Encoding.PEM) + authority.cert_pem
    return IssuedLeaf(cert, key, chain, key_pem(key))


def renewal_due(cert: x509.Certificate, now: datetime, remaining: float = 1 / 3) -> bool:
    """True once less than ``remaining`` (a fraction) of the certificate's lifetime is left,
    or it is not valid at ``now`` (Caddy and certbot renew with a third left)."""
    start = cert.not_valid_before_utc
    end = cert.not_valid_after_utc
    if now < start or now >= end:
        return True
    return (end - now) < (end - start) * remaining
