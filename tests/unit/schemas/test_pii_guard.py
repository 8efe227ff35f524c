"""Personal data in live events, dead letters and rejects: phone numbers and e-mail addresses
are found wherever the storefront put them, named fields become keyed hashes, and what is kept
of a refused payload holding them is a masked prefix, its size and its hash."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from schemas.events import BrowseEvent, CartEvent
from schemas.outputs import DeadLetter
from schemas.pii import (
    PiiGuard,
    looks_personal,
    personal_id,
    stored_customer_id,
    withheld_fields,
)

KEY = b"k" * 32
GUARD = PiiGuard(KEY, frozenset({"nickname"}))
PLANTED = ("13812345678", "138 1234 5678", "amy.lee@example.com", "021-62345678")


def browse(**fields: object) -> BrowseEvent:
    return BrowseEvent.model_validate({"event_id": "e1", "customer_id": "c1", "ts": 0, **fields})


def test_a_phone_number_as_customer_id_becomes_the_same_keyed_hash_every_time() -> None:
    event = GUARD.protect(browse(customer_id="13812345678", sku="s"))
    assert (
        event.customer_id
        == personal_id("13812345678", KEY)
        == stored_customer_id("13812345678", KEY)
    )
    assert not looks_personal(event.customer_id)
    assert stored_customer_id("c-42", KEY) == "c-42"


def test_named_fields_are_hashed_and_found_ones_masked_anywhere_among_unknown_fields() -> None:
    event = GUARD.protect(
        browse(
            sku="s",
            url="/account?email=amy.lee@example.com",
            nickname="小鱼儿",
            shipping={"note": "call 138-1234-5678 after six", "zip": "200000"},
            tags=["vip", "amy.lee@example.com"],
        )
    )
    stored = json.dumps(event.model_dump(mode="json"), ensure_ascii=False)
    assert not looks_personal(stored)
    assert "小鱼儿" not in stored and event.extra["nickname"] == personal_id("小鱼儿", KEY)
    assert event.extra["shipping"] == {"note": "call 138****5678 after six", "zip": "200000"}
    assert event.url == "/account?email=a***@example.com"


def test_an_event_without_personal_data_is_the_same_object() -> None:
    event = CartEvent.model_validate(
        {"event_id": "e", "customer_id": "c", "ts": 0, "sku": "s", "qty": 1, "price": 1, "n": 7}
    )
    assert GUARD.protect(event) is event


@given(st.sampled_from(PLANTED), st.text(max_size=40), st.text(max_size=40))
def test_a_dead_letter_never_keeps_planted_personal_data_in_clear(
    planted: str, before: str, after: str
) -> None:
    raw = f'{{"note": "{before} {planted} {after}", "bad": '.encode()
    letter = DeadLetter.of(
        topic="ecrm.orders",
        partition=0,
        offset=1,
        key=planted.encode(),
        value=raw,
        error="not JSON",
        at=datetime(2024, 1, 1, tzinfo=UTC),
    )
    kept = letter.model_dump_json() + base64.b64decode(letter.value_b64).decode("utf-8", "replace")
    assert planted not in kept
    assert letter.value_size == len(raw) and letter.value_truncated


def test_a_reject_keeps_personal_rows_as_prefix_size_and_hash_and_others_whole() -> None:
    rows = b'[{"customer_id": "amy.lee@example.com"}]'
    kept = withheld_fields({b"table": b"events", b"rows": rows})
    assert b"rows" not in kept and kept[b"rows_size"] == str(len(rows)).encode()
    assert b"amy.lee@example.com" not in b"".join(kept.values())
    plain = {b"table": b"events", b"rows": b'[{"customer_id": "c-1"}]'}
    assert withheld_fields(plain) == plain
