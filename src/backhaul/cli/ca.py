"""``backhaul ca``: the built-in certificate authority for private networks.

    backhaul ca init                      create the ECDSA P-256 root (key 0600) once
    backhaul ca issue NAME... [--ip A]    a short-lived leaf for those names, signed by it
    backhaul ca root                      print the root, for clients to trust

The CA lives in the state directory (``--state-dir``, else ``$BACKHAUL_STATE_DIR``, else
``$XDG_DATA_HOME/backhaul`` or ``~/.local/share/backhaul``); see :mod:`backhaul.pki.store`.
A listener with ``tls: {internal: true}`` uses the same CA.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

from backhaul.errors import UsageError

__all__ = ["register"]

ca_app = typer.Typer(
    name="ca",
    help="The built-in certificate authority: init, issue leaf certificates, print the root.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_STATE_HELP = "Where the CA lives (default: $BACKHAUL_STATE_DIR or ~/.local/share/backhaul)."


def _store(state_dir: Path | None):  # type: ignore[no-untyped-def]
    from backhaul.pki import CaStore, default_state_dir

    return CaStore(state_dir if state_dir is not None else default_state_dir())


def _err(text: str) -> None:
    print(text, file=sys.stderr)


@ca_app.command("init")
def init(
    state_dir: Path | None = typer.Option(None, "--state-dir", help=_STATE_HELP),
    name: str = typer.Option("backhaul local CA", "--name", help="The root's common name."),
) -> None:
    """Create the CA's root certificate and key (once; an existing CA is kept)."""
    from backhaul.pki import describe_certificate

    store = _store(state_dir)
    authority = store.init(datetime.now(UTC), name)
    typer.echo(f"created the CA in {store.directory}")
    typer.echo(f"  root: {store.root_cert_path}")
    typer.echo(f"  key:  {store.root_key_path} (mode 0600)")
    typer.echo(f"  {describe_certificate(authority.cert)}")
    typer.echo("clients trust it with: backhaul ca root > root.pem; curl --cacert root.pem ...")


@ca_app.command("issue")
def issue(
    names: list[str] = typer.Argument(..., help="Host names (and *.wildcards) to certify."),
    ip: list[str] = typer.Option([], "--ip", help="An IP address to certify too (repeatable)."),
    days: float = typer.Option(7.0, "--days", min=0.01, max=397, help="Lifetime in days."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Write OUT.pem (leaf + root) and OUT.key; default: the first name, here.",
    ),
    state_dir: Path | None = typer.Option(None, "--state-dir", help=_STATE_HELP),
) -> None:
    """Issue a leaf certificate for NAME... signed by the CA (ECDSA P-256, short-lived)."""
    from backhaul.pki import CertificateProblem, describe_certificate, issue_leaf

    store = _store(state_dir)
    authority = store.load()
    try:
        leaf = issue_leaf(
            authority, [*names, *ip], datetime.now(UTC), lifetime=timedelta(days=days)
        )
    except CertificateProblem as exc:
        raise UsageError(str(exc)) from exc
    base = out if out is not None else Path(names[0].replace("*", "_wildcard"))
    cert_path = base.with_name(base.name + ".pem")
    key_path = base.with_name(base.name + ".key")
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as stream:
            os.fchmod(stream.fileno(), 0o600)
            stream.write(leaf.key_pem)
        cert_path.write_bytes(leaf.chain_pem)
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename}: {exc.strerror}; choose --out") from exc
    typer.echo(f"certificate: {cert_path} (leaf, then the root)")
    typer.echo(f"key:         {key_path} (mode 0600)")
    typer.echo(f"  {describe_certificate(leaf.cert)}")


@ca_app.command("root")
def root(
    state_dir: Path | None = typer.Option(None, "--state-dir", help=_STATE_HELP),
    path: bool = typer.Option(False, "--path", help="Print the root's file path instead."),
) -> None:
    """Print the CA's root certificate (PEM), for clients to trust."""
    store = _store(state_dir)
    authority = store.load()
    if path:
        typer.echo(str(store.root_cert_path))
        return
    typer.echo(authority.cert_pem.decode(), nl=False)


def register(app: typer.Typer) -> None:
    """Add ``backhaul ca`` to the root app."""
    app.add_typer(ca_app, name="ca")
