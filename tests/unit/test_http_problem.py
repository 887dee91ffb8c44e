"""problem+json responses (RFC 9457) the edge writes itself."""

from __future__ import annotations

import json

import httptools
import pytest

from backhaul.http import REASONS, problem_response


class Response:
    """What llhttp makes of a response: status, headers, body."""

    def __init__(self, raw: bytes, head_request: bool = False) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.complete = False
        self.keep_alive = False
        parser = self.parser = httptools.HttpResponseParser(self)
        if head_request:
            # llhttp's response parser has no notion of the request method; cut the body off.
            raw = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
            self.complete = raw.endswith(b"\r\n\r\n")
        parser.feed_data(raw)
        self.status = parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


@pytest.mark.parametrize("status", [400, 404, 408, 413, 414, 431, 501, 502, 503, 504, 505])
def test_problem_parses_with_right_fields(status: int) -> None:
    raw = problem_response(status, "what happened", request_id="r-9")
    response = Response(raw)
    assert response.complete
    assert response.status == status
    assert raw.startswith(b"HTTP/1.1 %d %s\r\n" % (status, REASONS[status]))
    assert response.headers[b"content-type"] == b"application/problem+json"
    assert int(response.headers[b"content-length"]) == len(response.body)
    assert response.headers[b"connection"] == b"close"
    assert response.headers[b"server"] == b"backhaul"
    assert response.headers[b"x-request-id"] == b"r-9"
    assert not response.keep_alive
    body = json.loads(response.body)
    assert body == {
        "type": "about:blank",
        "title": REASONS[status].decode(),
        "status": status,
        "detail": "what happened",
        "request_id": "r-9",
    }


def test_problem_keep_alive_title_instance_date_no_server() -> None:
    raw = problem_response(
        404,
        "no route matches host 'a.example' path '/x'",
        title="No route",
        close=False,
        server=None,
        date=b"Sun, 06 Nov 1994 08:49:37 GMT",
        instance="/x",
    )
    response = Response(raw)
    assert response.keep_alive
    assert b"connection" not in response.headers
    assert b"server" not in response.headers
    assert b"x-request-id" not in response.headers
    assert response.headers[b"date"] == b"Sun, 06 Nov 1994 08:49:37 GMT"
    body = json.loads(response.body)
    assert body["title"] == "No route"
    assert body["instance"] == "/x"
    assert "request_id" not in body


def test_problem_head_only_keeps_length_drops_body() -> None:
    full = problem_response(400, "bad")
    head = problem_response(400, "bad", head_only=True)
    assert full.startswith(head)
    assert head.endswith(b"\r\n\r\n")
    length = int(Response(head, head_request=True).headers[b"content-length"])
    assert length == len(full) - len(head) > 0


def test_problem_detail_with_quotes_and_non_ascii_is_valid_json() -> None:
    detail = 'header "X" had \u00e9 and \\ and \n'
    response = Response(problem_response(400, detail))
    assert json.loads(response.body)["detail"] == detail


def test_problem_unknown_status_still_well_formed() -> None:
    response = Response(problem_response(599, "odd"))
    assert response.status == 599
    assert json.loads(response.body)["status"] == 599


def test_problem_request_id_with_control_chars_not_in_header() -> None:
    raw = problem_response(400, "bad", request_id="a\r\nSet-Cookie: x")
    response = Response(raw)
    assert b"set-cookie" not in response.headers
    assert json.loads(response.body)["request_id"] == "a\r\nSet-Cookie: x"
