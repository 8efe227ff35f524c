"""Templates per channel and locale in the sandbox, and what `ecrm rules check --delivery`
refuses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from agents.delivery.render import RenderError, pick_locale, problems_of_rules, render, variables
from schemas.delivery import load_delivery, parse_delivery
from schemas.errors import DeliveryError
from schemas.outputs import Action
from schemas.rules import load_rules
from streams.settings import EXAMPLE_DELIVERY, EXAMPLE_RULES

DELIVER = load_delivery(EXAMPLE_DELIVERY)


def coupon(**params: Any) -> Action:
    return Action(
        action_id="a1",
        rule_id="abandoned-cart",
        customer_id="c1",
        kind="coupon",
        channel="sms",
        params={
            "template": "cart_coupon",
            "value": 10,
            "threshold": 99,
            "valid_for": "48h",
            **params,
        },
        fired_at=datetime.now(UTC),
    )


def names(action: Action, code: str | None = "CPN1") -> dict[str, Any]:
    return variables(
        action,
        {"segment": "important_value", "level": "gold"},
        ["segment", "level"],
        code,
        lambda u: f"L({u})",
    )


def test_the_abandoned_cart_sms_carries_the_coupon_in_its_registered_template() -> None:
    out = render(DELIVER, coupon(), "sms", names(coupon()))
    assert out is not None and out.template_id == "SMS_480000001" and out.locale == "zh-CN"
    assert out.fields == {"value": "10", "threshold": "99", "code": "CPN1", "valid": "48小时"}


def test_an_email_renders_in_chinese_with_a_tracked_link_and_in_english_when_asked() -> None:
    action = coupon()
    zh = render(DELIVER, action, "email", names(action))
    assert zh is not None and zh.fields["subject"] == "您的购物车还在等您 —— 送您 10 元优惠券"
    assert "券码：CPN1" in zh.text and "L(https://shop.example/cart)" in zh.text
    en = render(DELIVER, action, "email", names(action), locale="en-US")
    assert en is not None and en.locale == "en" and "code CPN1" in en.text


def test_a_locale_falls_back_to_its_language_then_the_default_then_any() -> None:
    assert pick_locale({"zh-CN": 1, "en": 2}, "en-GB", "zh-CN") == "en"
    assert pick_locale({"zh-CN": 1, "en": 2}, "fr", "zh-CN") == "zh-CN"
    assert pick_locale({"ja": 1}, "fr", "zh-CN") == "ja"
    assert pick_locale({}, "fr", "zh-CN") is None


def test_an_unknown_variable_is_an_error_never_an_empty_hole() -> None:
    deliver = parse_delivery(
        """
deliver:
  templates:
    t: {inbox: {zh-CN: {text: "你好 {{ nickname }}"}}}
"""
    )
    action = coupon(template="t").model_copy(update={"channel": "inbox"})
    with pytest.raises(RenderError, match="nickname"):
        render(deliver, action, "inbox", names(action))


def test_the_sandbox_refuses_to_reach_into_python() -> None:
    deliver = parse_delivery(
        """
deliver:
  templates:
    t: {inbox: {zh-CN: {text: "{{ ''.__class__.__mro__[1].__subclasses__() }}"}}}
"""
    )
    action = coupon(template="t").model_copy(update={"channel": "inbox"})
    with pytest.raises(RenderError):
        render(deliver, action, "inbox", names(action))


def test_a_channel_that_needs_a_template_and_has_none_cannot_be_sent() -> None:
    action = coupon(template="nothing_here")
    with pytest.raises(RenderError, match="no sms template"):
        render(DELIVER, action, "sms", names(action))
    webhook = action.model_copy(update={"channel": "inbox"})
    assert render(DELIVER, webhook, "inbox", names(webhook)) is None  # the action alone


def test_the_shipped_rules_all_fit_the_shipped_delivery_file() -> None:
    assert problems_of_rules(DELIVER, load_rules(EXAMPLE_RULES)) == []


def test_a_rule_whose_sms_variable_is_too_long_or_channel_unserved_is_refused() -> None:
    text = (
        EXAMPLE_DELIVERY.read_text(encoding="utf-8")
        .replace(
            'valid: "48小时"',
            'valid: "{{ valid_for }}，请在有效期内尽快使用，过期作废，详情请咨询在线客服或拨打客服热线四零零八八八八八八八"',
        )
        .replace("    push: shop                  # the shop", "    # push: nobody")
    )
    problems = problems_of_rules(parse_delivery(text), load_rules(EXAMPLE_RULES))
    assert any('"abandoned-cart"' in p and "SMS variable valid" in p for p in problems)
    assert any('"browse-abandonment": action.channel "push": no provider' in p for p in problems)


def test_a_credential_written_in_the_file_is_refused() -> None:
    with pytest.raises(DeliveryError, match="secret"):
        parse_delivery(
            """
deliver:
  providers:
    shop: {type: webhook, url: "https://x", secret: "hunter2-in-the-file"}
"""
        )
    with pytest.raises(DeliveryError, match="env"):
        parse_delivery(
            """
deliver:
  providers:
    shop: {type: webhook, url: "https://x", secret: {env: A, file: /b}}
"""
        )


def test_a_channel_sent_by_a_provider_of_another_kind_is_refused() -> None:
    with pytest.raises(DeliveryError, match='channel "sms" cannot be sent by provider "mail"'):
        parse_delivery(
            """
deliver:
  channels: {sms: mail}
  providers:
    mail: {type: email, host: h, from: a@b.c, unsubscribe_url: "https://u/{token}", password: {env: P}}
"""
        )
