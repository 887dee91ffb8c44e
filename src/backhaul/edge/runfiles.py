"""Where a running edge can be found: its pid file and its reload status file.

The supervisor writes, in the run directory:

    edge-<key>.pid            its pid (one line), then the absolute config path (one line)
    edge-<pid>.status.json    the reload status (the fields of ReloadSnapshot, as JSON)

``<key>`` is 16 hex digits (CRC-32 and Adler-32) of the config file's absolute path, or
``nofile`` for an edge started without ``--config`` (quick mode, the embedded default). So
``backhaul reload -c edge.yaml`` finds the edge serving ``edge.yaml``, and
``backhaul reload --pid N`` finds the status of supervisor ``N``. The status file is
replaced atomically (write, rename) after each reload attempt, because ``backhaul reload``
runs outside the supervisor's process tree and cannot read the shared memory of
:mod:`backhaul.state.reload_status`.

The run directory is ``$BACKHAUL_RUN_DIR``, else ``$XDG_RUNTIME_DIR/backhaul``, else
``/tmp/backhaul-<uid>`` (mode 0700; read once when a command starts: environment variables
only bootstrap). Plain stdlib, paths as strings (no pathlib): the supervisor imports this
module.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import zlib

from backhaul.errors import BackhaulError

TYPE_CHECKING = False  # without importing typing: the supervisor imports this module (RSS)
if TYPE_CHECKING:
    from typing import Any

    from backhaul.state.reload_status import ReloadSnapshot

__all__ = [
    "RunFileError",
    "pid_path",
    "read_pid",
    "read_status",
    "remove",
    "run_dir",
    "status_path",
    "supervisor_alive",
    "write_pid",
    "write_status",
]


class RunFileError(BackhaulError):
    """A run file that cannot be written or read; the message says which and why."""


def run_dir(env: dict[str, str] | None = None) -> str:
    """The run directory (see the module docstring)."""
    environ = os.environ if env is None else env
    explicit = environ.get("BACKHAUL_RUN_DIR")
    if explicit:
        return explicit
    xdg = environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "backhaul")
    return f"/tmp/backhaul-{os.getuid()}"


def pid_path(config_file: str | None, directory: str | None = None) -> str:
    """The pid file of the edge serving ``config_file`` (None: started without one)."""
    if config_file is None:
        key = "nofile"
    else:
        # zlib, not hashlib: the supervisor keeps OpenSSL's libcrypto out of its memory
        raw = os.path.abspath(config_file).encode()
        key = f"{zlib.crc32(raw):08x}{zlib.adler32(raw):08x}"
    return os.path.join(directory or run_dir(), f"edge-{key}.pid")


def status_path(pid: int, directory: str | None = None) -> str:
    """The reload status file of supervisor ``pid``."""
    return os.path.join(directory or run_dir(), f"edge-{pid}.status.json")


def _write_atomic(path: str, data: bytes) -> None:
    folder, name = os.path.split(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(1 << 20)


def write_pid(config_file: str | None, pid: int) -> str:
    """Write the pid file for ``config_file`` (its path); raises :class:`RunFileError`."""
    path = pid_path(config_file)
    text = f"{pid}\n{os.path.abspath(config_file) if config_file else ''}\n"
    try:
        _write_atomic(path, text.encode())
    except OSError as exc:
        raise RunFileError(
            f"cannot write the pid file {path} ({exc.strerror}): set BACKHAUL_RUN_DIR to a"
            " writable directory"
        ) from exc
    return path


def read_pid(config_file: str | None) -> tuple[int, str] | None:
    """``(pid, pid file)`` of the edge serving ``config_file``, None when it has no pid file
    or the pid in it is not a live supervisor."""
    path = pid_path(config_file)
    try:
        first = _read(path).decode().split("\n", 1)[0]
        pid = int(first)
    except (OSError, ValueError):
        return None
    return (pid, path) if supervisor_alive(pid, config_file) else None


def supervisor_alive(pid: int, config_file: str | None = None) -> bool:
    """Whether ``pid`` is a running backhaul supervisor (by its command line), serving
    ``config_file`` when one is given (a pid that a dead edge left and another reused is not
    taken for it)."""
    try:
        args = _read(f"/proc/{pid}/cmdline").split(b"\0")
    except OSError:
        return False
    # run as itself, or by the admin layer with its control process (backhaul.admin.supervise)
    if b"backhaul.edge.supervisor" not in args and b"backhaul.admin.supervise" not in args:
        return False
    if config_file is None:
        return True
    wanted = os.fsencode(os.path.abspath(config_file))
    return any(a == b"--config-file" and b == wanted for a, b in itertools.pairwise(args))


def write_status(pid: int, snapshot: ReloadSnapshot, extra: dict[str, Any]) -> None:
    """Replace supervisor ``pid``'s status file with ``snapshot`` and ``extra`` fields.
    A failure is returned to nobody: the supervisor logs it."""
    import json  # here, not at import: the supervisor writes this once per reload attempt

    data = {**snapshot.as_dict(), **extra}
    _write_atomic(status_path(pid), json.dumps(data).encode())


def read_status(pid: int) -> dict[str, Any] | None:
    """The last status supervisor ``pid`` wrote, None when there is none (yet)."""
    import json

    try:
        data = json.loads(_read(status_path(pid)))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove(pid: int, config_file: str | None) -> None:
    """Remove supervisor ``pid``'s files (at exit); a pid file another edge took is kept."""
    with contextlib.suppress(OSError):
        os.unlink(status_path(pid))
    path = pid_path(config_file)
    with contextlib.suppress(OSError, ValueError):
        if int(_read(path).decode().split("\n", 1)[0]) == pid:
            os.unlink(path)
