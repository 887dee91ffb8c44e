"""The route table, compiled once per config: match (host, path, method, headers) → route.

Pure: no I/O. Routes are tried in config order and the first that matches wins. To keep the
per-request cost flat however many routes there are, the table is split by host at compile
time (exact hosts in a dict, wildcard and host-less routes kept in order), and each ordered
list is compiled into steps that run in C: string comparisons, and one combined pattern per
run of regex routes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from backhaul.http.filters import FilterChain, build_chain
from backhaul.http.redirect import RedirectTemplate, parse_redirect

__all__ = ["CompiledRoute", "RouteTable"]


# TLS hook: routes may match the verified client certificate (match.client_cert) through
# two pseudo-fields that edge/tls.py adds to the fields routing sees on mTLS listeners;
# clients cannot send them (llhttp refuses a field name that starts with ':').
CLIENT_CERT_FIELD = b":client-cert"
CLIENT_SUBJECT_FIELD = b":client-cert-subject"


def _client_cert_matches(cond: Any) -> list[tuple[bytes, str, Any]]:
    if cond is None:
        return []
    out: list[tuple[bytes, str, Any]] = []
    if cond.present is not None:
        out.append((CLIENT_CERT_FIELD, "present", bool(cond.present)))
    if cond.subject is not None:
        out.append((CLIENT_SUBJECT_FIELD, "regex", re.compile(cond.subject.encode())))
    return out


def _any_search(pattern: Any, values: list[bytes]) -> bool:
    """Whether ``pattern`` is found in any of the header ``values``."""
    return any(pattern.search(value) is not None for value in values)


class CompiledRoute:
    """One route with its match precompiled. ``action`` keeps the config's action object."""

    # Its fields are declared in routing.pxd (a C type once compiled).

    def __init__(self, index: int, route: Any, default_body_limit: int | None = None) -> None:
        self.index = index
        self.config = route
        self.name: str = route.name
        self.log_name = json.dumps(route.name)  # as it appears in JSON access-log lines
        match = route.match
        hosts = match.host
        if hosts is None:
            host_list: list[str] = []
        elif isinstance(hosts, str):
            host_list = [hosts]
        else:
            host_list = list(hosts)
        self.exact_hosts = frozenset(h.lower() for h in host_list if not h.startswith("*."))
        # "*.example.com" matches "a.example.com" and "a.b.example.com", not "example.com".
        self.wildcard_suffixes = tuple(h[1:].lower() for h in host_list if h.startswith("*."))
        self.path_exact: str | None = match.path
        self.path_prefix: str | None = match.prefix
        self.path_regex: re.Pattern[str] | None = (
            re.compile(match.regex) if match.regex is not None else None
        )
        self.methods: frozenset[bytes] | None = (
            frozenset(m.upper().encode() for m in match.methods) if match.methods else None
        )
        compiled_headers = []
        for hm in match.headers:
            name = hm.name.lower().encode()
            if hm.exact is not None:
                compiled_headers.append((name, "exact", hm.exact.encode()))
            elif hm.regex is not None:
                compiled_headers.append((name, "regex", re.compile(hm.regex.encode())))
            else:
                compiled_headers.append((name, "present", bool(hm.present)))
        compiled_headers += _client_cert_matches(getattr(match, "client_cert", None))  # TLS hook
        self.header_matches = tuple(compiled_headers)
        self.has_header_match = bool(compiled_headers)
        self.listeners = frozenset(route.listeners) if route.listeners else None
        self.cluster: Any = None  # the worker's runtime cluster, set when the table is built
        self.retry_policy: Any = None  # the route's or its cluster's RetryPolicy (set then too)
        self.retry_statuses: frozenset[int] = frozenset()  # its statuses (set then too)
        self.try_timeout = 0.0  # response-head deadline of one try (set then too)
        self.strip_prefix: str | None = None
        self.rewrite_root = "/"
        self.rewrite_base = ""
        self.host_out: bytes | None = None
        self.respond_body = b""
        self.respond_content_type = b""
        self.redirect: RedirectTemplate | None = None
        if route.proxy is not None:
            self.kind = "proxy"
            proxy = route.proxy
            self.strip_prefix = proxy.strip_prefix
            if proxy.rewrite_prefix:
                self.rewrite_root = proxy.rewrite_prefix
            self.rewrite_base = self.rewrite_root.rstrip("/")
            if proxy.host_rewrite:
                self.host_out = proxy.host_rewrite.encode()
        elif route.redirect is not None:
            self.kind = "redirect"
            self.redirect = parse_redirect(route.redirect.to)
        else:
            self.kind = "respond"
            self.respond_body = route.respond.body.encode()
            self.respond_content_type = route.respond.content_type.encode()
        # The route's filter chain (backhaul.http.filters), None without filters.
        self.filters: FilterChain | None = build_chain(route)
        limits = route.limits
        self.body_limit: int | None = (
            limits.body if limits is not None and limits.body is not None else default_body_limit
        )

    def rewrite_path(self, path: str) -> str:
        """The path sent upstream: ``strip_prefix`` replaced by ``rewrite_prefix``."""
        strip = self.strip_prefix
        if strip is None or not path.startswith(strip):
            return path
        rest = path[len(strip) :]
        if not rest:
            return self.rewrite_root
        return self.rewrite_base + "/" + rest.lstrip("/")

    def host_matches(self, host: str) -> bool:
        if not self.exact_hosts and not self.wildcard_suffixes:
            return True
        if host in self.exact_hosts:
            return True
        return host.endswith(self.wildcard_suffixes)  # a tuple: any of them

    def rest_matches(
        self, path: str, method: bytes, headers: Sequence[tuple[bytes, bytes]] | None
    ) -> bool:
        if self.path_exact is not None and path != self.path_exact:
            return False
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        if self.path_regex is not None and self.path_regex.fullmatch(path) is None:
            return False
        if self.methods is not None and method not in self.methods:
            return False
        if self.header_matches:
            if headers is None:
                return False
            for name, how, want in self.header_matches:
                values = [v for n, v in headers if n.lower() == name]
                if how == "present":
                    if bool(values) != want:
                        return False
                elif how == "exact":
                    if want not in values:
                        return False
                elif not _any_search(want, values):
                    return False
        return True


# Kinds of a compiled step (see RouteTable._plan); C ints once compiled (routing.pxd).
_STEP_PREFIX = 0  # the route asks only for a path prefix (text)
_STEP_EXACT = 1  # only an exact path (text)
_STEP_REGEXES = 2  # consecutive regex-only routes: one combined pattern (groups)
_STEP_ANY = 3  # anything else, checked by the route itself


class RouteStep:
    """One step of a compiled candidate list (a C type once compiled: routing.pxd)."""

    def __init__(
        self,
        kind: int,
        route: CompiledRoute | None,
        text: str | None = None,
        pattern: re.Pattern[str] | None = None,
        groups: dict[int, CompiledRoute] | None = None,
    ) -> None:
        self.kind = kind
        self.route = route
        self.text = text
        self.pattern = pattern
        self.groups = groups


def _only(route: CompiledRoute, host_known: bool) -> str | None:
    """Which single path condition ``route`` has when that is all it asks for (its host
    being known to match when ``host_known``), else None."""
    if route.methods is not None or route.header_matches:
        return None
    if not host_known and (route.exact_hosts or route.wildcard_suffixes):
        return None
    conditions = [
        name
        for name, value in (
            ("exact", route.path_exact),
            ("prefix", route.path_prefix),
            ("regex", route.path_regex),
        )
        if value is not None
    ]
    return conditions[0] if len(conditions) == 1 else None


def _refers_to_groups(pattern: str) -> bool:
    """Whether a pattern refers to its own groups (backreferences, conditionals): their
    numbers would change inside a combined pattern, so such a route is matched alone."""
    return re.search(r"\\[1-9]|\(\?P=|\(\?\(", pattern) is not None


class RouteTable:
    """Routes of one listener, in order. ``match`` returns the first route that matches.

    Each candidate list (per exact host, and the generic one) is compiled into steps: a
    route that asks only for a path prefix or an exact path is one string comparison, a run
    of routes that ask only for a regex is one combined pattern (alternatives tried in
    order, so the first route still wins), anything else is checked by the route itself.
    Nothing is cached: a combined regex costs about what a lookup in a cache of results
    keyed by (host, path, method) would (hashing a new path, a cold dict), and such a cache
    only pays while its keys repeat, which paths with identifiers in them never do.
    """

    # Its fields are declared in routing.pxd (a C type once compiled).

    def __init__(self, routes: Sequence[CompiledRoute]) -> None:
        self.routes = tuple(routes)
        # Exact host → the ordered candidates for that host (its own routes, plus every
        # wildcard and host-free route, in config order), each compiled into a plan; other
        # hosts use the generic plan.
        exact: set[str] = set()
        for r in self.routes:
            exact |= r.exact_hosts
        generic = tuple(r for r in self.routes if not r.exact_hosts or r.wildcard_suffixes)
        self._plans = {
            h: self._plan(tuple(r for r in self.routes if h in r.exact_hosts or r in generic), h)
            for h in exact
        }
        self._generic_plan = self._plan(generic, None)

    @staticmethod
    def _plan(candidates: Sequence[CompiledRoute], host: str | None) -> tuple[RouteStep, ...]:
        steps: list[RouteStep] = []
        run: list[CompiledRoute] = []

        def close_run() -> None:
            if not run:
                return
            if len(run) == 1:
                steps.append(RouteStep(_STEP_ANY, run[0]))
            else:
                names = [(f"_r{i}", r) for i, r in enumerate(run)]
                try:
                    combined = re.compile(
                        "|".join(
                            f"(?P<{g}>(?:{r.path_regex.pattern}))"  # type: ignore[union-attr]
                            for g, r in names
                        )
                    )
                except re.error:  # e.g. a named group used by two routes
                    steps.extend(RouteStep(_STEP_ANY, r) for r in run)
                else:
                    # The group that wraps an alternative closes after every group inside
                    # it, so it is the match's lastindex when that alternative matched.
                    groups = {combined.groupindex[g]: r for g, r in names}
                    steps.append(RouteStep(_STEP_REGEXES, None, pattern=combined, groups=groups))
            run.clear()

        for route in candidates:
            host_known = host is not None and host in route.exact_hosts
            only = _only(route, host_known)
            if only == "regex" and not _refers_to_groups(route.path_regex.pattern):  # type: ignore[union-attr]
                run.append(route)
                continue
            close_run()
            if only == "prefix":
                steps.append(RouteStep(_STEP_PREFIX, route, text=route.path_prefix))
            elif only == "exact":
                steps.append(RouteStep(_STEP_EXACT, route, text=route.path_exact))
            else:
                steps.append(RouteStep(_STEP_ANY, route))
        close_run()
        return tuple(steps)

    def match(
        self,
        host: str,
        path: str,
        method: bytes,
        headers: Sequence[tuple[bytes, bytes]] | None = None,
    ) -> CompiledRoute | None:
        steps = self._plans.get(host)
        if steps is None:
            steps = self._generic_plan
        step: RouteStep
        route: CompiledRoute
        kind: int
        for step in steps:
            kind = step.kind
            if kind == _STEP_PREFIX:
                if path.startswith(step.text):  # type: ignore[arg-type]
                    return step.route
            elif kind == _STEP_EXACT:
                if path == step.text:
                    return step.route
            elif kind == _STEP_REGEXES:
                m = step.pattern.fullmatch(path)  # type: ignore[union-attr]
                if m is not None:
                    return step.groups[m.lastindex]  # type: ignore[index]
            else:
                route = step.route  # type: ignore[assignment]
                if route.host_matches(host) and route.rest_matches(path, method, headers):
                    return route
        return None
