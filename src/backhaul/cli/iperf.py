"""``backhaul iperf``: bandwidth tests that speak iperf3's protocol, as client or server.

``backhaul iperf -s`` serves ``iperf3 -c`` (and ``backhaul iperf -c``); ``backhaul iperf -c
HOST`` measures against ``iperf3 -s`` (or ``backhaul iperf -s``). The flags are iperf3's:
``-t -n -k -O -P -R --bidir -u -b -l -w -i -N -M -C -T -1 -B --get-server-output``.

Text output is shaped like iperf3's; ``--json`` prints iperf3's JSON shape with the same keys
where iperf3 has them (``start``, ``intervals``, ``end.streams``, ``end.sum_sent``,
``end.sum_received``, ``end.sum`` for UDP, ``end.cpu_utilization_percent`` ...). ``--plot
out.png`` draws the interval throughput per stream.

Exit codes: 0 done, 1 the test failed (refused, peer gone, protocol error), 2 bad usage.
"""

from __future__ import annotations

import json
import platform
import re
import sys
import time
from typing import Any

import typer

from backhaul import __version__
from backhaul.errors import LocalProtocolError, UsageError
from backhaul.proto.iperf3 import DEFAULT_PORT, IperfParameters
from backhaul.tools.iperf import IntervalSample, IperfReport, StreamReport, run_client, serve

__all__ = ["parse_size", "register", "report_document", "text_summary"]

_SEPARATOR = "- - - - - - - - - - - - - - - - - - - - - - - - -"


def parse_size(text: str, what: str, base: int) -> int:
    """``"10M"`` → 10 * base**2 (``base`` 1000 for rates, 1024 for sizes)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)\s*", text)
    if match is None:
        raise UsageError(f"{what} {text!r}: use a number with an optional K, M, G or T suffix")
    power = " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * base**power)


def _unit(value: float, base: int, units: tuple[str, ...]) -> str:
    index = 0
    while value >= base * 0.9995 and index < len(units) - 1:
        value /= base
        index += 1
    if value < 9.995:
        return f"{value:4.2f} {units[index]}"
    if value < 99.95:
        return f"{value:4.1f} {units[index]}"
    return f"{value:4.0f} {units[index]}"


def _bytes(n: float) -> str:
    return _unit(n, 1024, ("Bytes", "KBytes", "MBytes", "GBytes", "TBytes"))


def _rate(bits_per_second: float) -> str:
    return _unit(bits_per_second, 1000, ("bits/sec", "Kbits/sec", "Mbits/sec", "Gbits/sec"))


def _bps(n: int, seconds: float) -> float:
    return n * 8 / seconds if seconds > 0 else 0.0


def _span(seconds: float) -> dict[str, float]:
    """``start``/``end``/``seconds`` of a whole-test figure, to the microsecond as iperf3."""
    return {"start": 0, "end": round(seconds, 6), "seconds": round(seconds, 6)}


def _interval_line(fd: int | str, start: float, end: float, n: int, extra: str = "") -> str:
    label = f"[{fd:>3}]" if isinstance(fd, int) else f"[{fd}]"
    return (
        f"{label} {start:6.2f}-{end:<6.2f} sec  {_bytes(n):>11}  "
        f"{_rate(_bps(n, end - start)):>15}{extra}"
    )


def _interval_lines(samples: list[IntervalSample], udp: bool) -> list[str]:
    lines = []
    for s in samples:
        extra = ""
        if udp and s.sender:
            extra = f"  {s.packets}"
        elif s.retransmits is not None:
            extra = f"  {s.retransmits:>4}   {_bytes(s.snd_cwnd or 0):>10}"
        extra += "  (omitted)" if s.omitted else ""
        lines.append(_interval_line(s.fd, s.start, s.end, s.bytes, extra))
    if len(samples) > 1:
        total = sum(s.bytes for s in samples)
        lines.append(_interval_line("SUM", samples[0].start, samples[0].end, total))
    return lines


def text_summary(report: IperfReport) -> list[str]:
    """The end-of-test lines, iperf3-style (sender line, receiver line per stream)."""
    udp = report.params.protocol == "udp"
    lines = [_SEPARATOR]
    if udp:
        lines.append(
            "[ ID] Interval           Transfer     Bitrate         Jitter    Lost/Total Datagrams"
        )
    else:
        lines.append("[ ID] Interval           Transfer     Bitrate         Retr")
    for direction in (True, False) if report.params.bidirectional else (None,):
        streams = [s for s in report.streams if direction is None or s.sender_is_local == direction]
        for s in streams:
            lines += _stream_end_lines(s, udp, report.role)
        if len(streams) > 1:
            sent = sum(s.sent_bytes for s in streams)
            received = sum(s.received_bytes for s in streams)
            sent_s = max(s.sent_seconds for s in streams)
            received_s = max(s.received_seconds for s in streams)
            lines.append(_interval_line("SUM", 0.0, sent_s, sent) + "  sender")
            lines.append(_interval_line("SUM", 0.0, received_s, received) + "  receiver")
    return lines


def _stream_end_lines(s: StreamReport, udp: bool, role: str) -> list[str]:
    if udp:
        lost = s.lost or 0
        total = s.packets or 0
        percent = 100.0 * lost / total if total else 0.0
        sent = _interval_line(s.fd, 0.0, s.sent_seconds, s.sent_bytes)
        sent += f"  {0.0:.3f} ms  0/{total} (0%)  sender"
        received = _interval_line(s.fd, 0.0, s.received_seconds, s.received_bytes)
        received += f"  {(s.jitter or 0) * 1000:.3f} ms  {lost}/{total} ({percent:.2g}%)  receiver"
        return [sent, received]
    retr = "" if s.retransmits is None else f"  {s.retransmits:>4}"
    return [
        _interval_line(s.fd, 0.0, s.sent_seconds, s.sent_bytes) + f"{retr}             sender",
        _interval_line(s.fd, 0.0, s.received_seconds, s.received_bytes)
        + "                  receiver",
    ]


def _host(address: tuple[Any, ...]) -> str:
    host = str(address[0])
    return host.removeprefix("::ffff:") if "." in host else host


def report_document(report: IperfReport, host: str | None, port: int) -> dict[str, Any]:
    """The test as iperf3's ``--json`` document (the keys iperf3 uses)."""
    params = report.params
    udp = params.protocol == "udp"
    start: dict[str, Any] = {
        "connected": [
            {
                "socket": s.fd,
                "local_host": _host(s.local),
                "local_port": s.local[1],
                "remote_host": _host(s.remote),
                "remote_port": s.remote[1],
            }
            for s in report.streams
        ],
        "version": f"backhaul {__version__}",
        "system_info": " ".join(platform.uname()),
        "timestamp": {
            "time": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(report.started)),
            "timesecs": int(report.started),
        },
        "cookie": report.cookie,
        "target_bitrate": params.target_rate,
        "sock_bufsize": params.window,
        "sndbuf_actual": report.sndbuf,
        "rcvbuf_actual": report.rcvbuf,
        "test_start": {
            "protocol": params.protocol.upper(),
            "num_streams": params.parallel,
            "blksize": params.block_size,
            "omit": params.omit,
            "duration": params.duration,
            "bytes": params.bytes,
            "blocks": params.blocks,
            "reverse": int(params.reverse),
            "tos": 0,
            "target_bitrate": params.target_rate,
        },
    }
    if params.bidirectional:  # iperf3 3.12 names it only when it is set
        start["test_start"]["bidir"] = 1
    if report.role == "client":
        start["connecting_to"] = {"host": host, "port": port}
    else:
        start["accepted_connection"] = {"host": _host(report.peer), "port": report.peer[1]}
    intervals = []
    for samples in report.intervals:
        streams = []
        for s in samples:
            seconds = s.end - s.start
            row: dict[str, Any] = {
                "socket": s.fd,
                "start": round(s.start, 6),
                "end": round(s.end, 6),
                "seconds": seconds,
                "bytes": s.bytes,
                "bits_per_second": _bps(s.bytes, seconds),
            }
            if udp:
                row["packets"] = s.packets
            elif s.retransmits is not None:
                row |= {"retransmits": s.retransmits, "snd_cwnd": s.snd_cwnd, "rtt": s.rtt}
            row |= {"omitted": s.omitted, "sender": s.sender}
            streams.append(row)
        total = sum(s.bytes for s in samples)
        seconds = samples[0].end - samples[0].start
        summary: dict[str, Any] = {
            "start": round(samples[0].start, 6),
            "end": round(samples[0].end, 6),
            "seconds": seconds,
            "bytes": total,
            "bits_per_second": _bps(total, seconds),
        }
        if udp:
            summary["packets"] = sum(s.packets for s in samples)
        elif any(s.retransmits is not None for s in samples):
            summary["retransmits"] = sum(s.retransmits or 0 for s in samples)
        summary |= {"omitted": samples[0].omitted, "sender": samples[0].sender}
        intervals.append({"streams": streams, "sum": summary})

    end: dict[str, Any] = {"streams": []}
    for s in report.streams:
        if udp:
            lost = s.lost or 0
            total_packets = s.packets or 0
            end["streams"].append(
                {
                    "udp": {
                        "socket": s.fd,
                        **_span(s.received_seconds),
                        "bytes": s.received_bytes,
                        "bits_per_second": _bps(s.received_bytes, s.received_seconds),
                        "jitter_ms": (s.jitter or 0) * 1000,
                        "lost_packets": lost,
                        "packets": total_packets,
                        "lost_percent": 100.0 * lost / total_packets if total_packets else 0.0,
                        "out_of_order": s.out_of_order or 0,
                        "sender": s.sender_is_local,
                    }
                }
            )
        else:
            sender: dict[str, Any] = {
                "socket": s.fd,
                **_span(s.sent_seconds),
                "bytes": s.sent_bytes,
                "bits_per_second": _bps(s.sent_bytes, s.sent_seconds),
            }
            if s.retransmits is not None:
                sender["retransmits"] = s.retransmits
            if s.max_cwnd is not None:
                sender["max_snd_cwnd"] = s.max_cwnd
            if s.rtt is not None:
                sender |= {"max_rtt": s.rtt[2], "min_rtt": s.rtt[0], "mean_rtt": s.rtt[1]}
            sender["sender"] = s.sender_is_local
            receiver = {
                "socket": s.fd,
                **_span(s.received_seconds),
                "bytes": s.received_bytes,
                "bits_per_second": _bps(s.received_bytes, s.received_seconds),
                "sender": s.sender_is_local,
            }
            end["streams"].append({"sender": sender, "receiver": receiver})

    def sums(streams: list[StreamReport]) -> tuple[dict[str, Any], dict[str, Any]]:
        sent = sum(s.sent_bytes for s in streams)
        received = sum(s.received_bytes for s in streams)
        sent_s = max((s.sent_seconds for s in streams), default=0.0)
        received_s = max((s.received_seconds for s in streams), default=0.0)
        local_sends = streams[0].sender_is_local if streams else True
        sum_sent: dict[str, Any] = {
            **_span(sent_s),
            "bytes": sent,
            "bits_per_second": _bps(sent, sent_s),
        }
        sum_received: dict[str, Any] = {
            **_span(received_s),
            "bytes": received,
            "bits_per_second": _bps(received, received_s),
        }
        if udp:
            packets = sum(s.packets or 0 for s in streams)
            lost = sum(s.lost or 0 for s in streams)
            jitter = sum((s.jitter or 0) for s in streams) / len(streams) * 1000 if streams else 0
            sum_sent |= {"jitter_ms": 0, "lost_packets": 0, "packets": packets, "lost_percent": 0}
            sum_received |= {
                "jitter_ms": jitter,
                "lost_packets": lost,
                "packets": packets,
                "lost_percent": 100.0 * lost / packets if packets else 0.0,
            }
        elif any(s.retransmits is not None for s in streams):
            sum_sent["retransmits"] = sum(s.retransmits or 0 for s in streams)
        sum_sent["sender"] = local_sends
        sum_received["sender"] = local_sends if not udp else False
        return sum_sent, sum_received

    if params.bidirectional:
        forward = [s for s in report.streams if s.sender_is_local == (report.role == "client")]
        backward = [s for s in report.streams if s not in forward]
        end["sum_sent"], end["sum_received"] = sums(forward)
        end["sum_sent_bidir_reverse"], end["sum_received_bidir_reverse"] = sums(backward)
    else:
        end["sum_sent"], end["sum_received"] = sums(report.streams)
    if udp:
        end["sum"] = dict(end["sum_received"], sender=end["sum_sent"]["sender"])
    end["cpu_utilization_percent"] = {
        "host_total": report.cpu_local[0],
        "host_user": report.cpu_local[1],
        "host_system": report.cpu_local[2],
        "remote_total": report.cpu_remote[0],
        "remote_user": report.cpu_remote[1],
        "remote_system": report.cpu_remote[2],
    }
    document: dict[str, Any] = {"start": start, "intervals": intervals, "end": end}
    if report.server_output_json is not None:
        document["server_output_json"] = report.server_output_json
    if report.server_output_text is not None:
        document["server_output_text"] = report.server_output_text
    if not udp:
        local_sends = any(s.sender_is_local for s in report.streams)
        ours, theirs = report.congestion_local, report.congestion_remote
        end["sender_tcp_congestion"] = ours if local_sends else theirs
        end["receiver_tcp_congestion"] = theirs if local_sends else ours
    return document


def _plot(report: IperfReport, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4.5))
    ends = [samples[0].end for samples in report.intervals]
    fds = {s.id: s.fd for s in report.streams}
    ids = sorted({s.stream for samples in report.intervals for s in samples})
    for stream in ids:
        values = [
            next((_bps(s.bytes, s.end - s.start) for s in samples if s.stream == stream), 0.0) / 1e9
            for samples in report.intervals
        ]
        axes.plot(ends, values, marker="o", label=f"stream [{fds.get(stream, stream)}]")
    if len(ids) > 1:
        totals = [
            _bps(sum(s.bytes for s in samples), samples[0].end - samples[0].start) / 1e9
            for samples in report.intervals
        ]
        axes.plot(ends, totals, linewidth=2.5, color="black", label="sum")
    axes.set_xlabel("seconds")
    axes.set_ylabel("Gbit/s")
    kind = report.params.protocol.upper()
    axes.set_title(f"backhaul iperf: {kind}, {report.params.parallel} stream(s)")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_ylim(bottom=0)
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise UsageError(f"--plot {path}: {exc.strerror}") from exc
    finally:
        plt.close(figure)


def _echo(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def iperf_command(
    server: bool = typer.Option(False, "-s", "--server", help="Run as a server."),
    client: str | None = typer.Option(
        None, "-c", "--client", metavar="HOST", help="Run as a client."
    ),
    port: int = typer.Option(DEFAULT_PORT, "-p", "--port", help="Server port (iperf3's 5201)."),
    udp: bool = typer.Option(False, "-u", "--udp", help="UDP instead of TCP."),
    duration: int = typer.Option(10, "-t", "--time", help="Seconds to transmit."),
    omit: int = typer.Option(
        0, "-O", "--omit", help="Leave out the first N seconds (TCP slow start) from the results."
    ),
    num_bytes: str | None = typer.Option(
        None, "-n", "--bytes", help="Bytes to transmit (instead of -t)."
    ),
    blocks: str | None = typer.Option(None, "-k", "--blockcount", help="Blocks to transmit."),
    parallel: int = typer.Option(1, "-P", "--parallel", help="Parallel streams."),
    reverse: bool = typer.Option(False, "-R", "--reverse", help="The server sends."),
    bidir: bool = typer.Option(False, "--bidir", help="Both directions at once."),
    bitrate: str | None = typer.Option(
        None, "-b", "--bitrate", help="Target bits/s per stream (UDP default 1M; K/M/G)."
    ),
    length: str | None = typer.Option(
        None, "-l", "--length", help="Block/datagram size (TCP 128K, UDP 1460)."
    ),
    window: str | None = typer.Option(None, "-w", "--window", help="Socket buffer size (K/M)."),
    interval: float = typer.Option(
        1.0, "-i", "--interval", help="Seconds between reports (0: none)."
    ),
    nodelay: bool = typer.Option(False, "-N", "--no-delay", help="TCP_NODELAY."),
    mss: int = typer.Option(0, "-M", "--set-mss", help="TCP maximum segment size."),
    congestion: str | None = typer.Option(
        None, "-C", "--congestion", help="TCP congestion control."
    ),
    title: str | None = typer.Option(None, "-T", "--title", help="A prefix for every line."),
    bind: str | None = typer.Option(None, "-B", "--bind", help="Local address to bind."),
    one_off: bool = typer.Option(False, "-1", "--one-off", help="Server: one test, then exit."),
    get_server_output: bool = typer.Option(
        False, "--get-server-output", help="Print the server's report."
    ),
    udp_64bit: bool = typer.Option(
        False, "--udp-counters-64bit", help="64-bit UDP sequence numbers."
    ),
    connect_timeout: float = typer.Option(10.0, "--connect-timeout", help="Seconds to connect."),
    plot: str | None = typer.Option(
        None, "--plot", metavar="PNG", help="Plot the interval throughput."
    ),
    as_json: bool = typer.Option(False, "-J", "--json", help="iperf3-shaped JSON output."),
) -> None:
    """Measure bandwidth with iperf3's protocol: server (-s) or client (-c HOST)."""
    if server == (client is not None):
        raise UsageError("give -s to serve or -c HOST to run a test")
    if not 0 <= port < 65536 or (port == 0 and not server):
        raise UsageError(f"-p {port}: a port is 1..65535 (a server may take 0: any free port)")
    if interval < 0:
        raise UsageError("-i must be 0 or more")
    if server:
        _serve(port, bind, one_off, interval, as_json, plot)
        return
    assert client is not None
    params = IperfParameters(
        protocol="udp" if udp else "tcp",
        duration=duration,
        omit=omit,
        bytes=parse_size(num_bytes, "-n", 1024) if num_bytes else 0,
        blocks=parse_size(blocks, "-k", 1024) if blocks else 0,
        parallel=parallel,
        reverse=reverse,
        bidirectional=bidir,
        length=parse_size(length, "-l", 1024) if length else 0,
        window=parse_size(window, "-w", 1024) if window else 0,
        rate=parse_size(bitrate, "-b", 1000) if bitrate else None,
        nodelay=nodelay,
        mss=mss,
        congestion=congestion,
        title=title,
        get_server_output=get_server_output,
        udp_counters_64bit=udp_64bit,
    )
    try:
        params.validate()
    except LocalProtocolError as exc:
        raise UsageError(str(exc)) from exc
    prefix = f"{title}:  " if title else ""

    def out(line: str) -> None:
        if not as_json:
            _echo(prefix + line)

    def connected(streams: list[tuple[int, int, tuple[Any, ...], tuple[Any, ...]]]) -> None:
        for _id, fd, local, remote in streams:
            out(f"[{fd:>3}] local {_host(local)} port {local[1]} connected to "
                f"{_host(remote)} port {remote[1]}")  # fmt: skip
        if params.reverse:
            out(f"Reverse mode, remote host {client} is sending")
        if udp:
            out("[ ID] Interval           Transfer     Bitrate         Total Datagrams")
        elif not params.reverse:
            out("[ ID] Interval           Transfer     Bitrate         Retr  Cwnd")
        else:
            out("[ ID] Interval           Transfer     Bitrate")

    def on_interval(samples: list[IntervalSample]) -> None:
        for line in _interval_lines(samples, udp):
            out(line)

    out(f"Connecting to host {client}, port {port}")
    report = run_client(
        client, port, params, interval or None, on_interval,
        connected,
        bind, connect_timeout,
    )  # fmt: skip
    if plot:
        _plot(report, plot)
    if as_json:
        _echo(json.dumps(report_document(report, client, port), indent=2))
        return
    for line in text_summary(report):
        out(line)
    if report.server_output_text:
        out("")
        out("Server output:")
        for line in report.server_output_text.rstrip("\n").splitlines():
            out(line)
    if plot:
        out(f"plot written to {plot}")
    out("")
    out("iperf Done.")


def _serve(
    port: int, bind: str | None, one_off: bool, interval: float, as_json: bool, plot: str | None
) -> None:
    def line(text: str) -> None:
        if not as_json:
            _echo(text)

    def listening(address: tuple[Any, ...]) -> None:
        text = f"Server listening on {address[1]} (backhaul {__version__}, iperf3 protocol)"
        if as_json:  # stdout carries only JSON; scripts still see when the port is open
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
            return
        line("-----------------------------------------------------------")
        line(text)
        line("-----------------------------------------------------------")

    def accepted(peer: tuple[Any, ...]) -> None:
        line(f"Accepted connection from {_host(peer)}, port {peer[1]}")

    def interval_lines(samples: list[IntervalSample]) -> None:
        for text in _interval_lines(samples, False):
            line(text)

    def finished(report: IperfReport) -> None:
        if as_json:
            _echo(json.dumps(report_document(report, None, port), indent=2))
        else:
            for text in text_summary(report):
                line(text)
            line("-----------------------------------------------------------")
        if plot:
            _plot(report, plot)

    def failed(message: str) -> None:
        sys.stderr.write(f"backhaul iperf: test failed: {message}\n")
        sys.stderr.flush()

    serve(
        port, bind, one_off, interval or None, listening, accepted, interval_lines,
        finished, failed, lambda report: "\n".join(text_summary(report)) + "\n",
    )  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command(
        "iperf",
        help="Bandwidth test speaking iperf3's protocol: -s serves iperf3 -c, -c HOST "
        "measures against iperf3 -s. TCP/UDP, -P, -R, --bidir, jitter and loss, --json, --plot.",
        no_args_is_help=True,
    )(iperf_command)
