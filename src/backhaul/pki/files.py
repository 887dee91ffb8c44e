"""Reading certificate, key, CA and passphrase files, and checking a pair of them, with
problems said in words (what was found, what to do). Used by the config at load (so
``backhaul check`` names the config path) and by the edge when it reloads certificates.
"""

from __future__ import annotations

from datetime import datetime

from backhaul.pki.certificate import (
    CertificateProblem,
    certificate_names,
    load_certificates,
    load_pair,
    server_name_problem,
    validity_problem,
)

__all__ = ["MAX_PEM_BYTES", "check_ca_file", "check_pair_files", "read_file", "read_passphrase"]

MAX_PEM_BYTES = 1 << 20  # a certificate bundle is kilobytes; refuse what is not one


def read_file(path: str, what: str) -> bytes:
    """The bytes of ``path``; CertificateProblem saying what is wrong and what to do."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_PEM_BYTES + 1)
    except FileNotFoundError:
        raise CertificateProblem(f"found no file {path}: expected the {what} there") from None
    except IsADirectoryError:
        raise CertificateProblem(f"found a directory at {path}: expected the {what}") from None
    except PermissionError:
        raise CertificateProblem(
            f"cannot read {path}: this user may not (check its owner and mode; keys are"
            " usually 0600 and owned by the user the edge runs as)"
        ) from None
    except OSError as exc:
        raise CertificateProblem(f"cannot read {path} ({exc.strerror})") from None
    if len(data) > MAX_PEM_BYTES:
        raise CertificateProblem(f"found {path} over 1 MiB: expected a PEM {what}")
    return data


def read_passphrase(path: str) -> bytes:
    """The first line of a passphrase file, without its line ending."""
    data = read_file(path, "passphrase")
    line = data.splitlines()[0] if data else b""
    if not line:
        raise CertificateProblem(f"found an empty passphrase file {path}: expected one line")
    return line


def check_ca_file(path: str) -> str | None:
    """Why ``path`` is not a readable PEM bundle of certificates, or None."""
    try:
        load_certificates(read_file(path, "CA bundle"))
    except CertificateProblem as exc:
        return str(exc) if path in str(exc) else f"{path}: {exc}"
    return None


def check_pair_files(
    cert: str, key: str, passphrase_file: str | None, now: datetime
) -> list[tuple[str, str]]:
    """Problems of a certificate/key pair of files at ``now``, each with the key of the
    file it is about (``cert``, ``key``, ``passphrase_file``)."""
    problems: list[tuple[str, str]] = []
    cert_pem = key_pem = b""
    try:
        cert_pem = read_file(cert, "certificate")
    except CertificateProblem as exc:
        problems.append(("cert", str(exc)))
    try:
        key_pem = read_file(key, "private key")
    except CertificateProblem as exc:
        problems.append(("key", str(exc)))
    passphrase = None
    if passphrase_file is not None:
        try:
            passphrase = read_passphrase(passphrase_file)
        except CertificateProblem as exc:
            problems.append(("passphrase_file", str(exc)))
    if problems:
        return problems
    try:
        load_certificates(cert_pem)
    except CertificateProblem as exc:
        return [("cert", f"{cert}: {exc}")]
    try:
        pair = load_pair(cert_pem, key_pem, passphrase)
    except CertificateProblem as exc:
        return [("key", f"{key}: {exc}")]
    expired = validity_problem(pair.leaf, now)
    if expired is not None:
        problems.append(("cert", f"{cert}: {expired}"))
    dns, _ = certificate_names(pair.leaf)
    for name in dns:
        if "*" in name and server_name_problem(name) is not None:
            problems.append(
                (
                    "cert",
                    f"{cert}: the certificate names {name!r}, a wildcard in the wrong place:"
                    " expected '*' only as the whole left-most label; reissue it",
                )
            )
    return problems
