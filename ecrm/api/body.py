"""A request's body as JSON, the way Segment-compatible clients send it: plain, gzip or
deflate (`Content-Encoding`), as `application/json` or as `text/plain` (the browser library
sends text/plain so that its calls need no CORS preflight for the content type).

The size limits apply to the body as decoded, and a compressed body may grow at most
`MAX_RATIO` times (past 64 KB): a zip bomb is refused with 413 after at most `limit` bytes of output,
never inflated into memory. Decoding is incremental (zlib's `max_length`), so the bytes held
never exceed the limit plus one chunk.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from fastapi import HTTPException, Request

#: a compressed body may decode to at most this many times its size (JSON compresses ~5-20×)…
MAX_RATIO = 100
#: …once it decodes to more than this (a small, repetitive body may well compress more)
RATIO_FROM = 64 * 1024
_CHUNK = 64 * 1024


class TooLarge(ValueError):
    """The decoded body would pass its limit."""


def _decoder(encoding: str) -> zlib._Decompress | None:
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        # RFC 9110's deflate is zlib-wrapped; some clients send it raw (tried on the first byte)
        return zlib.decompressobj(zlib.MAX_WBITS)
    raise HTTPException(
        415, f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or none"
    )


def inflate(data: bytes, encoding: str, limit: int) -> bytes:
    """`data` decoded per `encoding`; TooLarge past `limit` bytes or `MAX_RATIO` × its size;
    ValueError when it is not valid for its encoding."""
    decoder = _decoder(encoding.strip().lower())
    if decoder is None:
        if len(data) > limit:
            raise TooLarge(f"the body is {len(data):,} bytes; at most {limit // 1024} KB")
        return data
    if encoding.strip().lower() == "deflate" and data[:1] and (data[0] & 0x0F) != 8:
        decoder = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, no zlib header
    bound = min(limit, max(len(data) * MAX_RATIO, RATIO_FROM))
    out = bytearray()
    pending = data
    try:
        while True:
            out += decoder.decompress(pending, bound + 1 - len(out))
            pending = decoder.unconsumed_tail
            if len(out) > bound or decoder.eof or not pending:
                break
    except zlib.error as exc:
        raise ValueError(f"the body is not valid {encoding}: {exc}") from exc
    if len(out) > bound:
        if bound < limit:
            raise TooLarge(
                f"the body decodes to over {MAX_RATIO} times its {len(data):,} compressed "
                f"bytes; refused as a compression bomb"
            )
        raise TooLarge(f"the body decodes to over {limit // 1024} KB")
    if not decoder.eof:
        raise ValueError(f"the body is not valid {encoding}: it ends early")
    return bytes(out)


async def body_bytes(request: Request, limit: int) -> bytes:
    """The decoded body; 413 past `limit` bytes (decoded), 400 when it cannot be decoded."""
    encoding = request.headers.get("content-encoding", "")
    # compressed bodies are at most `limit` on the wire too: never more than the decoded limit
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the body is {int(declared):,} bytes; at most {limit // 1024} KB")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise HTTPException(413, f"the body is over {limit // 1024} KB")
    try:
        return inflate(bytes(raw), encoding, limit)
    except TooLarge as exc:
        raise HTTPException(413, str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc


async def body_json(request: Request, limit: int) -> Any:
    """The request's JSON body (application/json or text/plain, any of the encodings above);
    413 past `limit` decoded bytes, 400 when not JSON."""
    body = await body_bytes(request, limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, f"the body is not JSON: {exc}") from exc
