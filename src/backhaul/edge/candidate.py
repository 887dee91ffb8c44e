"""A config candidate: read, validate and prepare a config for the supervisor.

``backhaul serve`` prepares the config it starts with here (:func:`prepare`) before it
becomes the supervisor. On a reload the supervisor, which imports no pydantic, runs this
module in a child process::

    python -m backhaul.edge.candidate --result-fd FD --config FILE [--access-log X] [--workers N]

The child reads the file once, validates it exactly as ``backhaul serve`` and ``backhaul
check`` do, issues internal certificates it needs (as ``serve`` does before it forks), and
writes a pickled :class:`Candidate` into the memory file ``FD``: either the prepared
config or the error, worded as ``backhaul check`` words it (the file, each problem's config
path, what was found and expected). The ``--access-log`` and ``--workers`` flags that
``serve`` was given apply to every later reload too.
"""

from __future__ import annotations

import os
import pickle
import sys

from backhaul.errors import BackhaulError, ConfigError, UsageError
from backhaul.net.socket_address import SocketAddress
from backhaul.state.record import Record

TYPE_CHECKING = False  # without importing typing: the supervisor imports this module (RSS)
if TYPE_CHECKING:
    from typing import Any, Final

    from backhaul.edge import runtime_config as rt
    from backhaul.state.shared_counters import Layout

# hashlib, datetime and the config classes are imported where they are used, and the records
# are no dataclasses: the supervisor, which imports this module for the types it unpickles,
# loads none of them (RSS).

__all__ = [
    "FEATURES",
    "Candidate",
    "Prepared",
    "apply_access_log",
    "describe_error",
    "load_candidate",
    "main",
    "max_workers",
    "prepare",
    "worker_count",
]


FEATURES = ("admin", "dns", "endpoints_from", "health_checks", "tls")
"""What a config can turn on that makes the supervisor read the whole typed config: an admin
listener, endpoints found through DNS or active health checks (the control process), the DNS
service, a TLS listener."""


def max_workers() -> int:
    """More worker processes than this only add memory (8 per CPU, at least 16)."""
    return max(16, 8 * (os.cpu_count() or 1))


class Prepared(Record):
    """What the supervisor needs of a validated config: plain data only.

    Besides the frozen config (which the workers thaw), the few facts the supervisor itself
    reads, so that it thaws the typed config only for the parts that need all of it (TLS,
    DNS, the control process): a plain edge's supervisor never imports the config classes.
    """

    __slots__ = (
        "settings",
        "digest",
        "workers",
        "dhcp",
        "summary",
        "listeners",
        "drain",
        "admin",
        "layout",
        "endpoints",
        "features",
        "discovered",
        "questions",
    )

    def __init__(
        self,
        settings: bytes,
        digest: str,
        workers: int,
        dhcp: tuple[bytes, str] | None = None,
        summary: tuple[str, ...] = (),
        listeners: tuple[tuple[str, SocketAddress], ...] = (),
        drain: float = 30.0,
        admin: SocketAddress | None = None,
        layout: Layout | None = None,
        endpoints: tuple[tuple[str, str, bool], ...] = (),
        features: frozenset[str] = frozenset(),
        discovered: tuple[tuple[str, int], ...] = (),
        questions: tuple[tuple[str, tuple[object, ...]], ...] = (),
    ) -> None:
        self.settings: Final = settings  # settings.freeze of the config (without its dhcp)
        self.digest: Final = digest  # hex SHA-256 of the config file's bytes (or settings')
        self.workers: Final = workers
        self.dhcp: Final = dhcp  # the DHCP section (JSON) and its metrics file
        self.summary: Final = summary  # "listener main on http://..." lines
        self.listeners: Final = listeners  # (name, address), config order
        self.drain: Final = drain  # seconds: the longest listener drain timeout
        self.admin: Final = admin  # the admin listener's address
        self.layout: Final = layout  # the metrics layout (backhaul.state.shared_counters)
        self.endpoints: Final = endpoints  # endpoint_labels of the config
        self.features: Final = features  # of FEATURES: what the config turns on
        self.discovered: Final = discovered  # (cluster, max_endpoints) found through DNS
        self.questions: Final = questions  # (cluster, the DNS question it asks)


class Candidate(Record):
    """The child's answer: ``prepared``, or ``error`` (the text ``backhaul check`` prints)."""

    __slots__ = ("prepared", "error")

    def __init__(self, prepared: Prepared | None, error: str = "") -> None:
        self.prepared: Final = prepared
        self.error: Final = error


def apply_access_log(cfg: Any, value: str | None) -> Any:
    """``cfg`` with ``serve --access-log VALUE`` applied (a file, ``-``, or ``off``)."""
    if value is None:
        return cfg
    log = cfg.access_log
    if value == "off":
        log = log.model_copy(update={"enabled": False})
    else:
        log = log.model_copy(update={"enabled": True, "path": value})
    return cfg.model_copy(update={"access_log": log})


def check_writable(path: str) -> None:
    """Fail before any worker starts when the access log cannot be written."""
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except FileNotFoundError as exc:
        raise UsageError(
            f"access log {path}: its directory does not exist; create it, or set "
            "access_log.path (or --access-log) to an existing place or '-'"
        ) from exc
    except OSError as exc:
        raise UsageError(
            f"access log {path}: cannot write it ({exc.strerror}); choose another path or '-'"
        ) from exc


def worker_count(cfg: Any, flag: int | None) -> int:
    """``--workers``, else the config's ``workers``, else the CPU count (checked)."""
    count = flag or cfg.workers or os.cpu_count() or 1
    if count < 1:
        raise UsageError("--workers must be at least 1")
    if count > max_workers():
        raise UsageError(
            f"{count} workers is more than this machine can use: at most {max_workers()} "
            f"(8 per CPU); one per CPU is the usual choice"
        )
    return int(count)


def prepare(cfg: Any, workers: int | None, digest: str | None = None) -> Prepared:
    """Check what can be checked before the processes start (access log writable, DHCP
    interfaces, internal certificates issued) and freeze ``cfg`` for the supervisor.
    ``digest``: of the config file's bytes (None: of the frozen settings)."""
    import hashlib

    from backhaul.edge.settings import freeze, thaw

    count = worker_count(cfg, workers)
    if cfg.access_log.enabled and cfg.access_log.path != "-":
        check_writable(cfg.access_log.path)
    dhcp = None
    if cfg.dhcp is not None:
        from backhaul.services.dhcp.service import check_interfaces
        from backhaul.services.sidecar import dhcp_section

        check_interfaces(cfg.dhcp)
        dhcp = dhcp_section(cfg)
    if any(lst.tls is not None and lst.tls.internal for lst in cfg.listeners):
        from datetime import UTC, datetime

        from backhaul.edge.tls_supervisor import InternalCertificates

        InternalCertificates(cfg).ensure(datetime.now(UTC))
    settings = freeze(cfg.model_copy(update={"dhcp": None}) if dhcp is not None else cfg)
    summary = []
    for lst in cfg.listeners:
        scheme = "https" if lst.tls is not None else "http"
        summary.append(f"listener {lst.name} on {scheme}://{lst.address}")
    return Prepared(
        settings=settings,
        digest=digest or hashlib.sha256(settings).hexdigest(),
        workers=count,
        dhcp=dhcp,
        summary=tuple(summary),
        **supervisor_facts(thaw(settings)),
    )


def supervisor_facts(config: rt.EdgeConfig) -> dict[str, Any]:
    """The fields of :class:`Prepared` that the supervisor reads instead of the config."""
    from backhaul.state.discovered_endpoints import discovered_clusters, dns_questions
    from backhaul.state.endpoint_control import endpoint_labels
    from backhaul.state.shared_counters import build_layout

    features = {
        "admin": config.admin is not None,
        "dns": config.dns is not None,
        "endpoints_from": any(c.endpoints_from is not None for c in config.clusters.values()),
        "health_checks": any(c.health_checks is not None for c in config.clusters.values()),
        "tls": any(lst.tls is not None for lst in config.listeners),
    }
    return {
        "listeners": tuple((lst.name, lst.address) for lst in config.listeners),
        "drain": max((float(lst.timeouts.drain) for lst in config.listeners), default=30.0),
        "admin": config.admin.address if config.admin is not None else None,
        "layout": build_layout(config),
        "endpoints": tuple(endpoint_labels(config)),
        "features": frozenset(name for name, on in features.items() if on),
        "discovered": tuple(discovered_clusters(config)),
        "questions": dns_questions(config),
    }


def load_candidate(config_file: str, access_log: str | None, workers: int | None) -> Prepared:
    """Read and validate ``config_file`` for a reload, with ``serve``'s flags."""
    import hashlib
    from pathlib import Path

    from backhaul.config.load import load_bytes, read_config_bytes

    raw = read_config_bytes(config_file)
    cfg = load_bytes(raw, config_file, str(Path(config_file).absolute().parent))
    if not cfg.listeners:
        raise ConfigError(
            config_file,
            [("listeners", "found none: a reload cannot remove every listener of a running edge")],
        )
    return prepare(apply_access_log(cfg, access_log), workers, hashlib.sha256(raw).hexdigest())


def describe_error(exc: BaseException) -> str:
    """An error as ``backhaul check`` prints it (a config error: the file, then one line
    per problem with its config path)."""
    if isinstance(exc, ConfigError):
        lines = [f"{exc.source}: {len(exc.problems)} problem(s); the running config stays"]
        lines += [f"  {path or '<top>'}: {message}" for path, message in exc.problems]
        return "\n".join(lines)
    if isinstance(exc, BackhaulError):
        return f"{exc}; the running config stays"
    return f"cannot prepare the config ({type(exc).__name__}: {exc}); the running config stays"


def main(argv: list[str] | None = None) -> int:
    """The child's entry point (see the module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    opts = dict(zip(args[::2], args[1::2], strict=False))
    fd = int(opts["--result-fd"])
    workers = opts.get("--workers")
    try:
        prepared = load_candidate(
            opts["--config"], opts.get("--access-log"), int(workers) if workers else None
        )
        answer = Candidate(prepared)
    except Exception as exc:  # every failure becomes the answer: the supervisor logs it
        answer = Candidate(None, describe_error(exc))
    data = pickle.dumps(answer, protocol=5)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return 0


if __name__ == "__main__":
    # Run the imported module, not __main__: the answer's classes are pickled under their
    # own module's name, so any supervisor entry (edge.supervisor, admin.supervise) reads it.
    from backhaul.edge import candidate

    sys.exit(candidate.main())
