"""The HTTP/1.1 data plane, end to end: real edge process, real upstream, real clients."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import time

import pytest

from tests.edge.harness import Edge, exchange, parse_responses


def get(edge: Edge, target: str, *headers: str, method: str = "GET", body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{edge.port}", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return exchange(edge.port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def one(data: bytes) -> tuple[int, dict[str, str], bytes]:
    responses = parse_responses(data)
    assert len(responses) == 1, data[:500]
    return responses[0]


def echoed(body: bytes) -> dict[str, object]:
    info = json.loads(body)
    info["h"] = {k.lower(): v for k, v in info["headers"]}
    return info


def test_proxies_with_forwarding_headers(edge: Edge) -> None:
    status, headers, body = one(get(edge, "/hello?a=1&b=2", "X-Forwarded-For: 10.9.8.7"))
    assert status == 200
    info = echoed(body)
    assert info["path"] == "/hello?a=1&b=2"
    h = info["h"]
    assert h["x-forwarded-for"] == "10.9.8.7, 127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-host"] == f"127.0.0.1:{edge.port}"
    assert h["host"] == f"127.0.0.1:{edge.port}"
    assert h["via"] == "1.1 backhaul"
    assert len(h["x-request-id"]) >= 16
    assert "connection" not in h or h["connection"].lower() != "close"
    assert headers["via"] == "1.1 backhaul"


def test_hop_by_hop_and_connection_named_headers_are_removed(edge: Edge) -> None:
    status, _, body = one(
        get(
            edge,
            "/hop",
            "Keep-Alive: timeout=5",
            "X-Secret: drop-me",
            "X-Keep: keep-me",
            "Connection: X-Secret, x-forwarded-for",
            "TE: trailers",
            "Proxy-Connection: keep-alive",
        )
    )
    assert status == 200
    h = echoed(body)["h"]
    assert "x-secret" not in h
    assert h["x-keep"] == "keep-me"
    assert "keep-alive" not in h and "te" not in h and "proxy-connection" not in h
    # Connection may name a header but cannot strip the one the edge adds itself.
    assert h["x-forwarded-for"] == "127.0.0.1"


def test_client_request_id_is_kept(edge: Edge) -> None:
    _, _, body = one(get(edge, "/rid", "X-Request-Id: abc-123"))
    assert echoed(body)["h"]["x-request-id"] == "abc-123"


def test_prefix_strip_and_rewrite(edge: Edge) -> None:
    _, _, body = one(get(edge, "/api/users/7?x=1"))
    assert echoed(body)["path"] == "/v1/users/7?x=1"


def test_direct_response_redirect_wildcard_and_header_match(edge: Edge) -> None:
    status, headers, body = one(get(edge, "/healthz"))
    assert (status, body) == (200, b"ok\n")
    assert headers["server"] == "backhaul"
    status, headers, _ = one(get(edge, "/old/page?q=1"))
    assert status == 301
    assert headers["location"] == "https://example.test/new/old/page"
    raw = exchange(edge.port, b"GET / HTTP/1.1\r\nHost: a.b.WILD.test\r\nConnection: close\r\n\r\n")
    assert one(raw)[0] == 202
    raw = exchange(
        edge.port,
        b"POST / HTTP/1.1\r\nHost: a.wild.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    assert one(raw)[0] == 404  # the wildcard route is GET only; nothing else matches a.wild.test
    assert one(get(edge, "/x", "X-Canary: 1"))[0] == 203
    assert one(get(edge, "/x", "X-Canary: 2"))[0] == 200


def test_no_route_is_404_problem_json(edge: Edge) -> None:
    raw = exchange(
        edge.port, b"GET /nothing HTTP/1.1\r\nHost: unknown.test\r\nConnection: close\r\n\r\n"
    )
    status, headers, body = one(raw)
    assert status == 404
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == 404
    assert "unknown.test" in problem["detail"]


def test_keepalive_and_pipelining_answer_in_order(edge: Edge) -> None:
    reqs = (
        b"".join(f"GET /p{i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() for i in range(5))
        + b"POST /p5 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\nabc"
        + (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    )
    responses = parse_responses(exchange(edge.port, reqs))
    assert [r[0] for r in responses] == [200] * 7
    paths = [echoed(r[2])["path"] for r in responses[:6]]
    assert paths == [f"/p{i}" for i in range(6)]
    assert echoed(responses[5][2])["body_bytes"] == 3
    assert responses[6][2] == b"ok\n"


def test_chunked_request_is_streamed_upstream(edge: Edge) -> None:
    body = b"".join(b"%x\r\n%s\r\n" % (n, b"z" * n) for n in (1, 100, 4096, 7)) + b"0\r\n\r\n"
    raw = (
        b"POST /chunky HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" + body
    )
    status, _, resp = one(exchange(edge.port, raw))
    assert status == 200
    info = echoed(resp)
    assert info["body_bytes"] == 1 + 100 + 4096 + 7
    assert info["body_sha256"] == hashlib.sha256(b"z" * (1 + 100 + 4096 + 7)).hexdigest()


def test_trailers_are_dropped_safely(edge: Edge) -> None:
    raw = (
        b"POST /trailers HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-Trailer: evil\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
        b"GET /after HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    responses = parse_responses(exchange(edge.port, raw))
    assert [r[0] for r in responses] == [200, 200]
    first = echoed(responses[0][2])
    assert first["body_bytes"] == 3
    assert "x-trailer" not in first["h"]
    assert first["h"]["x-forwarded-for"] == "127.0.0.1"
    assert echoed(responses[1][2])["path"] == "/after"


def test_framing_header_in_trailers_is_rejected(edge: Edge) -> None:
    raw = exchange(
        edge.port,
        b"POST /t HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nContent-Length: 99\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 400")


def test_chunked_response_and_http10_client(edge: Edge) -> None:
    status, headers, body = one(get(edge, "/chunked/5000"))
    assert status == 200
    assert headers.get("transfer-encoding") == "chunked"
    assert body == b"c" * 5000
    # An HTTP/1.0 client gets the body without chunked framing, ended by close.
    raw = exchange(edge.port, b"GET /chunked/3000 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower()
    assert rest == b"c" * 3000


def test_http10_keepalive(edge: Edge) -> None:
    raw = exchange(
        edge.port,
        b"GET /a HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"
        b"GET /b HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
    )
    responses = parse_responses(raw)
    assert [echoed(r[2])["path"] for r in responses] == ["/a", "/b"]
    assert responses[0][1]["connection"].lower() == "keep-alive"
    assert responses[1][1]["connection"].lower() == "close"


def test_head_keeps_content_length_and_connection_reusable(edge: Edge) -> None:
    raw = exchange(
        edge.port,
        b"HEAD /bytes/1234 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        b"GET /bytes/10 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: 1234" in head
    status, _, body = one(rest)
    assert (status, body) == (200, b"x" * 10)


def test_expect_100_continue(edge: Edge) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=3) as s:
        s.sendall(
            b"PUT /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        interim = s.recv(100)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"hello")
        rest = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
    status, _, body = one(rest)
    assert status == 200
    assert echoed(body)["body_bytes"] == 5


def test_expect_with_body_over_limit_is_413_without_continue(edge: Edge) -> None:
    raw = exchange(
        edge.port,
        b"PUT /small/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n"
        b"Expect: 100-continue\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 413")
    assert b"100 Continue" not in raw


def test_chunked_body_over_route_limit_is_413(edge: Edge) -> None:
    chunk = b"%x\r\n%s\r\n" % (600, b"a" * 600)
    raw = exchange(
        edge.port,
        b"POST /small/x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunk * 3
        + b"0\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 413"), raw[:200]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_real_curl_client(edge: Edge) -> None:
    out = subprocess.run(
        ["curl", "-sS", "-D", "-", "--data-binary", "@-", f"{edge.url}/curl?x=1"],
        input=b"q" * 70000,
        capture_output=True,
        timeout=10,
        check=True,
    ).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    info = echoed(body)
    assert info["body_bytes"] == 70000
    assert info["h"]["user-agent"].startswith("curl/")


def test_access_log_json_lines(edge: Edge) -> None:
    one(get(edge, "/logged?z=9", "X-Request-Id: log-me-1"))
    lines = edge.access_log(lambda x: x["target"] == "/logged?z=9")
    assert lines, "the request was not logged"
    line = lines[-1]
    assert line["status"] == 200
    assert line["method"] == "GET"
    assert line["client"] == "127.0.0.1"
    assert line["route"] == "default"
    assert str(line["upstream"]).startswith("127.0.0.1:")
    assert isinstance(line["duration"], float)
    assert line["upstream_time"] is not None
    assert line["request_id"] == "log-me-1"
    assert line["bytes_out"] > 0


def test_combined_log_format_and_rfc7239_forwarded(upstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import re
    import time as _time

    from tests.edge.harness import Edge as _Edge

    log = tmp_path / "combined.log"
    config = {
        "access_log": {"path": str(log), "format": "combined"},
        "routes": [{"name": "all", "proxy": {"cluster": "app"}}],
        "clusters": {"app": {"endpoints": [upstream.address]}},
    }
    with _Edge(tmp_path, config, listener={"forwarding": {"forwarded": True}}) as edge:
        raw = exchange(
            edge.port,
            b"GET /combined?x=1 HTTP/1.1\r\nHost: example.test\r\nUser-Agent: probe/1.0\r\n"
            b"Referer: http://ref.test/\r\nForwarded: for=192.0.2.1\r\nConnection: close\r\n\r\n",
        )
        deadline = _time.monotonic() + 5
        while _time.monotonic() < deadline and not (log.exists() and log.read_text()):
            _time.sleep(0.05)
    status, _, body = one(raw)
    assert status == 200
    h = echoed(body)["h"]
    assert h["forwarded"] == "for=192.0.2.1, for=127.0.0.1;host=example.test;proto=http"
    line = log.read_text().strip()
    assert re.fullmatch(
        r"127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "
        r'"GET /combined\?x=1 HTTP/1\.1" 200 \d+ "http://ref\.test/" "probe/1\.0"',
        line,
    ), line


def test_access_log_escapes_what_the_client_sent(edge: Edge) -> None:
    one(get(edge, '/esc?q="x"\\y', 'X-Request-Id: id"with\\quote'))
    lines = edge.access_log(lambda x: str(x["target"]).startswith("/esc"))
    assert lines, "the request was not logged"
    assert lines[-1]["target"] == '/esc?q="x"\\y'
    assert lines[-1]["request_id"] == 'id"with\\quote'


def test_http10_request_without_host_gets_the_endpoint_as_host_upstream(upstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.edge.harness import Edge as _Edge

    config = {
        "routes": [{"name": "all", "proxy": {"cluster": "app"}}],
        "clusters": {"app": {"endpoints": [upstream.address]}},
    }
    with _Edge(tmp_path, config) as edge:
        status, _, body = one(exchange(edge.port, b"GET /nohost HTTP/1.0\r\n\r\n"))
    assert status == 200
    assert echoed(body)["h"]["host"] == upstream.address


def test_bytes_out_counts_body_bytes_for_every_answer(edge: Edge) -> None:
    raw = exchange(
        edge.port, b"GET /bytes-404 HTTP/1.1\r\nHost: nowhere.test\r\nConnection: close\r\n\r\n"
    )
    status, _, body = one(raw)
    _, _, proxied = one(get(edge, "/bytes/777"))
    lines = {
        x["target"]: x
        for x in edge.access_log(
            lambda x: str(x["target"]).startswith(("/bytes-404", "/bytes/777")), 2
        )
    }
    assert status == 404
    assert lines["/bytes-404"]["bytes_out"] == len(body)
    assert lines["/bytes/777"]["bytes_out"] == len(proxied) == 777


def test_valid_requests_pipelined_before_a_bad_one_are_answered_first(edge: Edge) -> None:
    # nginx's behaviour: each complete request is answered in order, then the bad one gets
    # its 400 and the connection closes.
    host = f"Host: 127.0.0.1:{edge.port}"
    good = f"GET /first HTTP/1.1\r\n{host}\r\n\r\nGET /second HTTP/1.1\r\n{host}\r\n\r\n"
    bad = f"GET /bad HTTP/1.1\r\nHost : x\r\n\r\nGET /never HTTP/1.1\r\n{host}\r\n\r\n"
    responses = parse_responses(exchange(edge.port, (good + bad).encode()))
    assert [r[0] for r in responses] == [200, 200, 400]
    assert json.loads(responses[0][2])["path"] == "/first"
    assert json.loads(responses[1][2])["path"] == "/second"
    assert "connection" not in responses[0][1]  # the first answers keep the connection
    assert responses[2][1]["content-type"] == "application/problem+json"
    assert responses[2][1]["connection"] == "close"


def test_redirect_template_with_query_leaves_no_bare_question_mark(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = {
        "routes": [
            {
                "name": "moved",
                "match": {"prefix": "/m/"},
                "redirect": {"to": "https://new.test{path}?{query}", "status": 308},
            }
        ],
        "clusters": {},
    }
    with Edge(tmp_path, config) as edge:
        status, headers, _ = one(get(edge, "/m/a"))
        assert status == 308
        assert headers["location"] == "https://new.test/m/a"
        _, headers, _ = one(get(edge, "/m/b?x=1&y=2"))
        assert headers["location"] == "https://new.test/m/b?x=1&y=2"


def test_answers_the_edge_makes_itself_carry_a_date(edge: Edge) -> None:
    # RFC 9110 6.6.1: an origin of a response (here the edge) with a clock sends Date.
    from email.utils import parsedate_to_datetime

    before = int(time.time())
    direct = one(get(edge, "/healthz"))
    refused = one(get(edge, "/x", "Host: second.invalid"))  # two Host lines: 400
    after = int(time.time())
    assert (direct[0], refused[0]) == (200, 400)
    for _, headers, _ in (direct, refused):
        stamp = int(parsedate_to_datetime(headers["date"]).timestamp())
        assert before <= stamp <= after
        assert headers["date"].endswith(" GMT")


def test_route_header_edits_reach_upstream_and_client(upstream: object, edge_tmp: object) -> None:
    """A route's ``headers:`` filter: set/remove on the request sent upstream and on the
    response sent back, for proxied answers and for the route's own answers."""
    edits = {
        "request": {"set": {"X-Env": "prod"}, "remove": ["X-Debug"]},
        "response": {"set": {"Cache-Control": "no-store"}, "remove": ["Via"]},
    }
    config = {
        "routes": [
            {
                "name": "own",
                "match": {"path": "/own"},
                "respond": {"body": "own\n"},
                "headers": edits,
            },
            {
                "name": "edited",
                "match": {"prefix": "/"},
                "proxy": {"cluster": "app"},
                "headers": edits,
            },
        ],
        "clusters": {"app": {"endpoints": [upstream.address]}},  # type: ignore[attr-defined]
    }
    with Edge(edge_tmp, config) as edge:  # type: ignore[arg-type]
        status, headers, body = one(get(edge, "/x", "X-Debug: 1", "X-Env: dev", "X-Keep: k"))
        own_status, own_headers, own_body = one(get(edge, "/own"))
    assert status == 200
    info = echoed(body)
    h = info["h"]
    assert [v for k, v in info["headers"] if k.lower() == "x-env"] == ["prod"]  # replaced
    assert "x-debug" not in h and h["x-keep"] == "k"
    assert headers["cache-control"] == "no-store" and "via" not in headers
    assert (own_status, own_body) == (200, b"own\n")
    assert own_headers["cache-control"] == "no-store"
