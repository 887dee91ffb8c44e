"""Certificates for the edge: a built-in CA, reading and checking certificate/key pairs,
choosing a certificate by server name. Pure policy over ``cryptography`` (``now`` is passed
in; no ``ssl``, no sockets); :mod:`backhaul.pki.store` keeps the CA's files.

    create_root(now) / issue_leaf(authority, names, now)   the CA (ECDSA P-256)
    renewal_due(cert, now)                                  a third of the lifetime left
    load_pair(cert_pem, key_pem, passphrase)                checked chain + key
    validity_problem(cert, now) / server_name_problem(name) what is wrong, in words
    NameIndex(names per certificate).select(server_name)    SNI → certificate
    CaStore(state_dir)                                      the CA's files
"""

from __future__ import annotations

from backhaul.pki.authority import (
    DEFAULT_LEAF_LIFETIME,
    DEFAULT_ROOT_LIFETIME,
    Authority,
    IssuedLeaf,
    create_root,
    issue_leaf,
    key_pem,
    renewal_due,
)
from backhaul.pki.certificate import (
    CertificateProblem,
    LoadedPair,
    certificate_names,
    describe_certificate,
    load_certificates,
    load_pair,
    load_private_key,
    server_name_problem,
    validity_problem,
)
from backhaul.pki.files import check_ca_file, check_pair_files, read_file, read_passphrase
from backhaul.pki.names import NameIndex
from backhaul.pki.store import CaStore, CaStoreError, default_state_dir

__all__ = [
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
]
