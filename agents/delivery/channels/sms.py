"""SMS through Aliyun (dysmsapi SendSms) and Tencent Cloud (sms SendSms 2021-01-11) over their
HTTP APIs, signed as each documents (agents/delivery/provider_signing.py). SMS text is a
registered template: ecrm sends its code and the variables' values. Neither provider takes an
idempotency key: the action id rides along (Aliyun `OutId`, Tencent `SessionContext`) so
receipts find the action, and a crash between their answer and the record can send twice
(docs/delivery.md, "Exactly once")."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import orjson

from agents.delivery.channels.base import Message, Outcome, read_secret
from agents.delivery.provider_signing import aliyun_signature, aliyun_timestamp, tc3_authorization
from schemas.delivery import AliyunSmsProvider, TencentSmsProvider

#: answers that mean "not now" rather than "never"
ALIYUN_RETRY_CODES = ("Throttling", "isp.SYSTEM_ERROR", "ServiceUnavailable", "InternalError")
TENCENT_RETRY_CODES = (
    "InternalError",
    "RequestLimitExceeded",
    "LimitExceeded.AppCountryOrRegionDailyLimit",
)


class AliyunSmsChannel:
    def __init__(self, name: str, provider: AliyunSmsProvider) -> None:
        self.name = name
        self.provider = provider
        self.key_id = read_secret(provider.access_key_id)
        self.key_secret = read_secret(provider.access_key_secret)
        self.http = httpx.AsyncClient(timeout=provider.timeout.total_seconds())

    def params(self, message: Message, now: datetime) -> dict[str, str]:
        assert message.rendered is not None and message.address is not None
        params = {
            "AccessKeyId": self.key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "RegionId": "cn-hangzhou",
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": uuid.uuid4().hex,
            "SignatureVersion": "1.0",
            "Timestamp": aliyun_timestamp(now),
            "Version": "2017-05-25",
            "PhoneNumbers": message.address,
            "SignName": self.provider.sign_name,
            "TemplateCode": message.rendered.template_id,
            "TemplateParam": orjson.dumps(message.rendered.fields).decode(),
            "OutId": message.action.action_id,
        }
        params["Signature"] = aliyun_signature(self.key_secret, "POST", params)
        return params

    async def send(self, message: Message) -> Outcome:
        if message.address is None or message.rendered is None:
            return Outcome("failed", reason="no phone number or no SMS template")
        try:
            answer = await self.http.post(
                self.provider.endpoint, data=self.params(message, datetime.now(UTC))
            )
        except httpx.HTTPError as exc:
            return Outcome("retry", reason=f"Aliyun SMS: {type(exc).__name__}: {exc}")
        if answer.status_code >= 500:
            return Outcome("retry", reason=f"Aliyun SMS: HTTP {answer.status_code}")
        try:
            data = orjson.loads(answer.content)
        except orjson.JSONDecodeError:
            return Outcome("retry", reason=f"Aliyun SMS: HTTP {answer.status_code}, not JSON")
        code = str(data.get("Code", ""))
        if code == "OK":
            return Outcome("sent", str(data.get("BizId", "")))
        reason = f"Aliyun SMS {code}: {data.get('Message', '')}"
        return Outcome("retry" if code.startswith(ALIYUN_RETRY_CODES) else "failed", reason=reason)

    async def close(self) -> None:
        await self.http.aclose()


class TencentSmsChannel:
    def __init__(self, name: str, provider: TencentSmsProvider) -> None:
        self.name = name
        self.provider = provider
        self.secret_id = read_secret(provider.secret_id)
        self.secret_key = read_secret(provider.secret_key)
        self.http = httpx.AsyncClient(timeout=provider.timeout.total_seconds())

    def request(self, message: Message, timestamp: int) -> tuple[bytes, dict[str, str]]:
        assert message.rendered is not None and message.address is not None
        phone = message.address if message.address.startswith("+") else f"+86{message.address}"
        body = orjson.dumps(
            {
                "PhoneNumberSet": [phone],
                "SmsSdkAppId": self.provider.sdk_app_id,
                "SignName": self.provider.sign_name,
                "TemplateId": message.rendered.template_id,
                "TemplateParamSet": list(message.rendered.fields.values()),
                "SessionContext": message.action.action_id,
            }
        )
        host = urlsplit(self.provider.endpoint).netloc
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Host": host,
            "X-TC-Action": "SendSms",
            "X-TC-Version": "2021-01-11",
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Region": self.provider.region,
            "Authorization": tc3_authorization(
                self.secret_id, self.secret_key, "sms", host, body, timestamp
            ),
        }
        return body, headers

    async def send(self, message: Message) -> Outcome:
        if message.address is None or message.rendered is None:
            return Outcome("failed", reason="no phone number or no SMS template")
        body, headers = self.request(message, int(time.time()))
        try:
            answer = await self.http.post(self.provider.endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Outcome("retry", reason=f"Tencent SMS: {type(exc).__name__}: {exc}")
        if answer.status_code >= 500:
            return Outcome("retry", reason=f"Tencent SMS: HTTP {answer.status_code}")
        try:
            response = orjson.loads(answer.content)["Response"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return Outcome("retry", reason=f"Tencent SMS: HTTP {answer.status_code}, no Response")
        error = response.get("Error")
        if error:
            code = str(error.get("Code", ""))
            reason = f"Tencent SMS {code}: {error.get('Message', '')}"
            return Outcome(
                "retry" if code.startswith(TENCENT_RETRY_CODES) else "failed", reason=reason
            )
        status = (response.get("SendStatusSet") or [{}])[0]
        if status.get("Code") == "Ok":
            return Outcome("sent", str(status.get("SerialNo", "")))
        return Outcome(
            "failed", reason=f"Tencent SMS {status.get('Code')}: {status.get('Message', '')}"
        )

    async def close(self) -> None:
        await self.http.aclose()
