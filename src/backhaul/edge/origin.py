"""Built-in demo origin: an in-process HTTP/1.1 server that says which endpoint answered.

The embedded default config points its demo cluster at two of these, so ``curl
localhost:8080/`` goes through the real proxy path (pool, forwarding headers, streaming) with
nothing else installed. Each answers every request with a short text naming the endpoint and
echoing the request line, the Host and the size of the body it read.
"""

from __future__ import annotations

import asyncio

import httptools

__all__ = ["EchoOrigin", "start_echo_origin"]


class EchoOrigin(asyncio.Protocol):
    """One connection to a demo endpoint."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.host = b""
        self.body_size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.host = b""
        self.body_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"host":
            self.host = value

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)

    def on_message_complete(self) -> None:
        transport = self.transport
        if transport is None:
            return
        parser = self.parser
        method = parser.get_method()
        version = parser.get_http_version()
        body = (
            f"demo endpoint {self.name} answered\n"
            f"request: {method.decode()} {self.url.decode('latin-1')} HTTP/{version}\n"
            f"host: {self.host.decode('latin-1')}\n"
            f"body bytes read: {self.body_size}\n"
        ).encode()
        keep_alive = parser.should_keep_alive()
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"X-Demo-Endpoint: %s\r\nContent-Length: %d\r\n%s\r\n"
            % (
                self.name.encode(),
                len(body),
                b"" if keep_alive else b"Connection: close\r\n",
            )
        )
        transport.write(head if method == b"HEAD" else head + body)
        if not keep_alive:
            transport.close()


async def start_echo_origin(name: str) -> tuple[asyncio.Server, int]:
    """Start a demo endpoint on an ephemeral loopback port; returns the server and port."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: EchoOrigin(name), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port
