"""Test harness for the edge: a real upstream HTTP server, a misbehaving raw upstream, the
edge as a subprocess (`backhaul serve`), and a raw-socket client.

Everything listens on 127.0.0.1 at ports the kernel hands out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

BACKHAUL = [sys.executable, "-m", "backhaul"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


# -- a real upstream ------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "test-upstream"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(
        self, status: int, body: bytes, ctype: str = "application/json", **extra: str
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in extra.items():
            self.send_header(k.replace("_", "-"), v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_any(self) -> None:
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path.startswith("/sink"):
            # Read the body in pieces and report its size and digest (bounded memory).
            digest = hashlib.sha256()
            total = 0
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = self._body()
                digest.update(body)
                total = len(body)
            else:
                left = int(self.headers.get("Content-Length") or 0)
                while left:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    digest.update(chunk)
                    total += len(chunk)
                    left -= len(chunk)
            self._send(200, json.dumps({"bytes": total, "sha256": digest.hexdigest()}).encode())
            return
        body = self._body()
        if "delay" in q:
            time.sleep(float(q["delay"]))
        if url.path.startswith("/bytes/"):
            n = int(url.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            if self.command != "HEAD":
                block = b"x" * min(n, 1 << 20)
                left = n
                while left:
                    piece = block[: min(left, len(block))]
                    self.wfile.write(piece)
                    left -= len(piece)
            return
        if url.path.startswith("/chunked/"):
            n = int(url.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            left = n
            while left:
                piece = min(left, 1000)
                self.wfile.write(b"%x\r\n%s\r\n" % (piece, b"c" * piece))
                left -= piece
            self.wfile.write(b"0\r\n\r\n")
            return
        if url.path.startswith("/status/"):
            failing = getattr(self.server, "fail_health", False)
            self._send(503 if failing else int(url.path.rsplit("/", 1)[1]), b"{}")
            return
        info = {
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_bytes": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "upstream": self.server.server_address[1],
        }
        self._send(200, json.dumps(info).encode())

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_any


class _TrackingServer(ThreadingHTTPServer):
    """Remembers its accepted connections, so that ``kill`` can cut them all."""

    def get_request(self) -> tuple[socket.socket, object]:
        conn, addr = super().get_request()
        self.accepted.append(conn)  # type: ignore[attr-defined]
        return conn, addr


class Upstream:
    """A threaded HTTP/1.1 server on loopback (the stdlib's, a real independent peer)."""

    def __init__(self) -> None:
        self.server = _TrackingServer(("127.0.0.1", 0), _Handler)
        self.server.accepted = []  # type: ignore[attr-defined]
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def fail_health(self) -> bool:
        """While True, ``/status/*`` answers 503 (a failing health endpoint)."""
        return bool(getattr(self.server, "fail_health", False))

    @fail_health.setter
    def fail_health(self, value: bool) -> None:
        self.server.fail_health = value  # type: ignore[attr-defined]

    def __enter__(self) -> Upstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        """Die like a crashed process: stop listening and cut every open connection."""
        if getattr(self, "_killed", False):
            return
        self._killed = True
        self.server.shutdown()
        self.server.server_close()
        for conn in self.server.accepted:  # type: ignore[attr-defined]
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class RawUpstream:
    """A loopback server that answers each connection with ``respond(request_bytes)``."""

    def __init__(self, respond: Callable[[bytes], bytes | None], close: bool = True) -> None:
        self.respond = respond
        self.close_after = close
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.requests: list[bytes] = []
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
            except OSError:
                return
            self.requests.append(data)
            answer = self.respond(data)
            if answer:
                with contextlib.suppress(OSError):
                    conn.sendall(answer)
            if not self.close_after:
                with contextlib.suppress(OSError):
                    while conn.recv(65536):
                        pass

    def __enter__(self) -> RawUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self.sock.close()


# -- the edge -------------------------------------------------------------------------------
def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class Edge:
    """``backhaul serve`` as a subprocess with a generated config."""

    def __init__(
        self,
        tmp: Path,
        config: dict[str, object],
        workers: int = 1,
        listener: dict[str, object] | None = None,
    ) -> None:
        """``listener`` adds settings to the generated listener (limits, timeouts)."""
        self.port = free_port()
        self.tmp = tmp
        self.log_path = tmp / f"access-{self.port}.log"
        config = dict(config)
        main = {"name": "main", "address": f"127.0.0.1:{self.port}", **(listener or {})}
        config.setdefault("listeners", [main])
        config.setdefault("access_log", {"path": str(self.log_path)})
        self.config_path = tmp / f"edge-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = tmp / f"edge-{self.port}.err"

    def start(self) -> Edge:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*BACKHAUL, "serve", "-c", str(self.config_path), "--workers", str(self.workers)],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=env,
            start_new_session=True,
        )
        try:
            wait_port(self.port, proc=self.proc)
            # The supervisor listens before it forks; each worker says when it serves.
            deadline = time.monotonic() + 10
            while (
                b"backhaul: supervisor " not in self.stderr_path.read_bytes()
                or self.stderr_path.read_bytes().count(b" serving") < self.workers
            ):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("no supervisor line")
                time.sleep(0.02)
        except Exception:
            self.stop()
            raise RuntimeError(f"edge did not start: {self.stderr_path.read_text()}") from None
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def children(self) -> list[int]:
        """Every child of the supervisor: workers and the control process."""
        assert self.proc is not None
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()]

    def worker_pids(self) -> list[int]:
        return [p for p in self.children() if _comm(p) != "backhaul-ctl"]

    def control_pid(self) -> int | None:
        """The control process (admin API, health checks), if it runs."""
        found = [p for p in self.children() if _comm(p) == "backhaul-ctl"]
        return found[0] if found else None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._stderr.close()
        return self.proc.returncode

    def access_log(
        self,
        where: Callable[[dict[str, object]], bool] = lambda line: True,
        expect: int = 1,
        timeout: float = 5.0,
    ) -> list[dict[str, object]]:
        """The JSON access-log lines that satisfy ``where``, waiting (bounded) until at least
        ``expect`` of them arrived."""
        deadline = time.monotonic() + timeout
        lines: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            if self.log_path.exists():
                lines = [json.loads(x) for x in self.log_path.read_text().splitlines() if x]
                lines = [x for x in lines if where(x)]
                if len(lines) >= expect:
                    break
            time.sleep(0.05)
        return lines

    def __enter__(self) -> Edge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- a raw client ---------------------------------------------------------------------------
def exchange(port: int, data: bytes, timeout: float = 3.0, shut: bool = False) -> bytes:
    """Send raw bytes, read until the server closes (or ``timeout`` of silence)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except TimeoutError:
            pass
        return out


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream of HTTP/1.1 responses (Content-Length or chunked framed)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError(f"incomplete response head: {data[:200]!r}")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.decode().lower()] = v.decode().strip()
        if 100 <= status < 200:
            data = rest
            continue
        if "content-length" in headers:
            n = int(headers["content-length"])
            body, data = rest[:n], rest[n:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                if size == 0:
                    _, _, rest = rest.partition(b"\r\n")
                    break
                body += rest[:size]
                rest = rest[size + 2 :]
            data = rest
        else:
            body, data = rest, b""
        out.append((status, headers, body))
    return out


@contextlib.contextmanager
def running(*things: object) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for t in things:
            stack.enter_context(t)  # type: ignore[arg-type]
        yield
