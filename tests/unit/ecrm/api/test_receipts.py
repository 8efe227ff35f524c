"""How each provider's status report is read into delivery steps (pure)."""

from __future__ import annotations

from ecrm.api.receipts import _steps


def test_an_aliyun_report_names_the_action_by_out_id_and_says_delivered_or_bounced() -> None:
    report = [
        {"phone_number": "13800000000", "success": True, "err_code": "DELIVERED",
         "biz_id": "9006^0", "out_id": "a-1"},
        {"phone_number": "13800000001", "success": False, "err_code": "MK:0001",
         "err_msg": "用户关机", "biz_id": "9007^0", "out_id": "a-2"},
    ]  # fmt: skip
    assert _steps("aliyun_sms", report) == [
        {"action_id": "a-1", "status": "delivered", "provider_id": "9006^0", "reason": ""},
        {"action_id": "a-2", "status": "bounced", "provider_id": "9007^0", "reason": "用户关机"},
    ]


def test_a_tencent_report_names_only_the_serial_number() -> None:
    report = [{"report_status": "FAIL", "errmsg": "MN:0001", "sid": "5000:1"}]
    assert _steps("tencent_sms", report) == [
        {"action_id": "", "status": "bounced", "provider_id": "5000:1", "reason": "MN:0001"}
    ]


def test_a_webhook_report_takes_known_statuses_only() -> None:
    report = [
        {"action_id": "a-1", "status": "opened"},
        {"action_id": "a-2", "status": "teleported"},
        {"status": "clicked"},
        "not an object",
    ]
    assert _steps("webhook", report) == [
        {"action_id": "a-1", "status": "opened", "provider_id": "", "reason": ""}
    ]
