"""The webhook signature and the click links: what a receiver and `GET /r/…` accept."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from agents.delivery.provider_signing import aliyun_string_to_sign, percent
from agents.delivery.signing import (
    BadSignature,
    click_token,
    read_click_token,
    verify_webhook,
    webhook_signature,
)

SECRET = b"whsec-test"
BODY = '{"action_id":"a1","params":{"template":"购物车"}}'.encode()


def test_the_signature_is_hmac_sha256_of_the_time_a_dot_and_the_body() -> None:
    header = webhook_signature(SECRET, BODY, 1_700_000_000)
    mac = hmac.new(SECRET, b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={mac}"
    assert verify_webhook(SECRET, BODY, header, now=1_700_000_100) == 1_700_000_000


def test_a_changed_body_another_secret_or_an_old_signature_is_refused() -> None:
    header = webhook_signature(SECRET, BODY, 1_700_000_000)
    with pytest.raises(BadSignature, match="does not match"):
        verify_webhook(SECRET, BODY + b" ", header, now=1_700_000_000)
    with pytest.raises(BadSignature, match="does not match"):
        verify_webhook(b"other", BODY, header, now=1_700_000_000)
    with pytest.raises(BadSignature, match="replay window"):
        verify_webhook(SECRET, BODY, header, now=1_700_000_301)
    with pytest.raises(BadSignature, match="expected"):
        verify_webhook(SECRET, BODY, "v1=abc", now=1_700_000_000)


def test_a_click_link_names_its_action_and_address_and_cannot_be_redirected() -> None:
    token = click_token("a1", "https://shop.example/cart?x=1", b"k" * 32)
    assert read_click_token(token, b"k" * 32) == ("a1", "https://shop.example/cart?x=1")
    prefix, action, _, tag = token.split(".")
    forged = ".".join(
        [prefix, action, click_token("a1", "https://evil.example", b"k" * 32).split(".")[2], tag]
    )
    with pytest.raises(BadSignature):
        read_click_token(forged, b"k" * 32)
    with pytest.raises(BadSignature):
        read_click_token(token, b"another install's key....")


def test_aliyun_percent_encodes_as_rfc_3986_and_signs_the_sorted_query() -> None:
    assert percent("a b*c~d/中") == "a%20b%2Ac~d%2F%E4%B8%AD"
    to_sign = aliyun_string_to_sign("POST", {"b": "2", "a": "1 2"})
    assert to_sign == "POST&%2F&a%3D1%25202%26b%3D2"
