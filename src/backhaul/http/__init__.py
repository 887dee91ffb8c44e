"""HTTP/1.1 policy of the edge, sans-IO: framing validation, request targets, header rules,
problem+json errors.

The edge's data plane (``backhaul.edge.datapath``) calls, per request: :func:`parse_target`
on the URL, :func:`inspect_request_head` on the header lines, and applies the header rules
of :mod:`backhaul.http.headers` in one pass to write upstream; per upstream response it uses
:func:`inspect_response_head` for framing it cannot decide on its fast path; and
:func:`problem_response` for every error the edge answers itself. Each raises
:class:`~backhaul.errors.RemoteProtocolError` (with ``status_hint``) for bad peer input.
"""

from backhaul.http.head import (
    RequestFacts,
    ResponseFacts,
    inspect_request_head,
    inspect_response_head,
)
from backhaul.http.headers import HOP_BY_HOP, encode_head
from backhaul.http.problem import REASONS, problem_response
from backhaul.http.target import Target, parse_target

__all__ = [
    "HOP_BY_HOP",
    "REASONS",
    "RequestFacts",
    "ResponseFacts",
    "Target",
    "encode_head",
    "inspect_request_head",
    "inspect_response_head",
    "parse_target",
    "problem_response",
]
