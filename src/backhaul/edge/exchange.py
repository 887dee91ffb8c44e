"""One request and its response as they cross the edge.

An :class:`Exchange` is created by the downstream driver when a request head is complete. It
acts on the matched route (proxy, redirect, direct response), and for a proxy it holds the
upstream connection, streams the request body up and the response body down with
backpressure both ways, and writes the access-log line when both directions are done.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import TYPE_CHECKING

from backhaul.balance import CONNECT_FAILURE, RESET, TIMEOUT
from backhaul.errors import ConnectError, ConnectTimeout, RemoteProtocolError
from backhaul.http import REASONS, encode_head, forward_response_headers, problem_response
from backhaul.http.relay import relay_request_head, relay_response_head, status_line

if TYPE_CHECKING:
    from backhaul.edge.cluster import Endpoint
    from backhaul.edge.downstream import HttpConnection
    from backhaul.edge.routing import CompiledRoute
    from backhaul.edge.upstream import UpstreamConnection
    from backhaul.http import RequestFacts
    from backhaul.http.target import Target

__all__ = ["Exchange"]

PAUSE_UPSTREAM = 2  # mirrors downstream.PAUSE_UPSTREAM (kept local to avoid an import cycle)

EX_NONE = 0
EX_RESPONSE_HEADERS = 1
EX_BODY_IDLE = 2

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CHUNK_END = b"0\r\n\r\n"
_CRLF = b"\r\n"
_NO_BODY_METHODS = frozenset((b"HEAD",))


class Exchange:
    """A request/response pair on one downstream connection."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "chunk_overhead",
        "chunked_out",
        "chunks",
        "conn",
        "connect_task",
        "deadline",
        "deadline_kind",
        "early",
        "endpoint",
        "facts",
        "finished",
        "head_sent",
        "hash",
        "headers",
        "holds_request",
        "in_try",
        "interim",
        "keep_alive",
        "mark_body",
        "mark_head",
        "method",
        "read_to_close",
        "request_done",
        "replayable",
        "request_id",
        "request_id_foreign",
        "response_done",
        "retried",
        "retry_held",
        "retry_timer",
        "route",
        "set_cookie",
        "started",
        "start_time",
        "status",
        "target",
        "tried",
        "tries",
        "try_start",
        "upstream",
        "upstream_start",
        "upstream_time",
        "worker",
    )

    def __init__(
        self,
        conn: HttpConnection,
        method: bytes,
        target: Target,
        facts: RequestFacts,
        headers: list[tuple[bytes, bytes]],
        route: CompiledRoute | None,
    ) -> None:
        self.conn = conn
        worker = conn.worker
        self.worker = worker
        self.method = method
        self.target = target
        self.facts = facts
        self.headers = headers
        self.route = route
        self.start_time = perf_counter()
        self.request_id: bytes | None = None
        self.request_id_foreign = False  # the client's (may need escaping in logs)
        self.started = False
        self.request_done = False
        self.response_done = False
        self.finished = False
        self.head_sent = False
        self.interim = False
        self.read_to_close = False
        self.chunked_out = False
        self.keep_alive = facts.keep_alive
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.upstream: UpstreamConnection | None = None
        self.endpoint: Endpoint | None = None
        self.early: list[bytes] | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.deadline = 0.0
        self.deadline_kind = EX_NONE
        self.upstream_start = 0.0
        self.upstream_time: float | None = None
        self.retried = False
        self.tries = 0
        self.tried: list[Endpoint] | None = None
        self.in_try = False
        self.try_start = 0.0
        self.hash: bytes | None = None
        self.holds_request = False
        self.retry_held = 0
        self.retry_timer: asyncio.TimerHandle | None = None
        self.replayable = True
        self.set_cookie: bytes | None = None
        self.chunks = 0
        self.chunk_overhead = 0
        self.mark_body = 0
        self.mark_head = 0

    # -- starting -----------------------------------------------------------------------
    def start(self) -> None:
        """Act on the route. Called when this exchange's turn to answer has come."""
        self.started = True
        route = self.route
        facts = self.facts
        if route is None:
            self.respond_error(
                404,
                f"no route matches host '{facts.host}' and path '{self.target.path}'",
            )
            return
        limit = route.body_limit
        if limit is not None and facts.content_length is not None and facts.content_length > limit:
            self.respond_error(
                413,
                f"the request body of {facts.content_length} bytes is larger than the limit "
                f"of {limit} bytes for route '{route.name}'",
            )
            return
        kind = route.kind
        if kind == "proxy":
            cluster = route.cluster
            if not cluster.breakers.requests.try_acquire():
                self.respond_error(503, cluster.breakers.requests.overflow_detail(cluster.name))
                return
            self.holds_request = True
            if facts.expect_continue and not self.request_done:
                self.conn_write(_CONTINUE)
            self.replayable = not (facts.content_length or facts.chunked)
            if cluster.hash_key is not None:
                self.hash = cluster.hash_key.extract(
                    self.conn.client_ip, self.target.path, self.headers
                )
            sticky = cluster.sticky
            if sticky is not None:
                endpoint, reset = cluster.balancer.pick_sticky(
                    sticky.token(self.headers), self.hash
                )
                if endpoint is not None and reset:
                    self.set_cookie = sticky.set_cookie(endpoint.token)
            else:
                endpoint = cluster.balancer.pick(self.hash)
            if endpoint is None:
                cluster.stats.no_healthy += 1
                self.respond_error(503, cluster.describe_unhealthy())
                return
            self.try_endpoint(endpoint)
        elif kind == "redirect":
            self.respond_redirect()
        else:
            self.respond_direct()

    # -- tries ----------------------------------------------------------------------------
    def try_endpoint(self, endpoint: Endpoint) -> None:
        """Send the request to ``endpoint``: one try, paired started()/finished()."""
        cluster = endpoint.cluster
        self.endpoint = endpoint
        upstream = endpoint.acquire_nowait()
        if upstream is None:
            breakers = cluster.breakers
            if not breakers.connections.try_acquire():
                self.respond_error(503, breakers.connections.overflow_detail(cluster.name))
                return
            if not breakers.pending.try_acquire():
                breakers.connections.release()
                self.respond_error(503, breakers.pending.overflow_detail(cluster.name))
                return
        self.tries += 1
        cluster.balancer.started(endpoint)
        self.in_try = True
        self.try_start = perf_counter()
        if upstream is not None:
            self.attach(upstream)
        else:
            self.connect(endpoint)

    def end_try(self, outcome: int) -> None:
        """The current try ended with ``outcome`` (a status or CONNECT_FAILURE/RESET/TIMEOUT)."""
        if self.in_try:
            self.in_try = False
            endpoint = self.endpoint
            assert endpoint is not None
            cluster = endpoint.cluster
            events = cluster.balancer.finished(
                endpoint, self.worker.loop.time(), outcome, perf_counter() - self.try_start
            )
            if events:
                cluster.log_events(events)

    def try_failed(self, outcome: int, status: int, detail: str) -> None:
        """A try failed before a response head was relayed: retry, or answer ``status``."""
        self.end_try(outcome)
        if self.finished:
            return
        if not self.head_sent and self.retry_scheduled(outcome):
            return
        label = self.endpoint.label if self.endpoint is not None else None
        self.respond_error(status, detail, upstream=label)

    def retry_scheduled(self, outcome: int) -> bool:
        """Whether the policy, the budget and the cluster allow another try (on another
        endpoint); if so it is scheduled after the backoff."""
        route = self.route
        endpoint = self.endpoint
        if route is None or endpoint is None:
            return False
        cluster = endpoint.cluster
        decision = route.retry_policy.decide(
            self.method.decode("latin-1"), self.tries, outcome, replayable=self.replayable
        )
        if not decision.retry:
            return False
        if not cluster.retry_budget.try_acquire(cluster.breakers.requests.active):
            cluster.stats.budget_exhausted += 1
            return False
        if self.tried is None:
            self.tried = [endpoint]
        elif endpoint not in self.tried:
            self.tried.append(endpoint)
        nxt = cluster.balancer.pick_excluding(self.tried, self.hash)
        if nxt is None:
            cluster.retry_budget.release()
            return False
        self.retry_held += 1
        cluster.stats.retries += 1
        self.tried.append(nxt)
        delay = route.retry_policy.backoff(self.tries, cluster.rng.random)
        self.conn.pause(PAUSE_UPSTREAM)
        self.retry_timer = self.worker.loop.call_later(delay, self._retry, nxt)
        return True

    def _retry(self, endpoint: Endpoint) -> None:
        self.retry_timer = None
        if not self.finished and self.conn.transport is not None:
            self.try_endpoint(endpoint)

    def release_slots(self) -> None:
        """Give back the circuit-breaker request slot and the retry-budget slots."""
        route = self.route
        if route is None or route.cluster is None:
            return
        cluster = route.cluster
        if self.holds_request:
            self.holds_request = False
            cluster.breakers.requests.release()
        while self.retry_held:
            self.retry_held -= 1
            cluster.retry_budget.release()
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None

    def connect(self, endpoint: Endpoint) -> None:
        """Open a new connection to ``endpoint`` (its breaker slots are already held)."""
        self.conn.pause(PAUSE_UPSTREAM)
        self.connect_task = self.worker.loop.create_task(self._connect(endpoint))

    async def _connect(self, endpoint: Endpoint) -> None:
        breakers = endpoint.cluster.breakers
        connected = False
        try:
            upstream = await endpoint.wait_connected(self.worker.loop)
            connected = True
        except ConnectTimeout as exc:
            self.connect_task = None
            self.try_failed(CONNECT_FAILURE, 504, str(exc))
            return
        except ConnectError as exc:
            self.connect_task = None
            self.try_failed(CONNECT_FAILURE, 502, str(exc))
            return
        finally:
            breakers.pending.release()
            if not connected:
                breakers.connections.release()
        upstream.counted = True
        self.connect_task = None
        if self.finished or self.conn.transport is None:
            upstream.close()
            return
        self.attach(upstream)

    def attach(self, upstream: UpstreamConnection) -> None:
        """Send the request head (and any body that arrived meanwhile) on ``upstream``."""
        self.upstream = upstream
        upstream.exchange = self
        route = self.route
        assert route is not None
        worker = self.worker
        facts = self.facts
        path = route.rewrite_path(self.target.path)
        query = self.target.query
        target = (path + "?" + query if query else path).encode()
        listener = self.conn.listener
        if self.request_id is None:
            self.request_id = worker.next_request_id()
        head = relay_request_head(
            self.method,
            target,
            self.headers,
            facts,
            client_ip=self.conn.client_ip,
            proto=listener.scheme,
            host_out=self.upstream_host(route, upstream),
            request_id=self.request_id if listener.request_id else None,
            x_forwarded=listener.x_forwarded,
            forwarded=listener.forwarded,
            via=worker.via,
        )
        tls = listener.tls  # TLS hook: RFC 9440 Client-Cert headers of a verified client
        if tls is not None and tls.forward_client_cert:
            head = head[:-2] + tls.client_cert_lines(self.conn.transport) + b"\r\n"
        early = self.early
        if early:
            self.early = None
            if facts.chunked:
                parts = [head]
                for chunk in early:
                    parts += (b"%x\r\n" % len(chunk), chunk, _CRLF)
                if self.request_done:
                    parts.append(_CHUNK_END)
                self.conn.send_upstream(upstream, parts)
            else:
                self.conn.send_upstream(upstream, [head, *early])
        elif facts.chunked and self.request_done:
            self.conn.send_upstream(upstream, (head, _CHUNK_END))
        else:
            self.conn.send_upstream(upstream, (head,))
        self.upstream_start = perf_counter()
        self.deadline = worker.loop.time() + route.try_timeout
        self.deadline_kind = EX_RESPONSE_HEADERS
        self.conn.resume(PAUSE_UPSTREAM)

    def upstream_host(self, route: CompiledRoute, upstream: UpstreamConnection) -> bytes | None:
        """The Host sent upstream: the route's rewrite, else the absolute-form authority,
        else the client's Host; a request that named no host (HTTP/1.0) gets the
        endpoint's address rather than an empty Host line."""
        if route.host_out is not None:
            return route.host_out
        if self.target.authority is not None:
            return self.target.authority
        if not self.facts.authority:
            return upstream.endpoint.address.encode()
        return None

    # -- the request body ------------------------------------------------------------------
    def request_body(self, chunk: bytes) -> None:
        self.bytes_in += len(chunk)
        route = self.route
        limit = route.body_limit if route is not None else None
        if limit is not None and self.bytes_in > limit:
            self.conn.reject(
                413,
                f"the request body is larger than the limit of {limit} bytes"
                + (f" for route '{route.name}'" if route is not None else ""),
            )
            return
        upstream = self.upstream
        if upstream is not None:
            if upstream.closed:
                return
            if self.facts.chunked:
                self.conn.send_upstream(upstream, (b"%x\r\n" % len(chunk), chunk, _CRLF))
            else:
                self.conn.send_upstream(upstream, (chunk,))
            if self.deadline_kind == EX_RESPONSE_HEADERS:
                self.deadline = self.worker.loop.time() + route.try_timeout  # type: ignore[union-attr]
        elif not self.response_done and (
            not self.started or (route is not None and route.kind == "proxy")
        ):
            # Not connected yet (or waiting for an earlier pipelined answer): hold the bytes.
            # Reading is paused meanwhile, so this holds at most one read's worth.
            if self.early is None:
                self.early = [chunk]
            else:
                self.early.append(chunk)
        # else: the answer was already decided without the body; the body is read and dropped.

    def request_end(self) -> None:
        self.request_done = True
        upstream = self.upstream
        if upstream is not None and self.facts.chunked and not upstream.closed:
            self.conn.send_upstream(upstream, (_CHUNK_END,))
        if self.response_done:
            self.finish()

    # -- the upstream response -------------------------------------------------------------
    def upstream_head(
        self,
        upstream: UpstreamConnection,
        status: int,
        version: str,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        if status < 200:
            if status == 101:
                self.upstream_failed(
                    upstream, "upstream endpoint switched protocols without being asked", False
                )
                return
            self.interim = True
            if status != 100 and self.facts.keep_alive and not self.head_sent:
                # 1xx informational (e.g. 103 Early Hints) is passed on to HTTP/1.1 clients.
                out = forward_response_headers(headers, None, via=None, server=None)
                self.conn_write(encode_head(status_line(status), out))
            return
        worker = self.worker
        route = self.route
        if (
            route is not None
            and status in route.retry_policy.statuses
            and not self.head_sent
            and self.retry_scheduled(status)
        ):
            self.end_try(status)
            self.upstream = None
            upstream.abort()
            return
        try:
            relay = relay_response_head(
                status,
                version,
                headers,
                self.method,
                via=worker.via,
                server=None,
                client_version=self.facts.version,
                keep_alive=self.keep_alive and not self.conn.closing and not worker.draining,
            )
        except RemoteProtocolError as exc:
            self.upstream_failed(upstream, exc.detail, False)
            return
        rf = relay.facts
        self.chunked_out = relay.chunked_out
        self.read_to_close = rf.until_close
        self.keep_alive = relay.keep_alive
        self.status = status
        self.head_sent = True
        head = relay.head
        tls = self.conn.listener.tls  # TLS hook: the route's Strict-Transport-Security
        if tls is not None and tls.hsts:
            head = tls.add_hsts(head, self.route)
        if self.set_cookie is None:
            self.conn.write(head)
        else:
            self.conn.write(head[:-2] + b"Set-Cookie: " + self.set_cookie + b"\r\n\r\n")
        self.deadline = worker.loop.time() + upstream.endpoint.cluster.body_idle
        self.deadline_kind = EX_BODY_IDLE
        if rf.no_body and status not in (204, 304):
            # A response to HEAD: llhttp cannot know it has no body, so restart its parser.
            upstream.reset_parser()
            self.upstream_end(upstream, rf.keep_alive)

    def facts_http11(self) -> bool:
        return self.facts.version == b"1.1"

    def upstream_body(self, chunk: bytes) -> None:
        conn = self.conn
        if conn.transport is None:
            return
        self.bytes_out += len(chunk)
        if self.chunked_out:
            conn.write_many((b"%x\r\n" % len(chunk), chunk, _CRLF))
        else:
            conn.write(chunk)
        self.deadline = self.worker.loop.time() + self.route.cluster.body_idle  # type: ignore[union-attr]

    def upstream_end(self, upstream: UpstreamConnection, keep_alive: bool) -> None:
        if self.interim:
            self.interim = False
            return
        if self.response_done:
            return
        self.response_done = True
        self.deadline_kind = EX_NONE
        self.end_try(self.status)
        if self.chunked_out:
            self.conn_write(_CHUNK_END)
        self.release_upstream(upstream, keep_alive and self.request_done)
        if self.request_done:
            self.finish()

    def release_upstream(self, upstream: UpstreamConnection, reusable: bool) -> None:
        self.upstream = None
        self.upstream_time = perf_counter() - self.upstream_start
        if reusable and not upstream.closed:
            upstream.endpoint.release(upstream, self.worker.loop.time())
        else:
            upstream.close()

    def upstream_failed(self, upstream: UpstreamConnection, detail: str, parse_error: bool) -> None:
        """The upstream broke the protocol: its connection is closed, never reused."""
        upstream.abort()
        self.upstream = None
        if self.head_sent:
            self.end_try(RESET)
            self.abort_downstream()
        else:
            label = upstream.endpoint.label
            self.try_failed(502, 502, f"upstream endpoint {label}: {detail}")

    def upstream_lost(self, upstream: UpstreamConnection) -> None:
        """The upstream connection closed while this exchange used it."""
        self.upstream = None
        label = upstream.endpoint.label
        if self.head_sent:
            if self.read_to_close:
                # The end of a read-until-close body.
                self.keep_alive = self.keep_alive and self.chunked_out
                self.read_to_close = False
                self.upstream_end(upstream, False)
            elif not self.response_done:
                self.end_try(RESET)
                self.abort_downstream()
            return
        facts = self.facts
        if (
            upstream.reused
            and not self.retried
            and not facts.chunked
            and not facts.content_length
            and not self.finished
        ):
            # A pooled connection the upstream had already closed: the same try goes on,
            # once, on a new connection to the same endpoint (not the endpoint's fault).
            self.retried = True
            breakers = upstream.endpoint.cluster.breakers
            if breakers.connections.try_acquire():
                if breakers.pending.try_acquire():
                    self.connect(upstream.endpoint)
                    return
                breakers.connections.release()
        self.try_failed(
            RESET, 502, f"upstream endpoint {label} closed the connection before responding"
        )

    # -- backpressure ----------------------------------------------------------------------
    def downstream_pause_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.pause_reading()

    def downstream_resume_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.resume_reading()

    def upstream_pause_writing(self) -> None:
        self.conn.pause(PAUSE_UPSTREAM)

    def upstream_resume_writing(self) -> None:
        self.conn.resume(PAUSE_UPSTREAM)

    # -- direct answers --------------------------------------------------------------------
    def respond_direct(self) -> None:
        route = self.route
        assert route is not None
        action = route.config.respond
        self.send_simple(action.status, route.respond_body, route.respond_content_type)

    def respond_redirect(self) -> None:
        route = self.route
        assert route is not None
        action = route.config.redirect
        location = action.to.replace("{path}", self.target.path).replace(
            "{query}", self.target.query
        )
        self.send_simple(action.status, b"", None, [(b"Location", location.encode())])

    def send_simple(
        self,
        status: int,
        body: bytes,
        content_type: bytes | None,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        worker = self.worker
        if not self.request_done and (self.facts.content_length or self.facts.chunked):
            # Answering before the body arrived: close afterwards rather than read it all.
            self.keep_alive = False
        keep_alive = self.keep_alive and not worker.draining and not self.conn.closing
        out: list[tuple[bytes, bytes]] = []
        if worker.server_header:
            out.append((b"Server", worker.server_header))
        if content_type is not None:
            out.append((b"Content-Type", content_type))
        if extra:
            out += extra
        out.append((b"Content-Length", b"%d" % len(body)))
        if not keep_alive:
            out.append((b"Connection", b"close"))
        elif not self.facts_http11():
            out.append((b"Connection", b"keep-alive"))
        self.keep_alive = keep_alive
        self.status = status
        self.head_sent = True
        head = encode_head(b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"")), out)
        tls = self.conn.listener.tls  # TLS hook: the route's Strict-Transport-Security
        if tls is not None and tls.hsts:
            head = tls.add_hsts(head, self.route)
        if self.method in _NO_BODY_METHODS:
            self.conn_write(head)
        else:
            self.conn_write(head + body)
            self.bytes_out += len(body)
        self.response_done = True
        if self.request_done or not keep_alive:
            self.finish()

    def respond_error(self, status: int, detail: str, upstream: str | None = None) -> None:
        """Answer with an RFC 9457 problem (if no head was sent yet) and close."""
        if self.finished:
            return
        if self.head_sent:
            self.abort_downstream()
            return
        worker = self.worker
        worker.stats.errors += 1
        keep_alive = (
            status == 404
            and self.keep_alive
            and (self.request_done or not (self.facts.content_length or self.facts.chunked))
            and not worker.draining
        )
        if self.request_id is None:
            self.request_id = worker.next_request_id()
        data = problem_response(
            status,
            detail,
            request_id=self.request_id.decode(),
            close=not keep_alive,
            server=worker.server_header,
            head_only=self.method in _NO_BODY_METHODS,
        )
        self.keep_alive = keep_alive
        self.status = status
        self.head_sent = True
        self.response_done = True
        # bytes_out counts body bytes (like nginx's $body_bytes_sent and Envoy's BYTES_SENT)
        self.bytes_out += len(data) - data.index(b"\r\n\r\n") - 4
        self.conn_write(data)
        if upstream is not None and self.endpoint is not None:
            self.upstream_time = perf_counter() - self.start_time
        if self.request_done or not keep_alive:
            self.finish()

    def conn_write(self, data: bytes) -> None:
        self.conn.write(data)

    # -- ending ------------------------------------------------------------------------
    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.deadline_kind = EX_NONE
        self.worker.log_exchange(self)
        if self.upstream is not None:
            self.release_upstream(self.upstream, False)
        self.end_try(self.status)
        self.release_slots()
        self.conn.exchange_done(self, self.keep_alive)

    def abort_downstream(self) -> None:
        """Cut the client connection: the response cannot be completed correctly."""
        self.keep_alive = False
        if not self.finished:
            self.finished = True
            self.worker.stats.errors += 1
            self.worker.log_exchange(self)
        self.end_try(RESET)
        self.release_slots()
        self.conn.abort()

    def downstream_lost(self) -> None:
        """The client went away: drop the upstream side (it cannot be reused mid-exchange)."""
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.abort()
        if not self.finished:
            self.finished = True
            if not self.response_done:
                self.status = self.status or 499
            self.worker.log_exchange(self)
        self.end_try(499)
        self.release_slots()

    def abandon(self) -> None:
        """Drop this exchange without logging (the connection is being rejected)."""
        self.finished = True
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        if self.upstream is not None:
            self.upstream.abort()
            self.upstream = None
        self.end_try(RESET)
        self.release_slots()

    def on_deadline(self, now: float) -> None:
        kind = self.deadline_kind
        self.deadline_kind = EX_NONE
        label = self.endpoint.label if self.endpoint is not None else "?"
        if kind == EX_RESPONSE_HEADERS:
            upstream = self.upstream
            if upstream is not None:
                upstream.abort()
                self.upstream = None
            timeout = self.route.try_timeout if self.route is not None else 0
            self.try_failed(
                TIMEOUT,
                504,
                f"upstream endpoint {label} sent no response headers within {timeout:g}s",
            )
        elif kind == EX_BODY_IDLE:
            upstream = self.upstream
            if upstream is not None:
                upstream.abort()
                self.upstream = None
            self.end_try(TIMEOUT)
            self.abort_downstream()
