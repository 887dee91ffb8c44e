"""Bind failures explained: the errno a real bind() gives, and the words for it."""

from __future__ import annotations

import errno
import socket

import pytest

from backhaul.net.bind_error import explain_bind_error


def bind_errno(host: str, port: int) -> int | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno
    return None


def test_an_address_that_is_not_here() -> None:
    code = bind_errno("192.0.2.1", 0)  # TEST-NET-1: on no interface of this machine
    assert code == errno.EADDRNOTAVAIL
    text = explain_bind_error(code, "192.0.2.1", 8080)
    assert text.startswith("192.0.2.1 is not an address of this machine")
    assert "in use" not in text and "another server" not in text


def test_a_busy_port() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        code = bind_errno("127.0.0.1", port)
    assert code == errno.EADDRINUSE
    assert explain_bind_error(code, "127.0.0.1", port) == (
        f"127.0.0.1:{port} is already in use (another server listens on that port);"
        " stop it or pick another port"
    )


@pytest.mark.parametrize(
    ("code", "host", "needle"),
    [
        (errno.EACCES, "0.0.0.0", "no permission to bind 0.0.0.0:80"),
        (errno.EAFNOSUPPORT, "::1", "this machine has no IPv6"),
        (errno.EINVAL, "::1", "cannot listen on [::1]:80: Invalid argument"),
        (None, "::1", "cannot listen on [::1]:80: unknown error"),
    ],
)
def test_other_reasons(code: int | None, host: str, needle: str) -> None:
    assert needle in explain_bind_error(code, host, 80)
