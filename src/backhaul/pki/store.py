"""The built-in CA's files: the root and its key in a state directory, and the leaves it
issued for listeners with ``tls: {internal: true}``.

    <state>/pki/root.pem             the root certificate (give it to clients to trust)
    <state>/pki/root.key             its private key, mode 0600 (the directory is 0700)
    <state>/pki/issued/<name>.pem    a leaf and the root (chain), for listener <name>
    <state>/pki/issued/<name>.key    its key, mode 0600

The state directory is ``$BACKHAUL_STATE_DIR``, else ``$XDG_DATA_HOME/backhaul``, else
``~/.local/share/backhaul`` (read once, when a command starts: environment variables only
bootstrap). Files are replaced atomically (write, fsync, rename), so a reader sees the old
file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import re
from datetime import datetime
from pathlib import Path

from backhaul.errors import BackhaulError
from backhaul.pki.authority import Authority, IssuedLeaf, create_root, key_pem
from backhaul.pki.certificate import CertificateProblem, load_pair

__all__ = ["CaStore", "CaStoreError", "default_state_dir"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class CaStoreError(BackhaulError):
    """The CA's files cannot be read or written; the message says which and what to do."""


def default_state_dir(env: dict[str, str] | None = None) -> Path:
    """Where backhaul keeps state (see the module docstring)."""
    environ = os.environ if env is None else env
    explicit = environ.get("BACKHAUL_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = environ.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg) / "backhaul"
    return Path(environ.get("HOME") or Path.home()) / ".local" / "share" / "backhaul"


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class CaStore:
    """The CA under ``state_dir/pki``."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self.directory = self.state_dir / "pki"
        self.root_cert_path = self.directory / "root.pem"
        self.root_key_path = self.directory / "root.key"
        self.issued_dir = self.directory / "issued"

    def exists(self) -> bool:
        return self.root_cert_path.exists() or self.root_key_path.exists()

    def _mkdirs(self) -> None:
        try:
            for directory in (self.state_dir, self.directory, self.issued_dir):
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
        except OSError as exc:
            raise CaStoreError(
                f"cannot create the CA directory {self.directory} ({exc.strerror}): set"
                " BACKHAUL_STATE_DIR (or --state-dir) to a directory this user may write"
            ) from exc

    def init(self, now: datetime, common_name: str = "backhaul local CA") -> Authority:
        """Create the root (refuses to replace an existing one)."""
        if self.exists():
            raise CaStoreError(
                f"a CA already exists in {self.directory}: use it (`backhaul ca root`), or"
                " move that directory away to start over (every certificate it issued"
                " stops being trusted)"
            )
        self._mkdirs()
        authority = create_root(now, common_name)
        try:
            _write_atomic(self.root_key_path, key_pem(authority.key), 0o600)
            _write_atomic(self.root_cert_path, authority.cert_pem, 0o644)
        except OSError as exc:
            raise CaStoreError(f"cannot write the CA files in {self.directory}: {exc}") from exc
        return authority

    def load(self) -> Authority:
        """The root and its key; CaStoreError when absent or unreadable."""
        if not self.exists():
            raise CaStoreError(
                f"found no CA in {self.directory}: run `backhaul ca init` first (or set"
                " BACKHAUL_STATE_DIR / --state-dir to where it is)"
            )
        try:
            cert_pem = self.root_cert_path.read_bytes()
            key_bytes = self.root_key_path.read_bytes()
        except OSError as exc:
            raise CaStoreError(
                f"cannot read the CA file {exc.filename} ({exc.strerror}): check its"
                " permissions (the key is readable by its owner only)"
            ) from exc
        try:
            pair = load_pair(cert_pem, key_bytes)
        except CertificateProblem as exc:
            raise CaStoreError(f"the CA in {self.directory} is damaged: {exc}") from exc
        return Authority(pair.leaf, pair.key)

    def load_or_init(self, now: datetime) -> tuple[Authority, bool]:
        """The CA, created when there is none yet; ``(authority, created)``."""
        if self.exists():
            return self.load(), False
        return self.init(now), True

    def leaf_paths(self, name: str) -> tuple[Path, Path]:
        """``(chain file, key file)`` of the leaf kept for ``name``."""
        safe = _SAFE.sub("_", name).strip("._") or "leaf"
        return self.issued_dir / f"{safe}.pem", self.issued_dir / f"{safe}.key"

    def write_leaf(self, name: str, leaf: IssuedLeaf) -> tuple[Path, Path]:
        """Store a leaf under ``name`` (key first, so a reader never pairs a new
        certificate with an old key for longer than the two renames)."""
        self._mkdirs()
        cert_path, key_path = self.leaf_paths(name)
        try:
            _write_atomic(key_path, leaf.key_pem, 0o600)
            _write_atomic(cert_path, leaf.chain_pem, 0o644)
        except OSError as exc:
            raise CaStoreError(f"cannot write {cert_path}: {exc.strerror or exc}") from exc
        return cert_path, key_path
