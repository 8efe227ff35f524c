"""A dead letter says why a message was refused and keeps enough of it to look into, and is
never bigger than what a broker accepts, however big the message was."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

from agents.profile.incoming import decode
from schemas.outputs import (
    DEAD_LETTER_KEY_BYTES,
    DEAD_LETTER_PREFIX_BYTES,
    DeadLetter,
    bounded_key,
)

AT = datetime(2026, 6, 1, tzinfo=UTC)
KAFKA_DEFAULT_MAX_BYTES = 1_048_576


def letter(value: bytes, key: bytes | None = b"c1", error: str = "bad") -> DeadLetter:
    return DeadLetter.of(
        topic="ecrm.cart", partition=1, offset=9, key=key, value=value, error=error, at=AT
    )


def test_a_small_message_is_kept_whole_with_its_size_and_hash() -> None:
    raw = b'{"event_id": "e1", "qty": 0}'
    kept = letter(raw)
    assert base64.b64decode(kept.value_b64) == raw and kept.value_text == raw.decode()
    assert kept.value_size == len(raw) and not kept.value_truncated
    assert kept.value_sha256 == hashlib.sha256(raw).hexdigest()


def test_a_600_kb_invalid_message_leaves_a_small_letter_with_prefix_size_and_hash() -> None:
    raw = b'{"event_id": "e1", "note": "' + b"a" * 600_000
    item = decode("ecrm.cart", "cart", 1, 9, b"c1", raw)
    assert item.error is not None and "json" in item.error.lower()
    kept = letter(raw, error=item.error)
    assert base64.b64decode(kept.value_b64) == raw[:DEAD_LETTER_PREFIX_BYTES]
    assert kept.value_text == raw[:DEAD_LETTER_PREFIX_BYTES].decode()
    assert kept.value_truncated and kept.value_size == len(raw)
    assert kept.value_sha256 == hashlib.sha256(raw).hexdigest()
    assert len(kept.model_dump_json()) < 16_384 < KAFKA_DEFAULT_MAX_BYTES


def test_a_character_cut_by_the_prefix_is_left_out_of_the_text() -> None:
    raw = b"x" * (DEAD_LETTER_PREFIX_BYTES - 1) + "购物车".encode() * 1000
    kept = letter(raw)
    assert kept.value_text == "x" * (DEAD_LETTER_PREFIX_BYTES - 1)
    assert len(base64.b64decode(kept.value_b64)) == DEAD_LETTER_PREFIX_BYTES


def test_bytes_that_are_not_utf8_have_no_text() -> None:
    kept = letter(b"\xff\xfe" * 5000)
    assert kept.value_text is None and kept.value_truncated and kept.value_size == 10_000


def test_a_huge_key_and_a_huge_reason_are_cut() -> None:
    key = b"k" * 100_000
    kept = letter(b"{}", key=key, error="e" * 100_000)
    assert kept.key == "k" * DEAD_LETTER_KEY_BYTES
    assert bounded_key(key) == key[:DEAD_LETTER_KEY_BYTES] and bounded_key(None) is None
    assert len(kept.error) <= 2000 and kept.error.endswith("…")
    assert len(kept.model_dump_json()) < 16_384


def test_a_letter_written_before_these_fields_still_reads() -> None:
    old = (
        '{"topic": "ecrm.cart", "partition": 0, "offset": 1, "key": null, "error": "x", '
        '"value_b64": "e30=", "value_text": "{}", "at": "2026-01-01T00:00:00Z"}'
    )
    kept = DeadLetter.model_validate_json(old)
    assert kept.value_size is None and kept.value_sha256 is None and not kept.value_truncated
