"""What ``backhaul curl`` prints about a transfer: curl's ``-w`` variables and templates,
httpstat's phase picture, and the JSON report. Pure functions of a
:class:`~backhaul.tools.client.Transfer`."""

from __future__ import annotations

import json
import re
from typing import Any

from backhaul.tools.client import Exchange, Transfer

__all__ = ["PHASE_NAMES", "picture", "report_json", "variables", "write_out"]

PHASE_NAMES = {
    "dns": "DNS Lookup",
    "tcp": "TCP Connection",
    "tls": "TLS Handshake",
    "send": "Request Sent",
    "wait": "Server Processing",
    "transfer": "Content Transfer",
}

_TIME_VARS = (
    "time_namelookup",
    "time_connect",
    "time_appconnect",
    "time_pretransfer",
    "time_starttransfer",
    "time_total",
    "time_redirect",
)

_COUNT_VARS = (
    "http_code",
    "response_code",
    "num_redirects",
    "num_connects",
    "remote_port",
    "local_port",
    "size_download",
    "size_header",
    "size_upload",
    "size_request",
    "speed_download",
    "speed_upload",
    "ssl_verify_result",
)
_TEXT_VARS = (
    "url",
    "url_effective",
    "method",
    "http_version",
    "scheme",
    "redirect_url",
    "content_type",
    "remote_ip",
    "local_ip",
)


def variables(transfer: Transfer | None, exitcode: int = 0, errormsg: str = "") -> dict[str, Any]:
    """curl's ``-w`` variables (times in seconds, as curl prints them with %{...})."""
    values: dict[str, Any] = {"exitcode": exitcode, "errormsg": errormsg or None}
    if transfer is None or not transfer.exchanges:
        # what curl prints when nothing came back: zeros and empty strings
        values.update(dict.fromkeys(_TIME_VARS, 0.0))
        values.update(dict.fromkeys(_COUNT_VARS, 0))
        values.update(dict.fromkeys(_TEXT_VARS, ""))
        return values
    last = transfer.last
    p = last.phases
    base = transfer.time_redirect
    values.update(
        url=transfer.exchanges[0].url,
        url_effective=last.url,
        method=last.method,
        http_code=last.status,
        response_code=last.status,
        http_version={"HTTP/1.1": "1.1", "HTTP/1.0": "1", "HTTP/2": "2"}.get(
            last.http_version, last.http_version
        ),
        scheme=last.url.split(":", 1)[0].upper(),
        num_redirects=len(transfer.exchanges) - 1,
        num_connects=sum(0 if e.reused else 1 for e in transfer.exchanges),
        redirect_url=last.header("location") or "",
        content_type=last.header("content-type"),
        remote_ip=last.remote_ip,
        remote_port=last.remote_port,
        local_ip=last.local_ip,
        local_port=last.local_port,
        size_download=last.size_download,
        size_header=last.size_header,
        size_upload=last.size_upload,
        size_request=0,
        speed_download=round(last.size_download / p.total, 3) if p.total else 0,
        speed_upload=round(last.size_upload / p.total, 3) if p.total else 0,
        ssl_verify_result=0 if (last.tls is None or last.tls.verified) else 1,
        time_namelookup=round(base + p.namelookup, 6),
        time_connect=round(base + p.connect, 6),
        time_appconnect=round(base + p.appconnect, 6) if p.appconnect else 0.0,
        time_pretransfer=round(base + p.pretransfer, 6),
        time_starttransfer=round(base + p.starttransfer, 6),
        time_total=round(transfer.time_total, 6),
        time_redirect=round(base, 6),
    )
    return values


_VAR = re.compile(r"%\{([a-z_]+)\}|%header\{([^}]+)\}|%%|\\[nrt\\]")


def write_out(
    template: str, transfer: Transfer | None, exitcode: int, errormsg: str
) -> tuple[str, list[str]]:
    """Expand a ``-w`` template; returns the text and warnings for unknown variables."""
    values = variables(transfer, exitcode, errormsg)
    warnings: list[str] = []

    def expand(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole == "%%":
            return "%"
        if whole.startswith("\\"):
            return {"\\n": "\n", "\\r": "\r", "\\t": "\t", "\\\\": "\\"}[whole]
        if match.group(2) is not None:
            if transfer is None or not transfer.exchanges:
                return ""
            return transfer.last.header(match.group(2)) or ""
        name = match.group(1)
        if name == "json":
            return json.dumps(values)
        if name == "header_json":
            if transfer is None or not transfer.exchanges:
                return "{}"
            grouped: dict[str, list[str]] = {}
            for key, value in transfer.last.headers:
                grouped.setdefault(key.lower(), []).append(value)
            return json.dumps(grouped)
        if name == "stderr" or name == "stdout":
            return ""
        if name not in values:
            warnings.append(f"unknown --write-out variable: '{name}'")
            return ""
        value = values[name]
        if name.startswith("time_"):
            return f"{value:.6f}"
        if name in ("http_code", "response_code"):
            return f"{value:03d}"
        return "" if value is None else str(value)

    return _VAR.sub(expand, template), warnings


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms" if seconds >= 0.0095 else f"{seconds * 1000:.1f}ms"


def picture(exchange: Exchange, https: bool) -> list[str]:
    """httpstat's picture: one column per phase, then each cumulative mark under the right
    edge of the phase it ends (sending the request counts as Server Processing, as in
    httpstat: pretransfer to first byte)."""
    p = exchange.phases
    keys = ["dns", "tcp"] + (["tls"] if https else []) + ["wait", "transfer"]
    # columns between the marks shown under them, so each column ends at its mark: on
    # https the TLS column runs to pretransfer (it includes HTTP/2's connection set-up)
    ready = p.pretransfer if https else p.connect
    values = {
        "dns": p.namelookup,
        "tcp": p.connect - p.namelookup,
        "tls": p.pretransfer - p.connect,
        "wait": p.starttransfer - ready,
        "transfer": p.total - p.starttransfer,
    }
    width = 18
    marks = [("namelookup", p.namelookup), ("connect", p.connect)]
    if https:
        marks.append(("pretransfer", p.pretransfer))
    marks += [("starttransfer", p.starttransfer), ("total", p.total)]
    size = len(keys) * width + 1
    lines = [
        " " + "".join(f"{PHASE_NAMES[k]:^{width}}" for k in keys).rstrip(),
        "[" + "|".join(f"{_ms(values[k]):^{width - 1}}" for k in keys) + "]",
    ]
    for j in range(-1, len(marks)):
        row = [" "] * size
        for k in range(j + 1, len(keys)):
            row[(k + 1) * width] = "|"
        if j >= 0:
            name, value = marks[j]
            label = f"{name}:{_ms(value)}"
            end_at = (j + 1) * width + 1
            begin = max(0, end_at - len(label))
            row[begin:end_at] = list(label)
        lines.append("".join(row).rstrip())
    return lines


def exchange_json(exchange: Exchange) -> dict[str, Any]:
    p = exchange.phases
    tls = exchange.tls
    return {
        "url": exchange.url,
        "method": exchange.method,
        "http_version": exchange.http_version,
        "status": exchange.status,
        "reason": exchange.reason,
        "request_headers": [[k, v] for k, v in exchange.request_headers],
        "headers": [[k, v] for k, v in exchange.headers],
        "remote": {"ip": exchange.remote_ip, "port": exchange.remote_port},
        "local": {"ip": exchange.local_ip, "port": exchange.local_port},
        "reused_connection": exchange.reused,
        "size_download": exchange.size_download,
        "times": {
            "namelookup": round(p.namelookup, 6),
            "connect": round(p.connect, 6),
            "appconnect": round(p.appconnect, 6),
            "pretransfer": round(p.pretransfer, 6),
            "request_sent": round(p.request_sent, 6),
            "starttransfer": round(p.starttransfer, 6),
            "total": round(p.total, 6),
        },
        "phases": {name: round(value, 6) for name, value in p.segments().items()},
        "tls": None
        if tls is None
        else {
            "version": tls.version,
            "cipher": tls.cipher,
            "alpn": tls.alpn,
            "subject": tls.subject,
            "issuer": tls.issuer,
            "not_before": tls.not_before,
            "not_after": tls.not_after,
            "subject_alt_names": tls.sans,
            "verified": tls.verified,
        },
    }


def report_json(
    transfer: Transfer | None, exitcode: int, errormsg: str, body: str | None
) -> dict[str, Any]:
    """The whole transfer: every hop with its phases, curl's variables, the exit code."""
    return {
        "exitcode": exitcode,
        "error": errormsg or None,
        "hops": [exchange_json(e) for e in (transfer.exchanges if transfer else [])],
        "write_out": variables(transfer, exitcode, errormsg),
        "body": body,
    }
