"""Buyers become keyed-hash customer ids; phones, names and addresses appear only masked."""

from __future__ import annotations

import re
from uuid import UUID

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from schemas.pii import customer_id_for, mask_phone, mask_text, scrub

SECRET = b"0123456789abcdef-test"


def test_a_buyer_name_gives_the_same_id_every_time_and_another_secret_another_id() -> None:
    cid = customer_id_for("小鱼儿_00064", SECRET)
    assert re.fullmatch(r"c_[0-9a-f]{24}", cid)
    assert customer_id_for(" 小鱼儿_00064\t", SECRET) == cid
    assert customer_id_for("小鱼儿_00065", SECRET) != cid
    assert customer_id_for("小鱼儿_00064", b"another-secret-of-16") != cid
    assert "小鱼儿" not in cid


def test_an_empty_buyer_name_has_no_id() -> None:
    with pytest.raises(ValueError):
        customer_id_for(" \t", SECRET)


def test_display_forms_keep_only_the_ends() -> None:
    assert mask_phone("13812341234") == "138****1234"
    assert mask_phone("138 1234 1234") == "138****1234"
    assert mask_text("小鱼儿_00064") == "小*******4"
    assert mask_text("王芳") == "王*"
    assert mask_text("x") == "*"
    assert mask_text("") == ""


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("客户来电13812345678改地址", "客户来电138****5678改地址"),
        ("tel 138-1234-5678", "tel 138****5678"),
        ("座机 0571-88889999", "座机 0571****9999"),
        ("mail kiki.wang@example.com", "mail k***@example.com"),
        ("order 3100000000000007919", "order 3100000000000007919"),
        ("西湖龙井 明前特级 250g", "西湖龙井 明前特级 250g"),
    ],
)
def test_free_text_has_its_phones_and_emails_masked(text: str, scrubbed: str) -> None:
    assert scrub(text) == scrubbed


@example(UUID("37b86054-ea7c-d4fc-9681-055802621086"))  # an all-digit last group: a "landline"
@given(st.uuids())
def test_a_uuid_event_id_is_never_taken_for_a_phone_number(value) -> None:
    from schemas.pii import looks_personal_id

    assert not looks_personal_id(str(value))


@given(st.uuids(), st.from_regex(r"0[0-9]{11}", fullmatch=True))
def test_a_uuid_whose_last_group_is_all_digits_is_not_taken_for_a_landline(value, digits) -> None:
    # ~1 UUID in 2,800 ends in twelve decimal digits starting with 0 ("…-017875707611"): read
    # as a landline, the event id became a keyed hash live, and the action named as its
    # trigger an id the storefront never sent (seen in test_backlog as a flaky mismatch)
    from schemas.pii import looks_personal_id

    uuid = f"{str(value)[:24]}{digits}"
    assert not looks_personal_id(uuid), uuid
    assert not looks_personal_id("80bebd47-7981-46f6-99b2-017875707611")
    assert looks_personal_id(f"tel-13812345678-{uuid}")
    assert looks_personal_id(f"{uuid}-0755-12345678")
    assert looks_personal_id(f"{uuid}@example.com")  # an e-mail address all the same


def test_phone_numbers_and_e_mail_addresses_inside_ids_are_found() -> None:
    from schemas.pii import looks_personal_id

    for personal in ("13812345678", "tel-13812345678", "u_138-1234-5678", "0755-12345678",
                     "li.lei@example.com"):  # fmt: skip
        assert looks_personal_id(personal), personal
    for plain in ("cust-000083", "order-20261130-0001", "f387b344-6138-4596-b027-08586588887e"):
        assert not looks_personal_id(plain), plain
