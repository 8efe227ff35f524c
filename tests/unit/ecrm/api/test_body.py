"""Request bodies: gzip and deflate decoded within the limits, a compression bomb refused
before it is inflated, errors in the shape the clients read."""

from __future__ import annotations

import gzip
import os
import zlib

import pytest

from ecrm.api.body import MAX_RATIO, TooLarge, inflate
from ecrm.api.errors import error_body

JSON = b'{"batch":[' + b",".join(b'{"type":"track","n":%d}' % i for i in range(500)) + b"]}"


@pytest.mark.parametrize(
    "encode",
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda d: (c := zlib.compressobj(wbits=-15)).compress(d) + c.flush()),
        ("identity", lambda d: d),
        ("", lambda d: d),
    ],
)
def test_a_body_decodes_whatever_the_encoding(encode):
    name, compress = encode
    assert inflate(compress(JSON), name, 500 * 1024) == JSON


def test_the_limit_is_on_the_decoded_body():
    big = os.urandom(300 * 1024).hex().encode()  # 600 KB that compresses only ~2×
    with pytest.raises(TooLarge, match="500 KB"):
        inflate(gzip.compress(big), "gzip", 500 * 1024)


def test_a_bomb_is_refused_after_at_most_the_limit_is_inflated():
    bomb = gzip.compress(b"\0" * 200_000_000)  # 200 MB in ~200 KB
    with pytest.raises(TooLarge):
        inflate(bomb, "gzip", 500 * 1024)


def test_a_body_that_grows_more_than_the_ratio_is_refused_below_the_limit():
    data = bytes(range(256)) * 1000  # 256 KB, compresses far past the ratio
    packed = gzip.compress(data)
    assert len(data) > len(packed) * MAX_RATIO
    with pytest.raises(TooLarge, match="compression bomb"):
        inflate(packed, "gzip", 500 * 1024)


def test_a_broken_or_unknown_encoding_says_so():
    with pytest.raises(ValueError, match="ends early"):
        inflate(gzip.compress(JSON)[:-12], "gzip", 500 * 1024)
    with pytest.raises(ValueError, match="not valid gzip"):
        inflate(b"not gzip at all", "gzip", 500 * 1024)
    with pytest.raises(Exception, match="br"):
        inflate(JSON, "br", 500 * 1024)


def test_an_error_has_code_and_message_beside_detail():
    assert error_body(429, "over the rate") == {
        "detail": "over the rate",
        "code": "rate_limited",
        "message": "over the rate",
    }
    assert error_body(413, "too big")["code"] == "payload_too_large"
    assert error_body(409, "again")["code"] == "conflict"
