"""The supervisor stays small (issue 7: RSS of all processes with 10,000 idle connections):
a plain edge's supervisor imports no config classes, no typing, no dataclasses (and so no
inspect, ast, dis), no pathlib, no asyncio and no ssl. Its memory is counted once for itself
and is the start of every worker it forks."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

from backhaul.config import load_text
from backhaul.edge.candidate import Prepared, prepare

CONFIG = """
access_log: {enabled: false}
listeners: [{name: main, address: "127.0.0.1:0"}]
routes:
  - {name: up, match: {prefix: /}, proxy: {cluster: up}}
clusters:
  up: {endpoints: ["127.0.0.1:9", "127.0.0.2:9"]}
"""

HEAVY = (
    "asyncio",
    "backhaul.config",
    "backhaul.edge.runtime_config",
    "backhaul.edge.settings",
    "dataclasses",
    "datetime",
    "hashlib",
    "inspect",
    "pathlib",
    "pydantic",
    "ssl",
    "typing",
    "uvloop",
)

# The supervisor as `backhaul serve` execs it, up to (not including) its first fork: the
# entry module, the prepared config unpickled, its generation's shared memory and listening
# sockets, its run files.
BUILD = """
import pickle, sys
import backhaul.admin.supervise
from backhaul.admin.process import LAUNCHER
from backhaul.edge.supervisor import _Supervisor

prepared = pickle.loads(sys.stdin.buffer.read())
supervisor = _Supervisor(prepared, config_file=None, launcher=LAUNCHER)
supervisor._write_runfiles()
assert supervisor.current.size == 1 and supervisor.admin is None and supervisor.tls is None
print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in %r)))
"""


def test_a_plain_edge_supervisor_imports_nothing_heavy(tmp_path: Path) -> None:
    prepared = prepare(load_text(CONFIG), 1)
    code = BUILD % (HEAVY,)
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps(prepared, protocol=5),
        capture_output=True,
        check=False,
        timeout=60,
        env={**os.environ, "BACKHAUL_RUN_DIR": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == "[]"
    assert len(list(tmp_path.glob("edge-*.status.json"))) == 1  # it did write its run files


def test_prepared_carries_what_the_supervisor_reads() -> None:
    prepared = prepare(load_text(CONFIG), 2)
    again = pickle.loads(pickle.dumps(prepared, protocol=5))
    assert isinstance(again, Prepared) and again == prepared
    assert [(name, str(address)) for name, address in prepared.listeners] == [
        ("main", "127.0.0.1:0")
    ]
    assert prepared.workers == 2 and prepared.admin is None and prepared.features == frozenset()
    assert prepared.layout is not None and prepared.layout.endpoints == (
        ("127.0.0.1:9", "127.0.0.2:9"),
    )
    assert prepared.endpoints == (("up", "127.0.0.1:9", False), ("up", "127.0.0.2:9", False))
    with_admin = prepare(load_text(CONFIG + 'admin: {address: "127.0.0.1:0"}\n'), 1)
    assert with_admin.features == frozenset({"admin"}) and with_admin.admin is not None


# A worker of that config, started as the supervisor starts one (without the fork).
WORKER = """
import pickle, sys
import uvloop
from backhaul.edge.settings import thaw
from backhaul.edge.worker import Worker

config = thaw(pickle.loads(sys.stdin.buffer.read()).settings)

async def main():
    worker = Worker(config)
    await worker.start()
    try:
        print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in %r)))
    finally:
        await worker.aclose()

uvloop.run(main())
"""

# What a worker without TLS, built-in origins or HTTP health checks has no use for.
WORKER_UNUSED = ("backhaul.config", "ctypes", "datetime", "difflib", "httptools", "pydantic")


def test_a_plain_edge_worker_loads_only_what_it_serves_with() -> None:
    prepared = prepare(load_text(CONFIG), 1)
    out = subprocess.run(
        [sys.executable, "-c", WORKER % (WORKER_UNUSED,)],
        input=pickle.dumps(prepared, protocol=5),
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == "[]"
