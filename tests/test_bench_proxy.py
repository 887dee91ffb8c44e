"""bench/proxy.py's request mix and report: pure parts, no proxies started."""

from __future__ import annotations

import re
from pathlib import Path

from bench.proxy import (
    BENCH_ROUTE,
    DECOYS,
    SPREAD_VARIANTS,
    parse_args,
    sample,
    spread_requests,
    summarise,
    wrk_script,
)

ROUTES = [*DECOYS, BENCH_ROUTE]


def matches(kind: str, value: str, host: str, path: str) -> bool:
    if kind == "host":
        if value.startswith("*."):
            return host.endswith(value[1:])
        return host == value
    if host:  # a request with a Host of its own goes to that host's server block
        return False
    if kind == "path":
        return path == value
    if kind == "prefix":
        return path.startswith(value)
    return re.fullmatch(value, path) is not None


def test_every_request_reaches_its_route_first_for_both_proxies() -> None:
    for n in (0, 1, 7, 200, SPREAD_VARIANTS - 1):
        for i, (_, _, template) in enumerate(ROUTES):
            host, path = sample(template, n)
            hits = [j for j, (k, v, _) in enumerate(ROUTES) if matches(k, v, host, path)]
            assert hits and hits[0] == i, (template, n, hits)  # backhaul: first match wins
            # nginx: an exact or regex location wins over prefixes; no other may match
            others = [j for j in hits if j != i and ROUTES[j][0] in ("path", "regex")]
            assert others == [], (template, n, others)


def test_the_mix_is_spread_and_too_wide_to_cache() -> None:
    requests = spread_requests()
    assert len(requests) == 20 * SPREAD_VARIANTS
    firsts = [sample(t, 0) for _, _, t in ROUTES]
    assert requests[:20] == firsts  # consecutive requests go to different routes
    assert len(set(requests)) > 4096  # more distinct requests than a result cache would hold


def test_the_lua_script_asks_for_the_size(tmp_path: Path) -> None:
    text = wrk_script(tmp_path / "s.lua", "1KiB").read_text()
    assert '["X-Bench-Size"] = "1KiB"' in text
    assert text.count("\n  {") == 20 * SPREAD_VARIANTS
    assert '{"api.example.com", "/v/0"}' in text and '{"", "/files/0"}' in text


def run(proxy: str, size: str, rps: float, rnd: int) -> dict[str, float | str | int]:
    return {
        "proxy": proxy,
        "size": size,
        "round": rnd,
        "rps": rps,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "cpu_user_us": 4.0,
        "cpu_sys_us": 10.0,
        "wrk_cpu_us": 8.0,
        "origin_cpu_us": 9.0,
        "load_core_busy": 0.5,
    }


def test_summary_has_the_body_sized_nginx_and_the_spread() -> None:
    runs = [
        run("nginx", "100KiB", 1000, 1),
        run("nginx-big", "100KiB", 2000, 1),
        run("backhaul", "100KiB", 2600, 1),
        run("backhaul", "100KiB", 2400, 2),
        run("backhaul", "100KiB", 2500, 3),
    ]
    table, targets = summarise(runs, ["100KiB"])  # type: ignore[arg-type]
    row = table["100KiB"]
    assert row["ratio"] == 2.5 and row["ratio_big"] == 1.25
    assert row["backhaul"]["rps_min"] == 2400 and row["backhaul"]["rps_max"] == 2600
    assert round(row["backhaul"]["rps_spread"], 3) == 0.08
    assert [t["what"] for t in targets] == ["100KiB req/s (nginx with body-sized buffers)"]
    assert targets[0]["met"] is True


def test_the_cli_keeps_its_options() -> None:
    args = parse_args(["--quick", "--only", "nginx-big", "--urls", "one", "--sizes", "1MiB"])
    assert (args.duration, args.rounds, args.only, args.urls) == (2.0, 1, "nginx-big", "one")
    assert parse_args([]).urls == "spread" and parse_args([]).no_big_buffers is False
