"""TLS in the edge config: a listener's ``tls`` (certificates chosen by SNI, the built-in CA,
client certificates), a plain listener's ``redirect_https``, a route's ``hsts`` and a
cluster's ``tls`` to its upstreams.

The files a TLS block names are read and checked at load, so ``backhaul check`` and ``serve``
report, with the config path: a missing or unreadable file, a file that holds no
certificate or key, a key that does not match its certificate, an encrypted key without (or
with the wrong) passphrase, an expired certificate, a wildcard in the wrong place. The clock
for "expired" is the validation context's ``now`` when one is given (tests), else the wall
clock: loading a config is the boundary where it is read. Relative paths are made absolute
against the working directory at load, so the serving processes never depend on it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from backhaul.config.fields import (
    ConfigModel,
    PositiveDuration,
    Problems,
    WholeSeconds,
    compiles,
)
from backhaul.config.units import describe
from backhaul.pki import default_state_dir, server_name_problem
from backhaul.pki.files import check_ca_file, check_pair_files

__all__ = [
    "CertificateFiles",
    "ClientAuth",
    "ClientCertMatch",
    "Hsts",
    "ListenerTls",
    "RedirectHttps",
    "UpstreamTls",
]


def _now(info: ValidationInfo) -> datetime:
    context = info.context if isinstance(info.context, dict) else {}
    now = context.get("now")
    return now if isinstance(now, datetime) else datetime.now(UTC)


def _absolute(value: str) -> str:
    if not value.strip():
        raise ValueError("found an empty string: expected a file path")
    return str(Path(value).expanduser().absolute())


class CertificateFiles(ConfigModel):
    """A certificate chain (leaf first) and its private key, as PEM files."""

    cert: str = Field(description="PEM: the leaf, then its intermediates")
    key: str = Field(description="PEM private key (may be encrypted: add passphrase_file)")
    passphrase_file: str | None = Field(default=None, description="first line = passphrase")

    _paths = field_validator("cert", "key", "passphrase_file")(
        classmethod(lambda cls, v: None if v is None else _absolute(v))
    )

    def check(self, now: datetime) -> list[tuple[str, str]]:
        """Problems of these files at ``now``, each with its key (``cert``, ``key``...)."""
        return check_pair_files(self.cert, self.key, self.passphrase_file, now)


class ClientAuth(ConfigModel):
    """Mutual TLS: clients present a certificate signed by ``ca``."""

    ca: str = Field(description="PEM bundle of the CAs that sign client certificates")
    mode: Literal["require", "optional"] = Field(
        default="require", description="require: no certificate, no connection"
    )
    forward: bool = Field(
        default=True, description="send it upstream in Client-Cert / Client-Cert-Chain"
    )

    _path = field_validator("ca")(classmethod(lambda cls, v: _absolute(v)))

    def check(self) -> list[tuple[str, str]]:
        problem = check_ca_file(self.ca)
        return [] if problem is None else [("ca", problem)]


class ListenerTls(ConfigModel):
    """HTTPS on a listener. ``cert``/``key``/``passphrase_file`` are short for one entry
    of ``certificates``; ``internal: true`` takes a certificate from the built-in CA."""

    certificates: tuple[CertificateFiles, ...] = Field(
        default=(), description="chosen by SNI; the first is the default"
    )
    cert: str | None = Field(default=None, description="short for certificates: [{cert, key}]")
    key: str | None = Field(default=None, description="(moved into certificates at load)")
    passphrase_file: str | None = Field(default=None, description="(likewise)")
    internal: bool = Field(default=False, description="certificate from the built-in CA")
    names: tuple[str, ...] = Field(
        default=(),
        description="internal: names to certify (default: the routes' hosts and localhost)",
    )
    state_dir: str = Field(
        default_factory=lambda: str(default_state_dir()),
        description="internal: where the CA lives ($BACKHAUL_STATE_DIR by default)",
    )
    lifetime: PositiveDuration = Field(
        default="168h", description="internal: leaf lifetime (renewed with a third left)"
    )  # type: ignore[assignment]
    unknown_sni: Literal["default", "refuse"] = Field(
        default="default", description="a name no certificate has: default cert, or refuse"
    )
    min_version: Literal["1.2", "1.3"] = "1.2"
    session_tickets: bool = Field(default=True, description="resumption, keys shared")
    ticket_key_rotation: PositiveDuration = Field(
        default="12h", description="new session-ticket key this often"
    )  # type: ignore[assignment]
    handshake_timeout: PositiveDuration = Field(default="10s")  # type: ignore[assignment]
    client_auth: ClientAuth | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not ({"cert", "key", "passphrase_file"} & set(data)):
            return data
        out = dict(data)
        one = {k: out.pop(k) for k in ("cert", "key", "passphrase_file") if k in out}
        if "certificates" in out:
            raise Problems(
                [("cert", "found cert/key and certificates: expected one of the two forms")]
            )
        out["certificates"] = [one]
        return out

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: str) -> str:
        return _absolute(value)

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> ListenerTls:
        problems: list[tuple[str, str]] = []
        if self.internal and self.certificates:
            problems.append(
                (
                    "internal",
                    "found internal: true and certificates: expected one source of"
                    " certificates (remove cert/key, or internal)",
                )
            )
        elif not self.internal and not self.certificates:
            problems.append(
                (
                    "",
                    "found tls without a certificate: add tls.cert and tls.key, or set"
                    " tls.internal: true for one from the built-in CA",
                )
            )
        if self.names and not self.internal:
            problems.append(
                ("names", "found names without internal: true: the certificates name their hosts")
            )
        for i, name in enumerate(self.names):
            problem = server_name_problem(name)
            if problem is not None:
                problems.append((f"names[{i}]", problem))
        now = _now(info)
        for i, files in enumerate(self.certificates):
            problems += [(f"certificates[{i}].{k}", m) for k, m in files.check(now)]
        if self.client_auth is not None:
            problems += [(f"client_auth.{k}", m) for k, m in self.client_auth.check()]
        if problems:
            raise Problems(problems)
        return self


class ClientCertMatch(ConfigModel):
    """A route condition on the connection's verified client certificate (mutual TLS)."""

    present: bool | None = Field(default=None, description="a verified certificate was sent")
    subject: str | None = Field(
        default=None, description="full-match regex on the subject, such as 'CN=admin\\..*'"
    )

    @field_validator("subject")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return compiles(value)

    @model_validator(mode="after")
    def _something(self) -> ClientCertMatch:
        if self.present is None and self.subject is None:
            raise ValueError("found neither present nor subject: expected at least one")
        if self.present is False and self.subject is not None:
            raise ValueError("found present: false with a subject: expected one or the other")
        return self


class RedirectHttps(ConfigModel):
    """A plain-HTTP listener that answers every request with a redirect to HTTPS."""

    port: int = Field(default=443, ge=1, le=65535, description="the HTTPS port")
    status: Literal[301, 302, 307, 308] = 308


class Hsts(ConfigModel):
    """Strict-Transport-Security on a route's responses over HTTPS (RFC 6797)."""

    max_age: WholeSeconds = Field(default="8760h")  # type: ignore[assignment]
    include_subdomains: bool = False
    preload: bool = False


class UpstreamTls(ConfigModel):
    """TLS from the edge to a cluster's endpoints."""

    ca: str | None = Field(default=None, description="PEM CA bundle; None = the system store")
    verify: bool = Field(default=True, description="false: no certificate check (tests only)")
    server_name: str | None = Field(
        default=None, description="SNI and the name verified; default: the endpoint's host"
    )
    verify_name: str | None = Field(
        default=None, description="verify this name instead of server_name (SNI stays)"
    )
    cert: str | None = Field(default=None, description="client certificate (upstream mTLS)")
    key: str | None = None
    passphrase_file: str | None = None
    min_version: Literal["1.2", "1.3"] = "1.2"

    _paths = field_validator("ca", "cert", "key", "passphrase_file")(
        classmethod(lambda cls, v: None if v is None else _absolute(v))
    )

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> UpstreamTls:
        problems: list[tuple[str, str]] = []
        for key in ("server_name", "verify_name"):
            name = getattr(self, key)
            if name is None:
                continue
            problem = server_name_problem(name)
            if problem is None and "*" in name:
                problem = f"found {describe(name)}: expected a host name without a wildcard"
            if problem is not None:
                problems.append((key, problem))
        if self.verify_name is not None and not self.verify:
            problems.append(("verify_name", "found verify_name with verify: false: pick one"))
        if self.ca is not None:
            problem = check_ca_file(self.ca)
            if problem is not None:
                problems.append(("ca", problem))
        if (self.cert is None) != (self.key is None):
            problems.append(("cert", "found only one of cert and key: expected both or neither"))
        elif self.cert is not None and self.key is not None:
            files = CertificateFiles(
                cert=self.cert, key=self.key, passphrase_file=self.passphrase_file
            )
            problems += files.check(_now(info))
        if problems:
            raise Problems(problems)
        return self
