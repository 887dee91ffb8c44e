"""The built-in CA and the certificate checks, without sockets: what the certificates
contain, that a standard verifier accepts them, renewal timing, SNI name selection, and the
words of every refusal."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from backhaul.pki import (
    CaStore,
    CaStoreError,
    CertificateProblem,
    NameIndex,
    create_root,
    issue_leaf,
    load_pair,
    renewal_due,
    server_name_problem,
    validity_problem,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_root_is_a_p256_ca_valid_for_years() -> None:
    root = create_root(NOW)
    assert isinstance(root.key, ec.EllipticCurvePrivateKey)
    assert root.key.curve.name == "secp256r1"
    constraints = root.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert root.cert.not_valid_after_utc - NOW > timedelta(days=3000)
    assert root.cert.issuer == root.cert.subject


def test_leaf_verifies_with_the_root_for_its_names_only() -> None:
    root = create_root(NOW)
    leaf = issue_leaf(root, ["api.test", "*.apps.test", "10.0.0.7"], NOW)
    san = leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.test", "*.apps.test"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    eku = leaf.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert leaf.cert.not_valid_after_utc - NOW == timedelta(days=7)
    builder = PolicyBuilder().store(Store([root.cert])).time(NOW + timedelta(hours=1))
    for name in ("api.test", "x.apps.test"):
        builder.build_server_verifier(x509.DNSName(name)).verify(leaf.cert, [])
    for name in ("other.test", "a.b.apps.test"):
        with pytest.raises(VerificationError):
            builder.build_server_verifier(x509.DNSName(name)).verify(leaf.cert, [])
    other = create_root(NOW)
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([other.cert])).time(NOW).build_server_verifier(
            x509.DNSName("api.test")
        ).verify(leaf.cert, [])


def test_a_leaf_never_outlives_its_root() -> None:
    root = create_root(NOW, lifetime=timedelta(days=2))
    leaf = issue_leaf(root, ["a.test"], NOW, timedelta(days=30))
    assert leaf.cert.not_valid_after_utc == root.cert.not_valid_after_utc


@pytest.mark.parametrize("bad", ["a.*.test", "*a.test", "*.test", "", "a b.test", "-a.test"])
def test_issue_refuses_bad_names(bad: str) -> None:
    with pytest.raises(CertificateProblem):
        issue_leaf(create_root(NOW), [bad], NOW)


def test_server_name_problem_words() -> None:
    assert server_name_problem("*.example.com") is None
    assert server_name_problem("127.0.0.1") is None
    assert server_name_problem("[::1]") is None
    message = server_name_problem("api.*.example.com")
    assert message is not None and "wildcard in the wrong place" in message
    message = server_name_problem("*.com")
    assert message is not None and "top-level" in message


def test_renewal_is_due_with_a_third_of_the_lifetime_left() -> None:
    root = create_root(NOW)
    leaf = issue_leaf(root, ["a.test"], NOW, timedelta(days=9)).cert
    start = leaf.not_valid_before_utc
    life = leaf.not_valid_after_utc - start
    assert not renewal_due(leaf, NOW)
    assert not renewal_due(leaf, start + life * 0.66)
    assert renewal_due(leaf, start + life * 0.67)
    assert renewal_due(leaf, leaf.not_valid_after_utc + timedelta(seconds=1))
    assert renewal_due(leaf, start - timedelta(seconds=1))


def test_validity_problem_says_expired_or_early() -> None:
    leaf = issue_leaf(create_root(NOW), ["a.test"], NOW, timedelta(days=1)).cert
    assert validity_problem(leaf, NOW) is None
    expired = validity_problem(leaf, NOW + timedelta(days=3))
    assert expired is not None and "expired" in expired and "renew" in expired
    early = validity_problem(leaf, NOW - timedelta(days=1))
    assert early is not None and "clock" in early


def test_load_pair_checks_the_key_belongs_to_the_certificate() -> None:
    root = create_root(NOW)
    one = issue_leaf(root, ["one.test"], NOW)
    two = issue_leaf(root, ["two.test"], NOW)
    pair = load_pair(one.chain_pem, one.key_pem)
    assert pair.leaf == one.cert and len(pair.chain) == 2
    with pytest.raises(CertificateProblem, match="does not match"):
        load_pair(one.chain_pem, two.key_pem)
    with pytest.raises(CertificateProblem, match="no PEM"):
        load_pair(b"hello", one.key_pem)
    with pytest.raises(CertificateProblem, match="private key"):
        load_pair(one.chain_pem, one.chain_pem)


def test_encrypted_keys_need_the_right_passphrase() -> None:
    leaf = issue_leaf(create_root(NOW), ["a.test"], NOW)
    encrypted = leaf.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    assert load_pair(leaf.chain_pem, encrypted, b"s3cret").leaf == leaf.cert
    with pytest.raises(CertificateProblem, match="no passphrase"):
        load_pair(leaf.chain_pem, encrypted)
    with pytest.raises(CertificateProblem, match="cannot decrypt"):
        load_pair(leaf.chain_pem, encrypted, b"wrong")


def test_name_index_prefers_exact_names_then_one_label_wildcards() -> None:
    index = NameIndex([["default.test"], ["api.test", "*.apps.test"], ["*.api.test", "x.test"]])
    assert index.select("api.test") == 1
    assert index.select("API.Test.") == 1
    assert index.select("v1.api.test") == 2
    assert index.select("web.apps.test") == 1
    assert index.select("a.web.apps.test") is None  # a wildcard covers one label
    assert index.select("apps.test") is None
    assert index.select("unknown.test") is None
    assert index.select(None) is None
    assert index.select("") is None
    assert NameIndex([["a.test"], ["a.test"]]).select("a.test") == 0  # first one wins


def test_store_keeps_the_root_key_private_and_refuses_a_second_init(tmp_path: Path) -> None:
    store = CaStore(tmp_path / "state")
    with pytest.raises(CaStoreError, match="ca init"):
        store.load()
    made = store.init(NOW)
    assert stat.S_IMODE(os.stat(store.root_key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700
    assert store.load().cert == made.cert
    with pytest.raises(CaStoreError, match="already exists"):
        store.init(NOW)
    leaf = issue_leaf(made, ["a.test"], NOW)
    cert_path, key_path = store.write_leaf("web/../x", leaf)
    assert cert_path.parent == store.issued_dir and key_path.parent == store.issued_dir
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert load_pair(cert_path.read_bytes(), key_path.read_bytes()).leaf == leaf.cert


def test_a_damaged_store_is_reported(tmp_path: Path) -> None:
    store = CaStore(tmp_path)
    store.init(NOW)
    store.root_key_path.write_bytes(issue_leaf(create_root(NOW), ["a.test"], NOW).key_pem)
    with pytest.raises(CaStoreError, match="damaged"):
        store.load()


def test_pki_exports_are_what_we_mean() -> None:
    import backhaul.pki as pki

    assert set(pki.__all__) == {
        "DEFAULT_LEAF_LIFETIME",
        "DEFAULT_ROOT_LIFETIME",
        "Authority",
        "CaStore",
        "CaStoreError",
        "CertificateProblem",
        "IssuedLeaf",
        "LoadedPair",
        "NameIndex",
        "certificate_names",
        "check_ca_file",
        "check_pair_files",
        "create_root",
        "default_state_dir",
        "describe_certificate",
        "issue_leaf",
        "key_pem",
        "load_certificates",
        "load_pair",
        "load_private_key",
        "read_file",
        "read_passphrase",
        "renewal_due",
        "server_name_problem",
        "validity_problem",
    }
    for name in pki.__all__:
        assert hasattr(pki, name), name
    assert issubclass(pki.CertificateProblem, Exception)
    from backhaul.errors import BackhaulError

    assert issubclass(pki.CaStoreError, BackhaulError)
    assert issubclass(pki.CertificateProblem, BackhaulError)
