"""Real TLS clients for the tests: openssl s_client, curl and Python's ssl, against the edge
on loopback. Every call has a timeout."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from tests.edge.harness import Edge, free_port


def s_client(port: int, *args: str, data: bytes = b"") -> str:
    """``openssl s_client`` output (stdout and stderr) for one connection."""
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
        input=data,
        capture_output=True,
        timeout=20,
    )
    return (result.stdout + result.stderr).decode(errors="replace")


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True, timeout=20
    )


class Handshake(NamedTuple):
    """What a Python ssl connection learned: its session, whether it resumed one, the
    server certificate (DER)."""

    session: ssl.SSLSession | None
    reused: bool
    cert: bytes | None


def tls_get(
    port: int,
    context: ssl.SSLContext,
    server_name: str | None = "localhost",
    path: str = "/",
    session: ssl.SSLSession | None = None,
) -> tuple[bytes, Handshake]:
    """One request with Python's ssl on a new connection: the response bytes and what the
    handshake gave."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = context.wrap_socket(raw, server_hostname=server_name, session=session)
    with tls:
        cert = tls.getpeercert(binary_form=True)
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        # After the reads: a TLS 1.3 ticket arrives after the handshake.
        shake = Handshake(tls.session, tls.session_reused, cert)
    return data, shake


def peer_subject(output: str) -> str:
    """The CN of the certificate an ``s_client`` output shows."""
    found = re.search(r"subject=.*?CN ?= ?([^,\n]+)", output)
    return found.group(1).strip() if found else ""


def metrics(port: int) -> dict[str, float]:
    """``/metrics`` of the admin listener: series (with labels) → value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``condition`` until it returns something true, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.05)


def upstream_headers(body: bytes) -> dict[str, str]:
    """Headers the test upstream saw (it echoes them as JSON)."""
    if body.startswith(b"HTTP/"):
        body = body.replace(b"\r\n", b"\n").partition(b"\n\n")[2]
    payload = body
    info = json.loads(payload)
    return {k.lower(): v for k, v in info["headers"]}


@contextmanager
def tls_edge(
    tmp: Path, listeners: list[dict[str, object]], workers: int = 1, **config: object
) -> Iterator[tuple[Edge, list[int], int]]:
    """The edge with ``listeners`` (their addresses filled in: free loopback ports) and an
    admin listener; yields (edge, listener ports, admin port)."""
    ports = [free_port() for _ in listeners]
    admin = free_port()
    full = {
        "listeners": [
            {"name": f"l{i}", **lst, "address": f"127.0.0.1:{port}"}
            for i, (lst, port) in enumerate(zip(listeners, ports, strict=True))
        ],
        "admin": {"address": f"127.0.0.1:{admin}"},
        **config,
    }
    edge = Edge(tmp, full, workers=workers)
    edge.port = ports[0]
    with edge:
        yield edge, ports, admin
