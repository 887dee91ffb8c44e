"""The admin control API: cluster state, and draining an endpoint at run time.

    GET  /clusters                                         this worker's view, as JSON
    POST /clusters/{cluster}/endpoints/{endpoint}/drain    no new requests; in-flight finish
    POST /clusters/{cluster}/endpoints/{endpoint}/restore  take requests again

``{endpoint}`` is the endpoint's label (``127.0.0.1:9001``, ``[::1]:9100`` percent-encoded
or not, ``builtin:web-1``). A drain is written to the shared endpoint control
(:mod:`backhaul.state.endpoint_control`) and every worker applies it on its next tick, so
the answer is ``202 Accepted``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

__all__ = ["control_actions"]


def _json(status: int, doc: Any) -> tuple[int, bytes]:
    return status, json.dumps(doc, indent=1).encode() + b"\n"


def _problem(status: int, detail: str) -> tuple[int, bytes]:
    return status, json.dumps({"detail": detail}).encode()


def control_actions(worker: Any) -> Any:
    """The ``actions(method, path)`` callable for :func:`~backhaul.admin.start_admin`."""

    def clusters_view() -> dict[str, Any]:
        control = worker.endpoint_control
        out: dict[str, Any] = {}
        for name, cluster in worker.clusters.items():
            endpoints = []
            for ep in cluster.endpoints:
                i = control.find(name, ep.label) if control is not None else None
                endpoints.append(
                    {
                        "endpoint": ep.label,
                        "state": getattr(ep.state, "value", str(ep.state)),
                        "routable": ep.routable,
                        "weight": ep.weight,
                        "in_flight": ep.in_flight,
                        "drain_requested": bool(i is not None and control.drain_wanted(i)),
                    }
                )
            out[name] = {
                "policy": cluster.balancer.policy,
                "panic": cluster.balancer.panic,
                "endpoints": endpoints,
            }
        return {"worker_pid": worker.pid, "clusters": out}

    def actions(method: bytes, path: bytes) -> tuple[int, bytes] | None:
        text = path.decode("latin-1")
        if text in ("/clusters", "/clusters/"):
            if method not in (b"GET", b"HEAD"):
                return _problem(405, "/clusters answers GET")
            return _json(200, clusters_view())
        parts = text.strip("/").split("/")
        if len(parts) != 5 or parts[0] != "clusters" or parts[2] != "endpoints":
            return None
        cluster, label, verb = unquote(parts[1]), unquote(parts[3]), parts[4]
        if verb not in ("drain", "restore"):
            return None
        if method != b"POST":
            return _problem(405, f"{verb} is a POST")
        control = worker.endpoint_control
        if cluster not in worker.clusters:
            return _problem(404, f"no cluster '{cluster}'; GET /clusters lists them")
        i = control.find(cluster, label) if control is not None else None
        if i is None:
            return _problem(
                404, f"cluster '{cluster}' has no endpoint '{label}'; GET /clusters lists them"
            )
        control.set_drain(i, verb == "drain")
        return _json(
            202,
            {
                "cluster": cluster,
                "endpoint": label,
                "drain": verb == "drain",
                "detail": "every worker applies it within half a second",
            },
        )

    return actions
