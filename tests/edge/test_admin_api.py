"""The admin API of a running edge (its control process), over real loopback sockets: the
admin port bound once, health checks run once per machine, the merged cluster view, the
OpenAPI document (validated, and every documented operation answering as documented), the
bearer token, and config validation answering what `backhaul check --json` prints."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate as validate_openapi

from tests.edge.harness import BACKHAUL, Edge, RawUpstream, Upstream, free_port, wait_port
from tests.edge.waiting import HeldUpstream, wait_log, wait_until

TOKEN = "s3cret-token-4b1d"


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=40)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def get_json(port: int, path: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, _, body = call(port, "GET", path, headers=headers)
    assert status == 200, (path, status, body)
    return json.loads(body)


def edge_config(endpoints: list[str], admin_port: int, **admin: object) -> dict[str, object]:
    return {
        "admin": {"address": f"127.0.0.1:{admin_port}", **admin},
        "routes": [{"name": "all", "match": {"prefix": "/"}, "proxy": {"cluster": "app"}}],
        "clusters": {"app": {"endpoints": endpoints}},
    }


def imported(modules: str, prefixes: tuple[str, ...]) -> list[str]:
    code = (
        f"import sys, {modules}\n"
        f"print(sorted(m for m in sys.modules if m.startswith({prefixes!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return list(json.loads(out.stdout.replace("'", '"')))


def test_workers_import_neither_the_admin_api_nor_pydantic() -> None:
    assert imported("backhaul.edge.worker", ("backhaul.admin", "pydantic")) == []
    # the supervisor (run by backhaul.admin.supervise) forks the control process without
    # loading what it runs
    lean = ("asyncio", "httptools", "pydantic", "backhaul.admin.api", "backhaul.admin.server")
    assert imported("backhaul.admin.supervise", lean) == []


def test_a_second_edge_on_the_same_admin_port_is_refused(tmp_path: Path) -> None:
    admin_port = free_port()
    with Upstream() as up, Edge(tmp_path, edge_config([up.address], admin_port)) as edge:
        wait_port(admin_port, proc=edge.proc)
        other = tmp_path / "other.yaml"
        config = edge_config([up.address], admin_port)
        config["listeners"] = [{"name": "main", "address": f"127.0.0.1:{free_port()}"}]
        other.write_text(yaml.safe_dump(config))
        second = subprocess.run(
            [*BACKHAUL, "serve", "-c", str(other), "--workers", "1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0
        assert "admin listener" in second.stderr and "already in use" in second.stderr
        # the first edge still answers its admin port, alone
        assert get_json(admin_port, "/version")["version"]


def test_health_checks_run_once_per_machine_and_take_an_endpoint_out_of_every_worker(
    tmp_path: Path,
) -> None:
    admin_port = free_port()
    failing = threading.Event()

    def respond(request: bytes) -> bytes:
        status = "503 Service Unavailable" if failing.is_set() else "200 OK"
        return f"HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode()

    with RawUpstream(respond) as a, Upstream() as b:
        config = edge_config([a.address, b.address], admin_port)
        config["clusters"]["app"]["health_checks"] = {  # type: ignore[index]
            "type": "http",
            "interval": "0.1s",
            "timeout": "1s",
            "healthy_threshold": 1,
            "unhealthy_threshold": 2,
            "http": {"path": "/probe"},
        }
        with Edge(tmp_path, config, workers=2) as edge:
            wait_port(admin_port, proc=edge.proc)

            def checked(n: int) -> dict[str, Any] | None:
                ep = get_json(admin_port, "/clusters/app")["endpoints"][0]
                return ep if ep["active_check"]["checks"] >= n else None

            ep = wait_until(lambda: checked(20), "20 probes of endpoint a")
            probes = sum(1 for r in a.requests if r.startswith(b"GET /probe "))
            checks = ep["active_check"]["checks"]
            # one checker: every probe the upstream saw is one result (one may be on its way);
            # a checker per worker would have sent about twice as many
            assert checks <= probes <= checks + 1, (checks, probes)
            assert ep["state"] == "healthy" and ep["workers_by_state"] == {"healthy": 2}

            failing.set()

            def out_everywhere() -> dict[str, Any] | None:
                ep = get_json(admin_port, "/clusters/app")["endpoints"][0]
                return ep if ep["workers_by_state"] == {"unhealthy": 2} else None

            ep = wait_until(out_everywhere, "both workers to take endpoint a out")
            assert ep["state"] == "unhealthy"
            assert ep["active_check"]["verdict"] == "unhealthy"
            assert ep["active_check"]["failures_in_a_row"] >= 2
            assert ep["active_check"]["last_reason"].startswith("status 503")
            wait_log(edge.stderr_path, f"health checks: app: {a.address} now unhealthy", 1)
            # new connections reach both workers: none of them sends a request to a
            before = sum(1 for r in a.requests if not r.startswith(b"GET /probe "))
            served = {json.loads(call(edge.port, "GET", "/x")[2])["upstream"] for _ in range(12)}
            assert served == {b.port}
            assert sum(1 for r in a.requests if not r.startswith(b"GET /probe ")) == before
            # each worker logged its own transition once; the checker its verdict once
            text = edge.stderr_path.read_text()
            assert text.count(f"endpoint {a.address} healthy -> unhealthy") == 2
            assert text.count(f"{a.address} now unhealthy") == 1


def test_clusters_sum_requests_in_flight_over_workers(tmp_path: Path) -> None:
    admin_port = free_port()
    with (
        HeldUpstream() as held,
        Edge(tmp_path, edge_config([held.address], admin_port), workers=2) as edge,
    ):
        wait_port(admin_port, proc=edge.proc)
        threads = [
            threading.Thread(target=call, args=(edge.port, "GET", "/slow"), daemon=True)
            for _ in range(6)
        ]
        for t in threads:
            t.start()
        wait_until(lambda: held.held == 6, "six requests held upstream")

        def six_in_flight() -> dict[str, Any] | None:
            ep = get_json(admin_port, "/clusters")["clusters"]["app"]["endpoints"][0]
            return ep if ep["in_flight"] == 6 else None

        ep = wait_until(six_in_flight, "six requests in flight in the merged view")
        pids = {str(p) for p in edge.worker_pids()}
        assert set(ep["in_flight_by_worker"]) == pids
        assert sum(ep["in_flight_by_worker"].values()) == 6
        view = get_json(admin_port, "/clusters")
        assert view["workers"] == 2 and view["clusters"]["app"]["workers"] == 2
        held.release()
        for t in threads:
            t.join(10)
        wait_until(
            lambda: get_json(admin_port, "/clusters/app")["endpoints"][0]["in_flight"] == 0,
            "the merged view to show none in flight",
        )


def test_a_killed_control_process_is_restarted(tmp_path: Path) -> None:
    admin_port = free_port()
    with Upstream() as up, Edge(tmp_path, edge_config([up.address], admin_port)) as edge:
        wait_port(admin_port, proc=edge.proc)
        first = get_json(admin_port, "/workers")["control_pid"]
        assert first == edge.control_pid()
        os.kill(first, signal.SIGKILL)
        wait_log(edge.stderr_path, f"control process {first} killed by SIGKILL; started")

        def answered_by_another() -> int | None:
            try:
                pid = int(get_json(admin_port, "/workers")["control_pid"])
            except OSError:
                return None
            return pid if pid != first else None

        assert wait_until(answered_by_another, "a new control process") == edge.control_pid()
        assert len(edge.worker_pids()) == 1  # the worker was left alone


# -- the document and its operations ------------------------------------------------------


def _examples(up: Upstream) -> dict[str, str]:
    return {"cluster": "app", "endpoint": up.address}


def test_openapi_document_validates_and_every_operation_answers_as_documented(
    tmp_path: Path,
) -> None:
    admin_port = free_port()
    with Upstream() as up, Edge(tmp_path, edge_config([up.address], admin_port)) as edge:
        wait_port(admin_port, proc=edge.proc)
        doc = get_json(admin_port, "/openapi.json")
        validate_openapi(doc)  # OpenAPI 3.1 (openapi-spec-validator)
        assert doc["openapi"] == "3.1.0"
        expected = {
            ("get", "/config"),
            ("post", "/config/validate"),
            ("post", "/config/reload"),
            ("get", "/clusters"),
            ("get", "/clusters/{cluster}"),
            ("post", "/clusters/{cluster}/endpoints/{endpoint}/drain"),
            ("post", "/clusters/{cluster}/endpoints/{endpoint}/restore"),
            ("get", "/listeners"),
            ("get", "/routes"),
            ("get", "/workers"),
            ("get", "/version"),
            ("get", "/metrics"),
            ("get", "/healthz"),
            ("get", "/openapi.json"),
            ("get", "/docs"),
        }
        found = {(m, p) for p, item in doc["paths"].items() for m in item}
        assert found == expected
        good = (tmp_path / f"edge-{edge.port}.yaml").read_bytes()
        bodies = {"/config/validate": good}
        params = _examples(up)
        for path, item in doc["paths"].items():
            for method, op in item.items():
                url = path.format(**params)
                status, headers, body = call(
                    admin_port,
                    method.upper(),
                    url,
                    body=bodies.get(path, b"" if method == "post" else None),
                    headers={"Content-Type": "application/yaml"} if path in bodies else None,
                )
                documented = op["responses"].get(str(status))
                assert documented is not None, (method, path, status, body[:300])
                media = headers["content-type"].split(";")[0]
                assert media in {m.split(";")[0] for m in documented["content"]}, (path, media)
                if media == "application/json":
                    json.loads(body)
        # the answers' shapes: the merged view and the others, by their schemas' fields
        schemas = doc["components"]["schemas"]
        for path, name in (
            ("/clusters", "ClustersView"),
            ("/workers", "WorkersView"),
            ("/listeners", "ListenersView"),
            ("/routes", "RoutesView"),
            ("/version", "VersionView"),
            ("/config", "ConfigView"),
        ):
            answer = get_json(admin_port, path)
            assert set(schemas[name]["required"]) <= set(answer), (path, answer)
        assert get_json(admin_port, "/routes")["routes"][0]["cluster"] == "app"
        listeners = get_json(admin_port, "/listeners")["listeners"]
        assert listeners[0]["address"] == f"127.0.0.1:{edge.port}"
        assert get_json(admin_port, "/clusters/app")["name"] == "app"
        status, headers, body = call(admin_port, "GET", "/docs")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b"openapi.json" in body and b"http://" not in body and b"https://" not in body


def test_errors_are_problem_json(tmp_path: Path) -> None:
    admin_port = free_port()
    with Upstream() as up, Edge(tmp_path, edge_config([up.address], admin_port)) as edge:
        wait_port(admin_port, proc=edge.proc)
        for method, path, status in (
            ("GET", "/nothing", 404),
            ("GET", "/clusters/nope", 404),
            ("POST", "/clusters/app/endpoints/10.9.9.9:1/drain", 404),
            ("DELETE", "/clusters", 405),
        ):
            got, headers, body = call(admin_port, method, path, body=b"" if method else None)
            assert got == status, (path, got, body)
            assert headers["content-type"] == "application/problem+json"
            problem = json.loads(body)
            assert problem["status"] == status and problem["title"] and problem["detail"]
        got, headers, _ = call(admin_port, "DELETE", "/clusters")
        assert headers["allow"] == "GET, HEAD"


def test_validate_answers_what_check_json_prints(tmp_path: Path) -> None:
    admin_port = free_port()
    with Upstream() as up, Edge(tmp_path, edge_config([up.address], admin_port)) as edge:
        wait_port(admin_port, proc=edge.proc)
        bad = tmp_path / "bad.yaml"
        bad.write_text(
            "listeners: [{address: 127.0.0.1:1}]\n"
            "routes: [{match: {prefix: /}, proxy: {cluster: nope}}]\n"
            "clusters: {app: {endpoints: [127.0.0.1:2, 127.0.0.1:2], policy: fastest}}\n"
        )
        check = subprocess.run(
            [*BACKHAUL, "check", "--json", str(bad)], capture_output=True, text=True, timeout=60
        )
        expected = json.loads(check.stdout)
        assert check.returncode == 2 and len(expected["problems"]) >= 2
        status, headers, body = call(
            admin_port, "POST", "/config/validate", bad.read_bytes(), {"Content-Type": "text"}
        )
        assert status == 422 and headers["content-type"] == "application/problem+json"
        answer = json.loads(body)
        assert answer["valid"] is False
        assert answer["problems"] == expected["problems"]
        good = (tmp_path / f"edge-{edge.port}.yaml").read_bytes()
        status, _, body = call(admin_port, "POST", "/config/validate", good)
        answer = json.loads(body)
        assert status == 200 and answer["valid"] is True and answer["problems"] == []
        assert answer["config"]["clusters"]["app"]["endpoints"][0]["address"] == up.address
        # a relative path is read next to the file the edge runs, as a reload would
        (tmp_path / "rel.token").write_text(TOKEN)
        candidate = yaml.safe_load(good)
        candidate["admin"]["token_file"] = "rel.token"
        with_token = yaml.safe_dump(candidate).encode()
        status, _, body = call(admin_port, "POST", "/config/validate", with_token)
        answer = json.loads(body)
        assert status == 200, answer
        assert answer["config"]["admin"]["token_file"] == str(tmp_path / "rel.token")
        # nothing was applied: the running config is the one it started with
        assert get_json(admin_port, "/config")["config"]["routes"][0]["name"] == "all"


def test_reload_through_the_api(tmp_path: Path) -> None:
    admin_port = free_port()
    with Upstream() as up, Edge(tmp_path, edge_config([up.address], admin_port)) as edge:
        wait_port(admin_port, proc=edge.proc)
        before = get_json(admin_port, "/workers")["control_pid"]
        config = yaml.safe_load(edge.config_path.read_text())
        config["routes"].insert(
            0, {"name": "hello", "match": {"path": "/hello"}, "respond": {"body": "hi\n"}}
        )
        edge.config_path.write_text(yaml.safe_dump(config))
        status, headers, body = call(admin_port, "POST", "/config/reload", b"")
        answer = json.loads(body)
        assert status == 200, answer
        assert answer["ok"] is True and answer["generation"] == 2
        # the new generation's control process answers from now on, on the same socket
        assert [r["name"] for r in get_json(admin_port, "/routes")["routes"]] == ["hello", "all"]
        assert get_json(admin_port, "/config")["generation"] == 2
        assert get_json(admin_port, "/workers")["control_pid"] != before
        assert call(edge.port, "GET", "/hello")[2] == b"hi\n"
        # a bad file changes nothing: 422 with what `backhaul check` says
        edge.config_path.write_text(edge.config_path.read_text() + "bogus: 1\n")
        status, headers, body = call(admin_port, "POST", "/config/reload", b"")
        answer = json.loads(body)
        assert status == 422 and headers["content-type"] == "application/problem+json"
        assert "bogus" in answer["detail"] and answer["generation"] == 2
        assert call(edge.port, "GET", "/hello")[2] == b"hi\n"


def test_a_reload_keeps_what_the_health_checker_found(tmp_path: Path) -> None:
    admin_port = free_port()

    def respond(request: bytes) -> bytes:
        return b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"

    with RawUpstream(respond) as a, Upstream() as b:
        config = edge_config([a.address, b.address], admin_port)
        config["clusters"]["app"]["health_checks"] = {  # type: ignore[index]
            "type": "http",
            "interval": "0.3s",
            "unhealthy_threshold": 2,
            "http": {"path": "/probe"},
        }
        with Edge(tmp_path, config, workers=2) as edge:
            wait_port(admin_port, proc=edge.proc)
            wait_until(
                lambda: (
                    get_json(admin_port, "/clusters/app")["endpoints"][0]["workers_by_state"]
                    == {"unhealthy": 2}
                ),
                "both workers to take endpoint a out",
            )
            checks = get_json(admin_port, "/clusters/app")["endpoints"][0]["active_check"]
            config["routes"].insert(  # type: ignore[attr-defined]
                0, {"name": "hello", "match": {"path": "/hello"}, "respond": {"body": "hi\n"}}
            )
            config["listeners"] = [{"name": "main", "address": f"127.0.0.1:{edge.port}"}]
            config["access_log"] = {"path": str(edge.log_path)}
            edge.config_path.write_text(yaml.safe_dump(config))
            assert call(admin_port, "POST", "/config/reload", b"")[0] == 200
            # the new workers and the new checker start from the results so far
            after = get_json(admin_port, "/clusters/app")["endpoints"][0]["active_check"]
            assert after["verdict"] == "unhealthy" and after["checks"] >= checks["checks"]
            served = {json.loads(call(edge.port, "GET", "/x")[2])["upstream"] for _ in range(12)}
            assert served == {b.port}
            assert not [r for r in a.requests if not r.startswith(b"GET /probe ")]


# -- the token ------------------------------------------------------------------------------


def test_bearer_token(tmp_path: Path) -> None:
    admin_port = free_port()
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    config = edge_config([], admin_port, token_file=str(token_file))
    with Upstream() as up:
        config["clusters"] = {"app": {"endpoints": [up.address]}}
        with Edge(tmp_path, config, workers=1) as edge:
            wait_port(admin_port, proc=edge.proc)
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                status, head, body = call(admin_port, "GET", "/clusters", headers=headers)
                assert status == 401, headers
                assert head["www-authenticate"].startswith("Bearer")
                assert head["content-type"] == "application/problem+json"
                assert json.loads(body)["status"] == 401
            status, _, _ = call(admin_port, "POST", "/clusters/app/endpoints/x/drain", b"")
            assert status == 401
            status, _, _ = call(admin_port, "GET", "/metrics")
            assert status == 401  # Prometheus sends the token (authorization.credentials_file)
            status, _, body = call(admin_port, "GET", "/healthz")  # load balancers' probes
            assert (status, body) == (200, b"ok\n")
            assert get_json(admin_port, "/clusters", TOKEN)["workers"] == 1
            status, _, _ = call(
                admin_port, "GET", "/metrics", headers={"Authorization": f"bearer {TOKEN}"}
            )
            assert status == 200
            doc = get_json(admin_port, "/openapi.json", TOKEN)
            validate_openapi(doc)
            assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
            assert doc["paths"]["/healthz"]["get"]["security"] == []
            assert "401" in doc["paths"]["/clusters"]["get"]["responses"]
            config_text = json.dumps(get_json(admin_port, "/config", TOKEN))
            assert TOKEN not in config_text and str(token_file) in config_text
        assert TOKEN not in edge.stderr_path.read_text()


def test_token_problems_are_check_errors(tmp_path: Path) -> None:
    base = "listeners: [{address: 127.0.0.1:8080}]\nroutes: [{respond: {body: x}}]\n"
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    cases = {
        "admin: {address: 0.0.0.0:9901}": ("admin.address", "not a loopback address"),
        "admin: {token_file: missing.token}": ("admin.token_file", "found no file"),
        f"admin: {{token_file: {empty}}}": ("admin.token_file", "is empty"),
        "admin: {token_env: BACKHAUL_TEST_NO_SUCH_TOKEN}": ("admin.token_env", "unset or empty"),
    }
    for admin, (path, words) in cases.items():
        file = tmp_path / "edge.yaml"
        file.write_text(base + admin + "\n")
        out = subprocess.run(
            [*BACKHAUL, "check", "--json", str(file)], capture_output=True, text=True, timeout=60
        )
        report = json.loads(out.stdout)
        assert out.returncode == 2 and not report["valid"], admin
        assert [p["path"] for p in report["problems"]] == [path], report
        assert words in report["problems"][0]["message"]
    # a token from the environment makes an address off loopback acceptable
    file.write_text(base + "admin: {address: 0.0.0.0:9901, token_env: BH_TEST_TOKEN}\n")
    out = subprocess.run(
        [*BACKHAUL, "check", "--json", str(file)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "BH_TEST_TOKEN": TOKEN},
    )
    assert out.returncode == 0, out.stdout
    assert TOKEN not in out.stdout


@pytest.mark.parametrize("public", [["healthz", "metrics"]])
def test_public_paths_are_configurable(tmp_path: Path, public: list[str]) -> None:
    admin_port = free_port()
    with Upstream() as up:
        config = edge_config([up.address], admin_port, token_env="BH_ADMIN_TOKEN", public=public)
        os.environ["BH_ADMIN_TOKEN"] = TOKEN
        try:
            with Edge(tmp_path, config) as edge:
                wait_port(admin_port, proc=edge.proc)
                assert call(admin_port, "GET", "/metrics")[0] == 200
                assert call(admin_port, "GET", "/workers")[0] == 401
        finally:
            del os.environ["BH_ADMIN_TOKEN"]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node (scripts/sysdeps.sh)")
def test_docs_page_lists_every_operation_and_tries_one(tmp_path: Path) -> None:
    admin_port = free_port()
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN)
    config = edge_config([], admin_port, token_file=str(token_file))
    with Upstream() as up:
        config["clusters"] = {"app": {"endpoints": [up.address]}}
        with Edge(tmp_path, config) as edge:
            wait_port(admin_port, proc=edge.proc)
            page = Path(__file__).with_name("docs_page.js")
            out = subprocess.run(
                ["node", str(page), f"http://127.0.0.1:{admin_port}", TOKEN],
                capture_output=True,
                text=True,
                timeout=60,
            )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["refused"] == "openapi.json answered 401: enter the token and press Load."
    assert seen["about"].startswith("backhaul admin API")
    assert len(seen["operations"]) == 15
    assert any("POST /config/validate" in op for op in seen["operations"])
    assert seen["answer"].startswith("200 OK") and '"uptime_seconds"' in seen["answer"]
    assert seen["fields"] == ["cluster", "endpoint"]
    assert seen["schemas"] >= 10


def test_a_worker_without_a_supervisor_checks_its_endpoints_itself() -> None:
    import asyncio

    from backhaul.config import load_text
    from backhaul.edge.settings import freeze, thaw
    from backhaul.edge.worker import Worker

    dead = free_port()  # nothing listens there
    text = f"""
listeners: [{{address: 127.0.0.1:{free_port()}}}]
routes: [{{match: {{prefix: /}}, proxy: {{cluster: app}}}}]
access_log: {{enabled: false}}
clusters:
  app:
    endpoints: [127.0.0.1:{dead}]
    health_checks: {{type: tcp, interval: 0.05s, unhealthy_threshold: 1}}
"""
    config = thaw(freeze(load_text(text)))

    async def run() -> str:
        worker = Worker(config, asyncio.get_running_loop())
        await worker.start()
        try:
            ep = worker.clusters["app"].endpoints[0]
            async with asyncio.timeout(10):
                while ep.state.value == "healthy":
                    await asyncio.sleep(0.02)
            return str(ep.state.value)
        finally:
            await worker.aclose()

    assert asyncio.run(run()) == "unhealthy"
