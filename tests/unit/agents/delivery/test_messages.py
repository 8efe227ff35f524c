"""What the e-mail and webhook adapters put on the wire, built without sending (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from agents.delivery.channels.base import Message, http_outcome
from agents.delivery.channels.email import email_of, smtp_outcome
from agents.delivery.channels.webhook import webhook_body
from agents.delivery.render import Rendered
from schemas.delivery import EmailProvider
from schemas.outputs import Action

ACTION = Action(
    action_id="a-42",
    rule_id="abandoned-cart",
    customer_id="c-1",
    kind="coupon",
    channel="email",
    params={"value": 10, "unsubscribe_token": "u1.YzE.email.tag"},
    fired_at=datetime(2026, 5, 1, tzinfo=UTC),
)
SMTP = EmailProvider.model_validate(
    {
        "type": "email",
        "host": "smtp.example.com",
        "from": "示例商城 <crm@shop.example>",
        "unsubscribe_url": "https://crm.shop.example/v1/unsubscribe?token={token}",
    }
)


def test_an_email_carries_one_click_unsubscribe_and_a_message_id_from_the_action() -> None:
    rendered = Rendered(
        "email",
        "zh-CN",
        "cart",
        {"subject": "送您优惠券", "text": "券码 CPN1", "html": "<b>CPN1</b>"},
    )
    mail = email_of(SMTP, Message(ACTION, "c1@shop.example", rendered, "CPN1"))
    assert (
        mail["List-Unsubscribe"]
        == "<https://crm.shop.example/v1/unsubscribe?token=u1.YzE.email.tag>"
    )
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["Message-ID"] == "<a-42@shop.example>"
    assert mail["To"] == "c1@shop.example" and str(mail["Subject"]) == "送您优惠券"
    assert mail.get_body(("plain",)).get_content().strip() == "券码 CPN1"
    assert mail.get_body(("html",)).get_content().strip() == "<b>CPN1</b>"


def test_the_webhook_body_is_the_action_with_its_code_and_text() -> None:
    rendered = Rendered("inbox", "zh-CN", "cart", {"text": "券码 CPN1"}, "券码 CPN1")
    body = json.loads(webhook_body(Message(ACTION, None, rendered, "CPN1")))
    assert body["action_id"] == "a-42" and body["coupon_code"] == "CPN1"
    assert (body["text"], body["locale"]) == ("券码 CPN1", "zh-CN")


def test_answers_are_sorted_into_sent_failed_and_retry() -> None:
    assert http_outcome(204, "").status == "sent"
    assert [http_outcome(s, "").status for s in (400, 401, 404, 422)] == ["failed"] * 4
    assert [http_outcome(s, "").status for s in (408, 425, 429, 500, 503)] == ["retry"] * 5
    assert smtp_outcome(550, "no such user").status == "failed"
    assert smtp_outcome(451, "greylisted").status == "retry"


def test_a_mini_program_subscribe_message_has_its_page_and_no_client_msg_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agents.delivery.channels.wechat import WechatChannel
    from schemas.delivery import WechatProvider

    monkeypatch.setenv("WX_SECRET", "s")
    provider = WechatProvider.model_validate(
        {
            "type": "wechat",
            "kind": "mini_program",
            "app_id": "wx1",
            "app_secret": {"env": "WX_SECRET"},
        }
    )
    channel = WechatChannel("mp", provider)
    rendered = Rendered(
        "wechat", "zh-CN", "TPL", {"thing1": "积分将过期", "__page__": "pages/points"}
    )
    body = channel.body(Message(ACTION, "openid-1", rendered))
    assert body == {
        "touser": "openid-1",
        "template_id": "TPL",
        "data": {"thing1": {"value": "积分将过期"}},
        "page": "pages/points",
    }
    official = WechatChannel("oa", provider.model_copy(update={"kind": "official_account"}))
    assert official.body(Message(ACTION, "openid-1", rendered))["client_msg_id"] == "a-42"
