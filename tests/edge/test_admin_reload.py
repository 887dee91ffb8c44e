"""``POST /config/reload`` against the supervisor's reload status: the admin API sends
SIGHUP to the supervisor and answers with the outcome of the attempt it caused.

The supervisor here is this test process: its SIGHUP handler records an outcome in a real
:class:`~backhaul.state.reload_status.ReloadStatus` (shared memory), as the edge's supervisor
does at the end of a reload attempt. The admin API runs on a real loopback socket.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from backhaul.admin import api
from backhaul.admin.api import AdminState, ControlApi
from backhaul.admin.server import AdminServer, serve_admin
from backhaul.config import load_text
from backhaul.edge.settings import freeze, thaw
from backhaul.state.endpoint_control import EndpointControl, endpoint_labels
from backhaul.state.reload_status import ReloadStatus
from backhaul.state.shared_counters import SharedCounters, build_layout
from tests.edge.test_admin_api import call

CONFIG = """
listeners: [{name: main, address: 127.0.0.1:18080}]
routes: [{name: all, match: {prefix: /}, proxy: {cluster: app}}]
clusters: {app: {endpoints: [127.0.0.1:18090]}}
admin: {address: 127.0.0.1:19901}
"""


@pytest.fixture
def served() -> Iterator[Callable[[ReloadStatus | None], int]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers: list[AdminServer] = []
    settings = thaw(freeze(load_text(CONFIG)))

    def serve(status: ReloadStatus | None) -> int:
        state = AdminState(
            settings,
            EndpointControl(endpoint_labels(settings), 1),
            SharedCounters(build_layout(settings), 1),
            supervisor_pid=os.getpid(),
            started_unix=time.time(),
            reload_status=status,
        )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        server = asyncio.run_coroutine_threadsafe(
            serve_admin(sock, ControlApi(state)), loop
        ).result(5)
        servers.append(server)
        return server.port

    yield serve
    for server in servers:
        asyncio.run_coroutine_threadsafe(server.aclose(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture
def on_sighup() -> Iterator[Callable[[Callable[[], None]], None]]:
    previous = signal.getsignal(signal.SIGHUP)

    def install(action: Callable[[], None]) -> None:
        signal.signal(signal.SIGHUP, lambda signum, frame: action())

    yield install
    signal.signal(signal.SIGHUP, previous)


def post_reload(port: int) -> tuple[int, dict[str, str], Any]:
    status, headers, body = call(port, "POST", "/config/reload", b"")
    return status, headers, json.loads(body)


def test_reload_answers_the_new_generation(
    served: Callable[[ReloadStatus | None], int],
    on_sighup: Callable[[Callable[[], None]], None],
) -> None:
    status = ReloadStatus(digest="a" * 64)
    port = served(status)

    def reload_ok() -> None:
        status.set_generation(2)
        status.record(True, "", "b" * 64, time.time())

    on_sighup(reload_ok)
    code, headers, answer = post_reload(port)
    assert code == 200 and headers["content-type"] == "application/json"
    assert answer["ok"] is True and answer["generation"] == 2 and answer["digest"] == "b" * 64
    assert answer["attempts"] == 1
    config = json.loads(call(port, "GET", "/config")[2])
    assert (config["generation"], config["digest"]) == (2, "b" * 64)


def test_a_refused_config_is_422_with_the_error(
    served: Callable[[ReloadStatus | None], int],
    on_sighup: Callable[[Callable[[], None]], None],
) -> None:
    status = ReloadStatus(digest="a" * 64)
    port = served(status)
    error = "edge.yaml: 1 problem(s) in the config\n  clusters.app.policy: found 'fastest'"
    on_sighup(lambda: status.record(False, error, None, time.time()))
    code, headers, answer = post_reload(port)
    assert code == 422 and headers["content-type"] == "application/problem+json"
    assert "clusters.app.policy: found 'fastest'" in answer["detail"]
    assert answer["generation"] == 1
    assert json.loads(call(port, "GET", "/config")[2])["digest"] == "a" * 64


def test_no_answer_from_the_supervisor_is_504(
    served: Callable[[ReloadStatus | None], int],
    on_sighup: Callable[[Callable[[], None]], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(api, "RELOAD_DEADLINE", 0.3)
    port = served(ReloadStatus())
    on_sighup(lambda: None)  # a supervisor that never finishes the attempt
    code, _, answer = post_reload(port)
    assert code == 504 and "did not finish the reload" in answer["detail"]


def test_without_reload_support_it_is_503(served: Callable[[ReloadStatus | None], int]) -> None:
    code, _, answer = post_reload(served(None))
    assert code == 503 and "restart it" in answer["detail"]
