"""Response compression's policy: Accept-Encoding negotiation (RFC 9110 12.5.3), the media
types a route compresses, and the gzip encoder's output and memory."""

from __future__ import annotations

import gzip
import random
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backhaul.http.compression import (
    DEFAULT_TYPES,
    GzipEncoder,
    MediaTypes,
    accepted_coding,
    coding_weights,
)


@pytest.mark.parametrize(
    ("values", "chosen"),
    [
        ([], None),  # no Accept-Encoding: sent as is (as nginx and Caddy do)
        ([b""], None),  # empty: the client wants no coding (RFC 9110 12.5.3)
        ([b"gzip"], "gzip"),
        ([b"GZip"], "gzip"),
        ([b"x-gzip"], "gzip"),  # RFC 9110 8.4.1.3
        ([b"gzip, deflate, br, zstd"], "gzip"),  # what curl --compressed sends
        ([b"deflate, br"], None),  # nothing we have
        ([b"deflate", b"gzip;q=0.5"], "gzip"),  # several lines are one list
        ([b"gzip;q=0"], None),  # refused
        ([b"gzip; q=0.000"], None),
        ([b"gzip;Q=0.001"], "gzip"),
        ([b"*"], "gzip"),
        ([b"*;q=0"], None),
        ([b"*;q=0, gzip"], "gzip"),
        ([b"gzip;q=0, *"], None),  # the named refusal wins over *
        ([b"gzip;q=0.5, identity"], None),  # identity preferred (q=1 > 0.5)
        ([b"gzip;q=0.5, identity;q=0.5"], "gzip"),  # a tie goes to the coding
        ([b"gzip;q=0.5"], "gzip"),  # identity unnamed: acceptable, least preferred
        ([b"identity;q=0"], None),  # gzip not named and no *: not acceptable either
        ([b"identity;q=0, *"], "gzip"),
        ([b"identity"], None),
        ([b"gzip ; q=0.3 , identity;q=0.2"], "gzip"),
        ([b"gzip;q=1.5"], None),  # not a qvalue: the element is ignored
        ([b"gzip;q=0.0001"], None),  # four decimals: not a qvalue
        ([b"gzip;q=1.001"], None),
        ([b"gzip;q=abc"], None),
        ([b"gzip;q="], None),
        ([b"gzip;q=1."], "gzip"),
        ([b"gzip;q=0, gzip"], None),  # the first mention counts
        ([b"gzip;level=9"], "gzip"),  # a parameter that is not a weight is ignored
        ([b",,gzip,,"], "gzip"),  # empty list elements are allowed (RFC 9110 5.6.1)
    ],
)
def test_accepted_coding(values: list[bytes], chosen: str | None) -> None:
    assert accepted_coding(values) == chosen


def test_coding_weights() -> None:
    assert coding_weights([b"gzip;q=0.8, br, *;q=0.1", b"identity;q=0"]) == {
        "gzip": 0.8,
        "br": 1.0,
        "*": 0.1,
        "identity": 0.0,
    }


def test_the_order_of_codings_breaks_ties() -> None:
    assert accepted_coding([b"*"], ("gzip", "br")) == "gzip"
    assert accepted_coding([b"*"], ("br", "gzip")) == "br"
    assert accepted_coding([b"gzip;q=0.5, br;q=0.9"], ("gzip", "br")) == "br"


@pytest.mark.parametrize(
    ("patterns", "content_type", "match"),
    [
        (DEFAULT_TYPES, b"text/html; charset=utf-8", True),
        (DEFAULT_TYPES, b"Application/JSON", True),
        (DEFAULT_TYPES, b"image/svg+xml", True),
        (DEFAULT_TYPES, b"application/javascript;charset=utf-8", True),
        (DEFAULT_TYPES, b"image/png", False),
        (DEFAULT_TYPES, b"application/octet-stream", False),
        (DEFAULT_TYPES, b"application/gzip", False),
        (DEFAULT_TYPES, None, False),  # no Content-Type: unknown content
        (DEFAULT_TYPES, b"", False),
        (["text/*"], b"text/x-anything", True),
        (["text/*"], b"texts/plain", False),
        (["*"], b"video/mp4", True),
        (["*/*"], b"video/mp4", True),
        (["*"], None, False),
        (["Application/Octet-Stream"], b"application/octet-stream", True),
    ],
)
def test_media_types(patterns: list[str], content_type: bytes | None, match: bool) -> None:
    assert MediaTypes(patterns).match(content_type) is match


def _text(n: int, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    words = [b"edge", b"route", b"cluster", b"endpoint", b"filter", b"gzip", b"body", b"head"]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + (b"\n" if rng.random() < 0.1 else b" ")
    return bytes(out[:n])


@pytest.mark.parametrize("length", [None, 0, 1, 100, 5000, 40_000, 300_000])
def test_gzip_encoder_round_trip_in_pieces(length: int | None) -> None:
    body = _text(length if length is not None else 123_456)
    encoder = GzipEncoder(6, length)
    out = [encoder.piece(body[i : i + 4096]) for i in range(0, len(body), 4096)]
    out.append(encoder.finish())
    data = b"".join(out)
    assert gzip.decompress(data) == body
    assert data[:2] == b"\x1f\x8b"  # a gzip member, for any gzip decoder


def test_gzip_encoder_takes_memoryviews() -> None:
    body = _text(10_000)
    encoder = GzipEncoder()
    data = encoder.piece(memoryview(body)[:5000]) + encoder.piece(memoryview(body)[5000:])
    assert gzip.decompress(data + encoder.finish()) == body


def test_gzip_encoder_holds_at_most_a_window() -> None:
    """Incompressible input comes out as it goes in: the encoder never holds the body
    (bounded memory per exchange), only what zlib keeps between pieces."""
    rng = random.Random(1)
    piece = 64 * 1024
    fed = produced = 0
    encoder = GzipEncoder(1)
    for _ in range(64):  # 4 MiB
        data = rng.randbytes(piece)
        fed += len(data)
        produced += len(encoder.piece(data))
        assert fed - produced < 256 * 1024
    produced += len(encoder.finish())
    assert produced >= fed  # random bytes do not shrink


def test_levels_trade_size_for_cpu() -> None:
    body = _text(200_000)
    sizes = []
    for level in (1, 9):
        encoder = GzipEncoder(level)
        sizes.append(len(encoder.piece(body) + encoder.finish()))
    assert sizes[1] < sizes[0] < len(body) // 3


def _state_bytes(length: int | None) -> int:
    """The memory one encoder holds (zlib allocates through CPython's raw allocator, which
    tracemalloc sees)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        encoder = GzipEncoder(1, length)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del encoder
    return held


def test_a_small_body_gets_a_small_compressor() -> None:
    """zlib's state is 2^(window+2) + 2^(mem_level+9) bytes: 256 KiB at the full window,
    a few KiB for a body of known small length (as nginx sizes gzip_window/gzip_hash)."""
    full = _state_bytes(None)
    assert 256 * 1024 <= full <= 400 * 1024
    assert _state_bytes(100_000) == full
    assert _state_bytes(1000) <= 16 * 1024
    assert _state_bytes(20) <= 16 * 1024
    assert _state_bytes(10_000) <= 128 * 1024


@given(st.lists(st.binary(max_size=60), max_size=4))
def test_any_accept_encoding_is_read_without_error(values: list[bytes]) -> None:
    assert accepted_coding(values) in (None, "gzip")
    for q in coding_weights(values).values():
        assert 0.0 <= q <= 1.0


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["gzip", "x-gzip", "br", "identity", "*", "deflate"]),
            st.sampled_from(["", ";q=0", ";q=0.5", ";q=1", ";q=0.001", ";q=0.999", " ; Q=0.2"]),
        ),
        max_size=5,
    )
)
def test_a_refused_gzip_is_never_chosen(elements: list[tuple[str, str]]) -> None:
    """Checked against the RFC's words directly: gzip is chosen only if it (or, unnamed, *)
    has q > 0, and never when identity is named with a higher q."""
    value = ", ".join(c + w for c, w in elements).encode()
    chosen = accepted_coding([value])
    weights: dict[str, float] = {}
    for coding, weight in elements:
        q = float(weight.split("=")[1]) if "=" in weight else 1.0
        weights.setdefault("gzip" if coding == "x-gzip" else coding, q)
    gzip_q = weights.get("gzip", weights.get("*", 0.0))
    identity_q = weights.get("identity", weights.get("*", 0.0))
    assert (chosen == "gzip") == (gzip_q > 0 and gzip_q >= identity_q)
