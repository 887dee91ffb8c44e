"""A route's ``compress:`` filter end to end: the edge as a process in front of a real
upstream, read by real ``curl --compressed`` and by raw sockets decoded with Python's gzip."""

from __future__ import annotations

import base64
import gzip
import hashlib
import random
import socket
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.edge.harness import BACKHAUL, Edge, parse_responses

MIB = 1 << 20


def text(n: int) -> bytes:
    """``n`` bytes of line-numbered text: compressible, and any lost or reordered piece
    shows in the digest."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += b"%08d the edge compresses what the route says it may\n" % i
        i += 1
    return bytes(out[:n])


PRECOMPRESSED = gzip.compress(text(5000))
RANDOM_TEXT = base64.b64encode(random.Random(5).randbytes(36 * MIB))  # 48 MiB, shrinks ~25%
WRITTEN = {"random": 0}  # how much of RANDOM_TEXT the upstream has written so far


class _Origin(BaseHTTPRequestHandler):
    """The upstream: text with a Content-Length or chunked, and the special cases."""

    protocol_version = "HTTP/1.1"
    server_version = "origin"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        kind, _, arg = path.strip("/").partition("/")
        if kind == "random":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(RANDOM_TEXT)))
            self.end_headers()
            WRITTEN["random"] = 0
            for i in range(0, len(RANDOM_TEXT), 64 * 1024):
                self.wfile.write(RANDOM_TEXT[i : i + 64 * 1024])
                WRITTEN["random"] = i + 64 * 1024
            return
        if kind == "chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if self.command == "HEAD":
                return
            body = text(int(arg))
            at, size = 0, 1000  # chunks of varied sizes
            while at < len(body):
                piece = body[at : at + size]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                at += len(piece)
                size = size * 2 if size < 64 * 1024 else 1000
            self.wfile.write(b"0\r\n\r\n")
            return
        headers: dict[str, str] = {"Content-Type": "text/plain; charset=utf-8"}
        status = 200
        if kind == "text":
            body = text(int(arg))
            headers["ETag"] = f'"t-{arg}"'
            headers["Accept-Ranges"] = "bytes"
        elif kind == "encoded":
            body = PRECOMPRESSED
            headers["Content-Encoding"] = "gzip"
        elif kind == "no-transform":
            body = text(5000)
            headers["Cache-Control"] = "public, no-transform"
        elif kind == "png":
            body = text(5000)
            headers["Content-Type"] = "image/png"
        elif kind == "etag":
            body = text(5000)
            headers["ETag"] = '"v7"'
            if self.headers.get("If-None-Match") in ('"v7"', 'W/"v7"'):
                status, body = 304, b""
        elif kind == "range":
            body = text(5000)[:100]
            status = 206
            headers["Content-Range"] = "bytes 0-99/5000"
        else:
            body, status = b"no such thing\n", 404
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD" or status == 304:
            return
        for i in range(0, len(body), 256 * 1024):
            self.wfile.write(body[i : i + 256 * 1024])

    do_HEAD = do_GET


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


OWN = "a route's own answer, long enough to be worth compressing. " * 10


@pytest.fixture(scope="module")
def edge(origin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    config = {
        "routes": [
            {
                "name": "own",
                "match": {"path": "/own"},
                "respond": {"body": OWN},
                "compress": {},
            },
            {
                "name": "plain",
                "match": {"prefix": "/plain/"},
                "proxy": {"cluster": "origin", "strip_prefix": "/plain"},
            },
            {
                "name": "fast",
                "match": {"prefix": "/fast/"},
                "proxy": {"cluster": "origin", "strip_prefix": "/fast"},
                "compress": {"types": ["text/*"], "min_length": "1KiB"},
            },
            {
                "name": "gz",
                "match": {"prefix": "/"},
                "proxy": {"cluster": "origin"},
                "compress": {"level": 6},
            },
        ],
        "clusters": {"origin": {"endpoints": [origin]}},
    }
    with Edge(tmp_path_factory.mktemp("compress"), config) as e:
        yield e


# -- clients ----------------------------------------------------------------------------


def curl(edge: Edge, target: str, tmp: Path, *args: str) -> tuple[dict[str, str], bytes]:
    """``curl --compressed``: the decoded body and the response headers as sent."""
    out, dump = tmp / "body", tmp / "headers"
    command = ["curl", "-sS", "--compressed", "--max-time", "20"]
    command += ["-o", str(out), "-D", str(dump), *args, edge.url + target]
    subprocess.run(
        command,
        check=True,
        timeout=30,
    )
    lines = dump.read_bytes().decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200"), lines[0]
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers, out.read_bytes()


def read_response(
    sock: socket.socket, buf: bytearray, head_only: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """One response from ``sock`` (what follows it stays in ``buf``): framed by its
    Content-Length, chunked, or by the end of the connection."""

    def more() -> bool:
        data = sock.recv(256 * 1024)
        buf.extend(data)
        return bool(data)

    while b"\r\n\r\n" not in buf:
        assert more(), bytes(buf)
    end = buf.index(b"\r\n\r\n") + 4
    lines = bytes(buf[: end - 4]).split(b"\r\n")
    del buf[:end]
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        assert name.decode().lower() not in headers, lines
        headers[name.decode().lower()] = value.decode().strip()
    if head_only or status in (204, 304):
        return status, headers, b""
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            assert more()
        body = bytes(buf[:n])
        del buf[:n]
        return status, headers, body
    if headers.get("transfer-encoding") == "chunked":
        body_parts = []
        while True:
            while b"\r\n" not in buf:
                assert more()
            line_end = buf.index(b"\r\n")
            size = int(bytes(buf[:line_end]), 16)
            while len(buf) < line_end + 2 + size + 2:
                assert more()
            body_parts.append(bytes(buf[line_end + 2 : line_end + 2 + size]))
            assert buf[line_end + 2 + size : line_end + 4 + size] == b"\r\n"
            del buf[: line_end + 4 + size]
            if size == 0:
                return status, headers, b"".join(body_parts)
    while more():
        pass
    body = bytes(buf)
    buf.clear()
    return status, headers, body


def request(target: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: edge.test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(edge: Edge) -> socket.socket:
    return socket.create_connection(("127.0.0.1", edge.port), timeout=10)


# -- tests --------------------------------------------------------------------------------


def test_curl_decodes_a_compressed_content_length_body(edge: Edge, tmp_path: Path) -> None:
    headers, body = curl(edge, "/text/300000", tmp_path)
    assert body == text(300_000)
    assert headers["content-encoding"] == "gzip"
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    assert headers["vary"] == "Accept-Encoding"
    assert headers["etag"] == 'W/"t-300000"'  # the bytes differ: weak (RFC 9110 8.8.1)
    assert "accept-ranges" not in headers


def test_curl_decodes_a_compressed_chunked_body(edge: Edge, tmp_path: Path) -> None:
    headers, body = curl(edge, "/chunked/500000", tmp_path)
    assert body == text(500_000)
    assert headers["content-encoding"] == "gzip"
    assert headers["transfer-encoding"] == "chunked"


def test_curl_decodes_a_compressed_route_answer(edge: Edge, tmp_path: Path) -> None:
    headers, body = curl(edge, "/own", tmp_path)
    assert body == OWN.encode()
    assert headers["content-encoding"] == "gzip"
    assert int(headers["content-length"]) < len(OWN) // 5  # framed by its new length


def test_a_large_streamed_body_arrives_intact(edge: Edge) -> None:
    """8 MiB through the compressor, read as it streams and decoded with Python's zlib."""
    size = 8 * MIB
    with connect(edge) as sock:
        sock.sendall(request(f"/text/{size}", "Accept-Encoding: gzip", "Connection: close"))
        buf = bytearray()
        status, headers, data = read_response(sock, buf)
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert len(data) < size // 10
    # The access log counts the bytes sent (compressed), as nginx's $body_bytes_sent.
    (line,) = edge.access_log(lambda x: x["target"] == f"/text/{size}")
    assert line["bytes_out"] == len(data)
    decoded = zlib.decompressobj(16 + 15)
    digest = hashlib.sha256()
    for i in range(0, len(data), 64 * 1024):
        digest.update(decoded.decompress(data[i : i + 64 * 1024]))
    digest.update(decoded.flush())
    assert decoded.eof and not decoded.unused_data
    assert digest.hexdigest() == hashlib.sha256(text(size)).hexdigest()


def test_backpressure_holds_while_compressing(edge: Edge) -> None:
    """A client that stops reading stops the upstream: the compressed pieces take the same
    output path and flow control as any body, so the edge does not read the 48 MiB ahead."""
    with connect(edge) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        sock.sendall(request("/fast/random", "Accept-Encoding: gzip", "Connection: close"))
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(4096)
        # Wait (bounded) until the upstream's writes stall: the socket buffers are full.
        deadline = time.monotonic() + 20
        seen, still = -1, 0
        while still < 10 and time.monotonic() < deadline:
            now = WRITTEN["random"]
            still = still + 1 if now == seen else 0
            seen = now
            time.sleep(0.05)
        assert still >= 10, "the upstream never stalled"
        assert WRITTEN["random"] < len(RANDOM_TEXT) // 2, WRITTEN["random"]
        # Read on: the whole body arrives, intact.
        buf = buf[buf.index(b"\r\n\r\n") + 4 :]
        decoded = zlib.decompressobj(16 + 15)
        out = hashlib.sha256()
        pending = bytes(buf)
        while True:
            size_line, sep, rest = pending.partition(b"\r\n")
            if sep and len(rest) >= int(size_line, 16) + 2:
                size = int(size_line, 16)
                if size == 0:
                    break
                out.update(decoded.decompress(rest[:size]))
                pending = rest[size + 2 :]
                continue
            chunk = sock.recv(1 << 20)
            assert chunk, "closed before the end of the body"
            pending += chunk
    out.update(decoded.flush())
    assert decoded.eof
    assert out.hexdigest() == hashlib.sha256(RANDOM_TEXT).hexdigest()


def test_keep_alive_after_a_compressed_response(edge: Edge) -> None:
    with connect(edge) as sock:
        buf = bytearray()
        for target in ("/text/100000", "/chunked/70000", "/png/x", "/text/100000"):
            sock.sendall(request(target, "Accept-Encoding: gzip"))
            status, headers, body = read_response(sock, buf)
            assert status == 200
            if target == "/png/x":
                assert "content-encoding" not in headers and body == text(5000)
            else:
                assert gzip.decompress(body) == text(int(target.rsplit("/", 1)[1]))
        assert not buf  # nothing stray between the responses
        # Two compressed answers pipelined in one write come back in order.
        sock.sendall(request("/text/3000", "Accept-Encoding: gzip") * 2)
        for _ in range(2):
            status, _, body = read_response(sock, buf)
            assert gzip.decompress(body) == text(3000)


def test_an_http10_client_gets_a_body_ended_by_close(edge: Edge) -> None:
    with connect(edge) as sock:
        sock.sendall(
            request(
                "/chunked/200000", "Accept-Encoding: gzip", "Connection: keep-alive", version="1.0"
            )
        )
        buf = bytearray()
        status, headers, body = read_response(sock, buf)
    assert status == 200
    assert headers["connection"] == "close" and "transfer-encoding" not in headers
    assert "content-length" not in headers
    assert gzip.decompress(body) == text(200_000)


def test_head_is_not_transformed(edge: Edge) -> None:
    with connect(edge) as sock:
        buf = bytearray()
        sock.sendall(request("/text/5000", "Accept-Encoding: gzip", method="HEAD"))
        status, headers, _ = read_response(sock, buf, head_only=True)
        assert status == 200
        assert headers["content-length"] == "5000" and "content-encoding" not in headers
        assert headers["etag"] == '"t-5000"'
        sock.sendall(request("/text/5000", "Accept-Encoding: gzip", "Connection: close"))
        status, headers, body = read_response(sock, buf)
    assert gzip.decompress(body) == text(5000)


def test_not_modified_is_not_transformed(edge: Edge) -> None:
    with connect(edge) as sock:
        buf = bytearray()
        sock.sendall(request("/etag", "Accept-Encoding: gzip", 'If-None-Match: W/"v7"'))
        status, headers, body = read_response(sock, buf)
        assert (status, body) == (304, b"")
        assert "content-encoding" not in headers and "transfer-encoding" not in headers
        sock.sendall(request("/etag", "Accept-Encoding: gzip", "Connection: close"))
        status, headers, body = read_response(sock, buf)
    assert status == 200 and headers["etag"] == 'W/"v7"'
    assert gzip.decompress(body) == text(5000)


@pytest.mark.parametrize(
    ("target", "expected", "vary"),
    [
        ("/encoded", PRECOMPRESSED, False),  # already content-coded: passed through as is
        ("/no-transform", text(5000), False),
        ("/png", text(5000), False),
        ("/range", text(5000)[:100], False),
    ],
)
def test_responses_passed_as_they_are(edge: Edge, target: str, expected: bytes, vary: bool) -> None:
    with connect(edge) as sock:
        sock.sendall(request(target, "Accept-Encoding: gzip", "Connection: close"))
        status, headers, body = read_response(sock, bytearray())
    assert status == (206 if target == "/range" else 200)
    assert body == expected
    assert headers["content-length"] == str(len(expected))
    assert ("vary" in headers) is vary
    assert headers.get("content-encoding") == ("gzip" if target == "/encoded" else None)


def test_negotiation_on_the_wire(edge: Edge) -> None:
    cases = {
        None: None,
        "identity": None,
        "gzip;q=0": None,
        "br, deflate": None,
        "gzip;q=0.4, identity;q=0.9": None,
        "x-gzip": "gzip",
        "*": "gzip",
        "deflate;q=1, gzip;q=0.2": "gzip",
    }
    with connect(edge) as sock:
        buf = bytearray()
        for accept, coding in cases.items():
            extra = [] if accept is None else [f"Accept-Encoding: {accept}"]
            sock.sendall(request("/text/2000", *extra))
            status, headers, body = read_response(sock, buf)
            assert status == 200
            assert headers.get("content-encoding") == coding, accept
            assert headers["vary"] == "Accept-Encoding"
            assert (gzip.decompress(body) if coding else body) == text(2000)


def test_a_route_without_compress_is_untouched(edge: Edge) -> None:
    raw = b""
    with connect(edge) as sock:
        sock.sendall(request("/plain/text/5000", "Accept-Encoding: gzip", "Connection: close"))
        while chunk := sock.recv(65536):
            raw += chunk
    ((status, headers, body),) = parse_responses(raw)
    assert (status, body) == (200, text(5000))
    assert "vary" not in headers and headers["etag"] == '"t-5000"'


def test_backhaul_check_refuses_bad_compress_values(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "listeners: [{name: main, address: '127.0.0.1:0'}]\n"
        "routes:\n"
        "  - name: r\n"
        "    respond: {}\n"
        "    compress: {level: 12, types: [html], encodings: [br], min_length: much}\n"
    )
    done = subprocess.run(
        [*BACKHAUL, "check", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done
    out = done.stdout + done.stderr
    assert "Traceback" not in out
    assert "routes[0].compress.level: found 12: expected a level from 1" in out
    assert "routes[0].compress.types: found 'html': expected a media type" in out
    assert "routes[0].compress.encodings[0]: found 'br': expected 'gzip'" in out
    assert "routes[0].compress.min_length: found 'much': expected a size" in out
