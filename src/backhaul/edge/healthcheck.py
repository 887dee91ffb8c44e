"""Active health checks: one task per endpoint of a cluster that has ``health_checks``.

The schedule (:class:`~backhaul.balance.CheckSchedule`) and the judgment
(:class:`~backhaul.balance.HttpCheck`) are policy; this module only connects, sends and
reads, each step within the check's timeout, and hands the verdict to ``report`` (by
default the cluster's balancer). A TCP check passes when the connection is accepted. An
HTTP check sends its request with ``Connection: close`` and reads the status (and, when the
check needs it, up to ``body_limit`` bytes of body) with httptools.

Who runs them: the edge's control process checks every endpoint written in the config, and
every endpoint it found through DNS, once for the whole machine and publishes the results in
shared memory (:mod:`backhaul.admin.checker`, :meth:`backhaul.edge.cluster.Cluster.
apply_checks`, :mod:`backhaul.edge.discovery`); a worker checks only what exists in it
alone: its built-in origins (and, without a supervisor, everything).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backhaul.edge.cluster import Cluster, Endpoint

__all__ = ["run_checks", "start_check", "wait_check"]


class _Response:
    """httptools callbacks collecting a status and a bounded body."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.body = bytearray()
        self.complete = False
        self.headers_done = False

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        room = self.limit - len(self.body)
        if room > 0:
            self.body += body[:room]

    def on_message_complete(self) -> None:
        self.complete = True


async def wait_check(cluster: Cluster, ep: Endpoint) -> tuple[bool, str]:
    """Run one check of ``ep``; returns (passed, reason)."""
    import httptools  # here: a worker whose clusters have no checks does not load it (RSS)

    schedule = cluster.check_schedule
    assert schedule is not None
    try:
        async with asyncio.timeout(schedule.timeout):
            tls = cluster.tls  # TLS hook: checks use the cluster's TLS
            reader, writer = await asyncio.open_connection(
                ep.host,
                ep.port,
                ssl=tls.context if tls is not None else None,
                server_hostname=tls.server_hostname(ep.host) if tls is not None else None,
            )
            try:
                problem = tls.check_peer(writer.transport) if tls is not None else None
                if problem is not None:  # TLS hook: tls.verify_name
                    return False, problem
                check = cluster.check
                if check is None:  # tcp
                    return True, "connected"
                writer.write(check.request(ep.address))
                result = _Response(check.body_limit)
                parser = httptools.HttpResponseParser(result)
                while not result.complete:
                    data = await reader.read(65536)
                    if not data:
                        break
                    parser.feed_data(data)
                    if result.headers_done and not check.needs_body:
                        break
                    if len(result.body) >= check.body_limit:
                        break
                if not result.headers_done:
                    return False, "no complete response head"
                verdict = check.judge(parser.get_status_code(), bytes(result.body))
                return verdict.passed, verdict.reason
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        return False, f"no answer within {schedule.timeout:g}s"
    except httptools.HttpParserError as exc:
        return False, f"invalid HTTP response ({exc})"
    except OSError as exc:
        return False, f"connect failed: {exc.strerror or exc}"


Report = Callable[["Endpoint", bool, str, float], None]
"""``report(endpoint, passed, reason, now)``: what to do with one check's result."""


def _to_balancer(cluster: Cluster) -> Report:
    def report(ep: Endpoint, passed: bool, reason: str, now: float) -> None:
        cluster.log_events(cluster.balancer.check_result(ep, passed, now, reason))

    return report


async def _check_loop(cluster: Cluster, ep: Endpoint, report: Report) -> None:
    loop = asyncio.get_running_loop()
    schedule = cluster.check_schedule
    assert schedule is not None
    rand = cluster.rng.random
    at = schedule.first(loop.time(), rand)
    while True:
        await asyncio.sleep(max(0.0, at - loop.time()))
        passed, reason = await wait_check(cluster, ep)
        now = loop.time()
        report(ep, passed, reason, now)
        at = schedule.next(now, ep.routable, rand)


def run_checks(
    cluster: Cluster, endpoints: Iterable[Endpoint] | None = None, report: Report | None = None
) -> None:
    """Start the check tasks of ``cluster`` (owned by it: ``cluster.cancel_checks()``), for
    ``endpoints`` (default: all of them), each result to ``report`` (default: the cluster's
    balancer)."""
    if cluster.check_schedule is None:
        return
    report = report if report is not None else _to_balancer(cluster)
    for ep in cluster.endpoints if endpoints is None else endpoints:
        start_check(cluster, ep, report)


def start_check(cluster: Cluster, ep: Endpoint, report: Report) -> asyncio.Task[None]:
    """Start the check task of one endpoint of ``cluster`` (which has ``health_checks``);
    owned by the cluster (``cluster.cancel_checks()``), returned so that the caller can
    stop this one alone."""
    task = asyncio.get_running_loop().create_task(_check_loop(cluster, ep, report))
    cluster.check_tasks.append(task)
    return task
