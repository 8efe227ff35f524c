"""The SMS and WeChat adapters against local stand-ins that check each request the way the
provider documents it — the signature recomputed with the provider's own SDK signer
(aliyun-python-sdk-core, tencentcloud-sdk-python-common) — and answer as the provider does."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from agents.delivery.channels.base import Message
from agents.delivery.channels.sms import AliyunSmsChannel, TencentSmsChannel
from agents.delivery.channels.wechat import WechatChannel
from agents.delivery.render import Rendered
from schemas.delivery import AliyunSmsProvider, TencentSmsProvider, WechatProvider
from schemas.outputs import Action

Answer = Callable[[str, dict[str, str], bytes], tuple[int, dict[str, Any]]]


class StandIn:
    """An HTTP server answering every request with `answer(path_and_query, headers, body)`."""

    def __init__(self, answer: Answer) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                stand_in.requests.append((self.path, headers, body))
                status, payload = answer(self.path, headers, body)
                out = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _any  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in() -> Iterator[Callable[[Answer], StandIn]]:
    started: list[StandIn] = []

    def start(answer: Answer) -> StandIn:
        started.append(StandIn(answer))
        return started[-1]

    yield start
    for s in started:
        s.close()


def message(channel: str, template_id: str, fields: dict[str, str], address: str) -> Message:
    action = Action(
        action_id="act-1",
        rule_id="abandoned-cart",
        customer_id="c1",
        kind="coupon",
        channel=channel,
        params={"value": 10},
        fired_at=datetime.now(UTC),
    )
    return Message(action, address, Rendered(channel, "zh-CN", template_id, fields), "CPN1")


def test_aliyun_sms_is_signed_as_the_official_sdk_signs_and_carries_the_template(
    stand_in: Callable[[Answer], StandIn], monkeypatch: pytest.MonkeyPatch
) -> None:
    from aliyunsdkcore.auth.algorithm import sha_hmac1
    from aliyunsdkcore.auth.composer import rpc_signature_composer

    compose = getattr(rpc_signature_composer, "__compose_string_to_sign")  # noqa: B009
    monkeypatch.setenv("ALI_ID", "LTAI-test-id")
    monkeypatch.setenv("ALI_SECRET", "ali-test-secret")
    verdicts: list[bool] = []

    def answer(path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        params = dict(parse_qsl(body.decode(), keep_blank_values=True))
        given = params.pop("Signature")
        want = sha_hmac1.get_sign_string(compose("POST", params), "ali-test-secret&")
        verdicts.append(given == want)
        if given != want:
            return 400, {"Code": "SignatureDoesNotMatch", "Message": "bad signature"}
        if params["PhoneNumbers"] == "13800000001":
            return 200, {"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "非法手机号"}
        return 200, {"Code": "OK", "Message": "OK", "BizId": "900619746936498440^0"}

    server = stand_in(answer)
    provider = AliyunSmsProvider.model_validate(
        {
            "type": "aliyun_sms",
            "endpoint": server.url + "/",
            "access_key_id": {"env": "ALI_ID"},
            "access_key_secret": {"env": "ALI_SECRET"},
            "sign_name": "示例商城",
        }
    )
    channel = AliyunSmsChannel("aliyun", provider)
    fields = {"value": "10", "code": "CPN1"}

    async def run() -> tuple[Any, Any]:
        try:
            sent = await channel.send(message("sms", "SMS_1", fields, "13800000000"))
            refused = await channel.send(message("sms", "SMS_1", fields, "13800000001"))
            return sent, refused
        finally:
            await channel.close()

    sent, refused = asyncio.run(run())
    assert verdicts == [True, True]
    assert (sent.status, sent.provider_id) == ("sent", "900619746936498440^0")
    assert refused.status == "failed" and "MOBILE_NUMBER_ILLEGAL" in refused.reason
    params = dict(parse_qsl(server.requests[0][2].decode()))
    assert params["TemplateCode"] == "SMS_1" and params["OutId"] == "act-1"
    assert json.loads(params["TemplateParam"]) == fields
    assert params["SignName"] == "示例商城"


def test_tencent_sms_is_signed_with_tc3_as_the_official_sdk_signs(
    stand_in: Callable[[Answer], StandIn], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tencentcloud.common.sign import Sign

    monkeypatch.setenv("TC_ID", "AKID-test")
    monkeypatch.setenv("TC_KEY", "tc-test-key")
    verdicts: list[bool] = []

    def answer(path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        # the canonical request as Tencent Cloud's API 3.0 signing documentation builds it
        auth = headers["authorization"]
        ts = int(headers["x-tc-timestamp"])
        date = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")
        canonical = (
            f"POST\n/\n\ncontent-type:{headers['content-type']}\nhost:{headers['host']}\n\n"
            f"content-type;host\n{hashlib.sha256(body).hexdigest()}"
        )
        to_sign = (
            f"TC3-HMAC-SHA256\n{ts}\n{date}/sms/tc3_request\n"
            f"{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        want = Sign.sign_tc3("tc-test-key", date, "sms", to_sign)
        ok = auth == (
            f"TC3-HMAC-SHA256 Credential=AKID-test/{date}/sms/tc3_request, "
            f"SignedHeaders=content-type;host, Signature={want}"
        )
        verdicts.append(ok and headers["x-tc-action"] == "SendSms")
        if not ok:
            return 200, {"Response": {"Error": {"Code": "AuthFailure.SignatureFailure"}}}
        sent = json.loads(body)
        if len(verdicts) == 1:
            return 200, {"Response": {"Error": {"Code": "InternalError.Timeout", "Message": "x"}}}
        return 200, {
            "Response": {
                "SendStatusSet": [
                    {"SerialNo": "5000:1045710669157053657849499619", "Code": "Ok",
                     "PhoneNumber": sent["PhoneNumberSet"][0], "Message": "send success"}
                ],
                "RequestId": "a0aabda6-cf91-4f3e-a81f-9198114a2279",
            }
        }  # fmt: skip

    server = stand_in(answer)
    provider = TencentSmsProvider.model_validate(
        {
            "type": "tencent_sms",
            "endpoint": server.url + "/",
            "secret_id": {"env": "TC_ID"},
            "secret_key": {"env": "TC_KEY"},
            "sdk_app_id": "1400006666",
            "sign_name": "示例商城",
        }
    )
    channel = TencentSmsChannel("tencent", provider)
    msg = message("sms", "1110", {"value": "10", "code": "CPN1"}, "13800000000")

    async def run() -> tuple[Any, Any]:
        try:
            return await channel.send(msg), await channel.send(msg)
        finally:
            await channel.close()

    busy, sent = asyncio.run(run())
    assert verdicts == [True, True]
    assert busy.status == "retry" and "InternalError" in busy.reason
    assert sent.status == "sent" and sent.provider_id.startswith("5000:")
    body = json.loads(server.requests[1][2])
    assert body["PhoneNumberSet"] == ["+8613800000000"]
    assert body["TemplateParamSet"] == ["10", "CPN1"] and body["SessionContext"] == "act-1"


def test_wechat_fetches_caches_and_refreshes_its_access_token(
    stand_in: Callable[[Answer], StandIn], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WX_SECRET", "wx-app-secret")
    issued: list[str] = []

    def answer(path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        url = urlsplit(path)
        query = dict(parse_qsl(url.query))
        if url.path == "/cgi-bin/token":
            if query != {
                "grant_type": "client_credential",
                "appid": "wx1",
                "secret": "wx-app-secret",
            }:
                return 200, {"errcode": 40125, "errmsg": "invalid appsecret"}
            issued.append(f"TOKEN{len(issued)}")
            return 200, {"access_token": issued[-1], "expires_in": 7200}
        if query.get("access_token") != issued[-1]:
            return 200, {"errcode": 40001, "errmsg": "invalid credential"}
        sent = json.loads(body)
        assert sent["client_msg_id"] == "act-1" and sent["touser"] == "openid-1"
        return 200, {"errcode": 0, "errmsg": "ok", "msgid": 200228332}

    server = stand_in(answer)
    provider = WechatProvider.model_validate(
        {"type": "wechat", "api": server.url, "app_id": "wx1", "app_secret": {"env": "WX_SECRET"}}
    )
    channel = WechatChannel("wechat", provider)
    msg = message("wechat", "TPL_1", {"first": "好久不见", "keyword1": "10元券"}, "openid-1")

    async def run() -> list[Any]:
        try:
            outcomes = [await channel.send(msg), await channel.send(msg)]
            issued.append("ROTATED")  # WeChat invalidated the cached token
            outcomes.append(await channel.send(msg))
            return outcomes
        finally:
            await channel.close()

    outcomes = asyncio.run(run())
    assert [o.status for o in outcomes] == ["sent", "sent", "sent"]
    assert outcomes[0].provider_id == "200228332"
    assert channel.fetched == 2  # once at first, cached for the second, once after rotation
    sends = [json.loads(b) for p, _, b in server.requests if "template/send" in p]
    assert sends[0]["data"] == {"first": {"value": "好久不见"}, "keyword1": {"value": "10元券"}}
