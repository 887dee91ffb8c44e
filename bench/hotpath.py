"""The edge's per-request Python cost, without sockets: ``python -m bench.hotpath``.

Drives the real downstream driver, exchange and upstream connection objects with in-memory
transports (one pooled upstream connection, a wrk-like GET and an nginx-like 13-byte
response) and prints microseconds of Python per proxied request. Use it with ``--profile``
to see where the time goes; it isolates what system calls and the event loop add on top.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from typing import Any

from backhaul.config import load_text
from backhaul.edge.datapath import HttpConnection, UpstreamConnection
from backhaul.edge.settings import freeze, thaw
from backhaul.edge.worker import Worker

CONFIG = """
access_log: {path: /dev/null}
listeners: [{name: main, address: "127.0.0.1:0"}]
routes:
%s
  - {name: bench, match: {prefix: /}, proxy: {cluster: up}}
clusters: {up: {endpoints: ["127.0.0.1:9"]}}
"""

REQUEST = b"GET /small.txt HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 28 Nov 2026 03:54:46 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\n"
    b"Last-Modified: Sat, 28 Nov 2026 03:50:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "6568a0a8-d"\r\nAccept-Ranges: bytes\r\n\r\nhello world!\n'
)


class MemoryTransport(asyncio.Transport):
    def __init__(self, peer: tuple[str, int]) -> None:
        super().__init__()
        self.peer = peer
        self.out: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.out.append(data)

    def writelines(self, parts: Any) -> None:
        self.out.extend(parts)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def routes(n: int) -> str:
    lines = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            lines.append(f"  - {{name: r{i}, match: {{host: h{i}.example.test}}, respond: {{}}}}")
        elif kind == 1:
            lines.append(f"  - {{name: r{i}, match: {{prefix: /p{i}/}}, respond: {{}}}}")
        else:
            lines.append(f"  - {{name: r{i}, match: {{regex: '/re{i}/[0-9]+'}}, respond: {{}}}}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--routes", type=int, default=19, help="routes before the benched one")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    config = thaw(freeze(load_text(CONFIG % routes(args.routes), "<bench>")))
    worker = Worker(config, loop)

    async def build() -> None:
        await worker.start()

    loop.run_until_complete(build())
    listener = worker.listeners[0]
    endpoint = worker.clusters["up"].endpoints[0]
    upstream = UpstreamConnection(endpoint)
    up_transport = MemoryTransport(("127.0.0.1", 9))
    upstream.connection_made(up_transport)
    endpoint.idle.append(upstream)
    down = HttpConnection(worker.context, listener)
    down_transport = MemoryTransport(("127.0.0.1", 40000))
    down.connection_made(down_transport)

    def run(n: int) -> None:
        for _ in range(n):
            down.data_received(REQUEST)
            upstream.data_received(RESPONSE)
            if len(down_transport.out) > 1000:
                down_transport.out.clear()
                up_transport.out.clear()
                worker.access_log.flush() if worker.access_log else None

    run(1000)
    assert b"hello world!" in down_transport.out[-1], down_transport.out[-3:]
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run(args.n)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    # CPU time of this process, not wall time: other work on the machine does not count.
    start = time.process_time()
    run(args.n)
    elapsed = time.process_time() - start
    print(f"{elapsed / args.n * 1e6:.2f} us of CPU per proxied request ({args.n} requests)")
    loop.run_until_complete(worker.aclose())
    loop.close()


if __name__ == "__main__":
    main()
