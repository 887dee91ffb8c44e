"""What ``backhaul bench`` prints: wrk's text summary, a JSON document and a PNG plot.

The text keeps wrk's lines (``Running``, ``Thread Stats``, ``Latency Distribution``,
``N requests in Xs, Y read``, ``Socket errors``, ``Non-2xx or 3xx responses``,
``Requests/sec:``, ``Transfer/sec:``) with wrk's units, so scripts that parse wrk keep
working; the extra percentiles, status counts and the constant-rate note come after them.
"""

from __future__ import annotations

import statistics
from typing import Any

from backhaul.tools.loadgen import ERROR_KINDS, BenchOptions, BenchResult

__all__ = ["PERCENTILES", "render_header", "render_json", "render_plot", "render_text"]

PERCENTILES = (50.0, 75.0, 90.0, 99.0, 99.9, 99.99)


def _time_us(us: float) -> str:
    """wrk's time units: us, ms, s, m with two decimals."""
    if us < 1000:
        return f"{us:.2f}us"
    if us < 1_000_000:
        return f"{us / 1000:.2f}ms"
    if us < 60_000_000:
        return f"{us / 1_000_000:.2f}s"
    return f"{us / 60_000_000:.2f}m"


def _metric(n: float) -> str:
    """wrk's plain counts: 1.20k, 3.40M."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.2f}"


def _binary(n: float) -> str:
    """wrk's byte sizes: 1.23K, 8.85M (followed by B)."""
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.2f}"


def _within_stdev(values: list[tuple[float, int]], mean: float, stdev: float) -> float:
    total = sum(count for _, count in values)
    if not total:
        return 0.0
    inside = sum(count for value, count in values if mean - stdev <= value <= mean + stdev)
    return 100.0 * inside / total


def _latency_values(result: BenchResult) -> list[tuple[float, int]]:
    return [
        (float(item.value_iterated_to), int(item.count_at_value_iterated_to))
        for item in result.histogram.get_recorded_iterator()
    ]


def _rate_samples(result: BenchResult) -> list[float]:
    """Requests per second in each 100 ms interval (wrk's Req/Sec samples)."""
    samples = []
    last = 0.0
    for sample in result.timeline:
        span = sample.t - last
        last = sample.t
        if span > 0.05:
            samples.append(sample.count / span)
    return samples


def render_header(opts: BenchOptions) -> list[str]:
    """wrk's first lines, printed when the run starts."""
    target = opts.urls[0] + (f" (+{len(opts.urls) - 1} more URLs)" if len(opts.urls) > 1 else "")
    how = f"{opts.duration:g}s" if opts.duration else f"{opts.requests} requests"
    lines = [f"Running {how} test @ {target}"]
    extra = ", HTTP/2" if opts.http2 else ", HTTP/1.1"
    if opts.http2:
        extra += f" x {opts.max_streams} streams"
    lines.append(f"  1 threads and {opts.connections} connections{extra}")
    if opts.rate:
        lines.append(
            f"  constant rate {opts.rate:g} req/s: latency measured from each request's "
            "intended start"
        )
    return lines


def render_text(result: BenchResult, header: bool = True) -> list[str]:
    """wrk's summary (then backhaul's extra lines); ``header=False`` leaves out the lines
    :func:`render_header` printed at the start."""
    opts = result.options
    hist = result.histogram
    lines = render_header(opts) if header else []
    mean = hist.get_mean_value() if result.completed else 0.0
    stdev = hist.get_stddev() if result.completed else 0.0
    lines.append("  Thread Stats   Avg      Stdev     Max   +/- Stdev")
    within = _within_stdev(_latency_values(result), mean, stdev)
    lines.append(
        f"    Latency {_time_us(mean):>9} {_time_us(stdev):>9} "
        f"{_time_us(hist.get_max_value() if result.completed else 0):>9} {within:>8.2f}%"
    )
    rates = _rate_samples(result)
    if rates:
        r_mean = statistics.fmean(rates)
        r_stdev = statistics.pstdev(rates) if len(rates) > 1 else 0.0
        r_within = _within_stdev([(r, 1) for r in rates], r_mean, r_stdev)
        lines.append(
            f"    Req/Sec {_metric(r_mean):>9} {_metric(r_stdev):>9} "
            f"{_metric(max(rates)):>9} {r_within:>8.2f}%"
        )
    lines.append("  Latency Distribution")
    for p in (50, 75, 90, 99):
        lines.append(f"{p:7.0f}%{_time_us(result.percentile_us(p)):>10}")
    lines.append(
        f"  {result.completed} requests in {result.elapsed:.2f}s, "
        f"{_binary(result.bytes_read)}B read"
    )
    errors = result.errors
    if any(errors.values()):
        lines.append(
            f"  Socket errors: connect {errors['connect']}, read {errors['read']}, "
            f"write {errors['write']}, timeout {errors['timeout']}"
        )
    if result.non_2xx_3xx:
        lines.append(f"  Non-2xx or 3xx responses: {result.non_2xx_3xx}")
    lines.append(f"Requests/sec: {result.requests_per_second:9.2f}")
    lines.append(f"Transfer/sec: {_binary(result.bytes_per_second):>10}B")
    # backhaul's additions, after wrk's lines
    tail = "  ".join(f"{p:g}%={_time_us(result.percentile_us(p))}" for p in PERCENTILES if p > 99)
    lines.append(f"Latency tail: {tail}  max={_time_us(hist.get_max_value())}")
    codes = ", ".join(f"{code}: {n}" for code, n in result.statuses.items()) or "none"
    lines.append(f"Status codes: {codes}")
    other = {k: v for k, v in errors.items() if k in ("tls", "protocol") and v}
    if other:
        lines.append("Other errors: " + ", ".join(f"{k} {v}" for k, v in other.items()))
    if result.not_sent:
        lines.append(
            f"Not sent: {result.not_sent} requests were due but no connection was free "
            "before the end (raise -c)"
        )
    return lines


def render_json(result: BenchResult) -> dict[str, Any]:
    """The run as one JSON document (latencies in microseconds)."""
    opts = result.options
    hist = result.histogram
    ok = bool(result.completed)
    return {
        "urls": opts.urls,
        "mode": result.mode,
        "protocol": result.protocol,
        "connections": opts.connections,
        "rate": opts.rate,
        "duration": opts.duration,
        "requests_limit": opts.requests,
        "elapsed_s": round(result.elapsed, 6),
        "requests": result.completed,
        "requests_per_second": round(result.requests_per_second, 2),
        "bytes": result.bytes_read,
        "bytes_per_second": round(result.bytes_per_second, 2),
        "connects": result.connects,
        "not_sent": result.not_sent,
        "latency_us": {
            "min": int(hist.get_min_value()) if ok else 0,
            "mean": round(hist.get_mean_value(), 2) if ok else 0.0,
            "stdev": round(hist.get_stddev(), 2) if ok else 0.0,
            "max": int(hist.get_max_value()) if ok else 0,
            "percentiles": {f"{p:g}": result.percentile_us(p) for p in PERCENTILES},
        },
        "status_codes": {str(code): n for code, n in result.statuses.items()},
        "non_2xx_3xx": result.non_2xx_3xx,
        "errors": {kind: result.errors[kind] for kind in ERROR_KINDS},
        "timeline": [
            {"t": s.t, "count": s.count, "p50_us": s.p50, "p99_us": s.p99, "max_us": s.max}
            for s in result.timeline
        ],
    }


def render_plot(result: BenchResult, path: str) -> None:
    """Write a PNG: latency over time (p50, p99, max per 100 ms) and the percentile spectrum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (over_time, spectrum) = plt.subplots(2, 1, figsize=(10, 8))
    try:
        times = [s.t for s in result.timeline if s.count]
        shown = [s for s in result.timeline if s.count]
        over_time.plot(times, [s.max / 1000 for s in shown], label="max")
        over_time.plot(times, [s.p99 / 1000 for s in shown], label="p99")
        over_time.plot(times, [s.p50 / 1000 for s in shown], label="p50")
        over_time.set_xlabel("time since start (s)")
        over_time.set_ylabel("latency (ms)")
        mode = f"constant rate {result.options.rate:g}/s" if result.mode == "rate" else "closed"
        over_time.set_title(f"{result.options.urls[0]} - {mode}, {result.protocol}")
        over_time.legend()
        over_time.grid(True, alpha=0.3)
        xs, ys = [], []
        for item in result.histogram.get_percentile_iterator(5):
            p = item.percentile_level_iterated_to
            if p >= 100.0:
                break
            xs.append(1.0 / (1.0 - p / 100.0))
            ys.append(item.value_iterated_to / 1000)
        spectrum.plot(xs, ys)
        spectrum.set_xscale("log")
        ticks = [p for p in (0, 90, 99, 99.9, 99.99, 99.999) if 1 / (1 - p / 100) <= max(xs or [1])]
        spectrum.set_xticks([1 / (1 - p / 100) for p in ticks])
        spectrum.set_xticklabels([f"{p:g}%" for p in ticks])
        spectrum.set_xlabel("percentile")
        spectrum.set_ylabel("latency (ms)")
        spectrum.set_title("latency by percentile")
        spectrum.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
