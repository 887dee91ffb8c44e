"""Certificates for the TLS tests, made with the built-in CA (and, for what it never makes,
with cryptography directly): written once per test module into a temporary directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from backhaul.pki import Authority, CaStore, IssuedLeaf, create_root, issue_leaf, key_pem


@dataclass
class Pair:
    cert: Path
    key: Path
    leaf: x509.Certificate


def write_leaf(directory: Path, name: str, leaf: IssuedLeaf) -> Pair:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    cert.write_bytes(leaf.chain_pem)
    key.write_bytes(leaf.key_pem)
    os.chmod(key, 0o600)
    return Pair(cert, key, leaf.cert)


def rsa_leaf(authority: Authority, names: list[str], now: datetime) -> IssuedLeaf:
    """An RSA-2048 leaf (the CA only makes ECDSA ones): for the cipher tests, where the
    RSA key-exchange and DHE suites could otherwise be chosen."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .sign(authority.key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM) + authority.cert_pem
    return IssuedLeaf(cert, key, pem, key_pem(key))  # type: ignore[arg-type]


def bad_wildcard_leaf(authority: Authority, now: datetime) -> IssuedLeaf:
    """A leaf naming 'api.*.test' (issue_leaf refuses to make one)."""
    good = issue_leaf(authority, ["ok.test"], now)
    key = good.key
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api")]))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("api.*.test")]), critical=False)
        .sign(authority.key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    return IssuedLeaf(cert, key, pem, good.key_pem)


class Material:
    """A CA in ``directory/state`` and leaves for every test of a module."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.now = datetime.now(UTC)
        self.store = CaStore(directory / "state")
        self.ca = self.store.init(self.now)
        self.root = self.store.root_cert_path
        self.localhost = self.leaf("localhost", ["localhost", "127.0.0.1"])
        self.a = self.leaf("a.test", ["a.test"])
        self.wild = self.leaf("wild", ["*.wild.test"])
        # A second, unrelated CA: for client certificates the edge must not trust.
        self.other_ca = create_root(self.now, "some other CA")
        self.other_root = directory / "other-root.pem"
        self.other_root.write_bytes(self.other_ca.cert_pem)

    def leaf(
        self, name: str, names: list[str], now: datetime | None = None, days: float = 7
    ) -> Pair:
        issued = issue_leaf(self.ca, names, now or self.now, timedelta(days=days))
        return write_leaf(self.dir, name, issued)
