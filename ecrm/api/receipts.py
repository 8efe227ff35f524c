"""What happened to a message after `ecrm deliver` sent it: provider callbacks at
`POST /v1/receipts/{provider}` (each one's signature verified) and tracked clicks at
`GET /r/{token}` (a signed link, agents/delivery/signing.py). Each becomes a row of the
ClickHouse `deliveries` table and a message on `ecrm.deliveries` (agents/delivery/records.py).

Providers and how their callbacks prove who sent them (docs/delivery.md, "Receipts"):

- a `webhook` provider (the shop, an e-mail relay): the ECRM-Signature header under the
  provider's secret, over a JSON object or array of `{action_id, status, provider_id?}`;
- `aliyun_sms`, `tencent_sms`, `wechat` (their status reports carry no signature): the
  callback URL's `?token=`, compared with the provider's `receipt_token` secret; the action is
  found by Aliyun's `out_id` (the action id, set when sending) or by the provider's message id
  (Tencent's `sid`, the `SerialNo` it answered the send with).
"""

from __future__ import annotations

import hmac
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse

from agents.delivery.channels.base import read_secret
from agents.delivery.records import DeliveryRecords
from agents.delivery.signing import SIGNATURE_HEADER, BadSignature, read_click_token, verify_webhook
from agents.privacy.consent import consent_event
from agents.reloading_file import ReloadingFile
from ecrm.api.producer import BrokerUnavailable
from schemas.delivery import DELIVERY_STATUSES, Deliver, Receipt, load_delivery
from schemas.errors import ConfigError
from schemas.privacy import BadToken, read_unsubscribe_token
from streams.redis_client import async_client
from streams.settings import Settings

router = APIRouter()


class ReceiptBook(ReloadingFile):
    """The delivery file as the API reads it: the providers' names and secrets."""

    what = "delivery file"
    deliver: Deliver

    def _load(self, *, reloading: bool) -> None:
        self.deliver = load_delivery(self.path)


class ReceiptDesk:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = async_client(settings.redis_url, settings.redis_cluster)
        self.records = DeliveryRecords(self.client, settings.partitions, settings.topic_prefix)
        self._book: ReceiptBook | None = None

    @property
    def deliver(self) -> Deliver:
        if self._book is None:
            self._book = ReceiptBook(self.settings.delivery_file)
        else:
            self._book.reload_if_changed()
        return self._book.deliver

    async def known(self, action_id: str) -> dict[str, Any]:
        """What the delivery record knows of an action (rule, customer, channel, provider)."""
        raw = await self.records.action_json(action_id)
        if raw is None:
            return {}
        action = orjson.loads(raw)
        return {
            "rule_id": action.get("rule_id", ""),
            "customer_id": action.get("customer_id", ""),
            "channel": action.get("channel") or "",
        }


def _desk(request: Request) -> ReceiptDesk:
    desk = getattr(request.app.state, "receipts", None)
    if desk is None:
        desk = request.app.state.receipts = ReceiptDesk(request.app.state.ctx.settings)
    return desk


def _steps(provider_type: str, data: Any) -> list[dict[str, Any]]:
    """(action id, status, provider id) of each report in a callback body, by provider."""
    items = data if isinstance(data, list) else [data]
    steps = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if provider_type == "aliyun_sms":
            ok = item.get("success") in (True, "true")
            action_id, status, pid = (
                item.get("out_id"),
                "delivered" if ok else "bounced",
                item.get("biz_id"),
            )
        elif provider_type == "tencent_sms":
            ok = item.get("report_status") == "SUCCESS"
            action_id, status, pid = (
                None,  # Tencent's report names the send by its SerialNo (`sid`) only
                "delivered" if ok else "bounced",
                item.get("sid"),
            )
        else:
            action_id, status, pid = (
                item.get("action_id"),
                item.get("status"),
                item.get("provider_id"),
            )
        if (action_id or pid) and status in DELIVERY_STATUSES:
            reason = (
                ""
                if status not in ("bounced", "failed")
                else str(item.get("err_msg") or item.get("errmsg") or item.get("reason") or "")
            )
            steps.append(
                {
                    "action_id": str(action_id or ""),
                    "status": status,
                    "provider_id": str(pid or ""),
                    "reason": reason,
                }
            )
    return steps


@router.post("/v1/receipts/{provider}", tags=["delivery"])
async def receipt(provider: str, request: Request) -> JSONResponse:
    """A provider reports what became of messages (module docstring)."""
    desk = _desk(request)
    spec = desk.deliver.providers.get(provider)
    if spec is None:
        raise HTTPException(404, f"no provider {provider!r} in the delivery file")
    body = await request.body()
    try:
        if spec.type == "webhook":
            verify_webhook(
                read_secret(spec.secret).encode(),
                body,
                request.headers.get(SIGNATURE_HEADER, ""),
                int(time.time()),
            )
        else:
            expected = getattr(spec, "receipt_token", None)
            if expected is None:
                raise HTTPException(
                    403, f"provider {provider!r} has no receipt_token: in the delivery file"
                )
            given = request.query_params.get("token", "")
            if not hmac.compare_digest(given, read_secret(expected)):
                raise BadSignature("the token does not match the provider's receipt_token")
    except BadSignature as exc:
        raise HTTPException(401, str(exc)) from exc
    except ConfigError as exc:
        raise HTTPException(503, str(exc)) from exc
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, f"not JSON: {exc}") from exc
    steps = _steps(spec.type, data)
    now = datetime.now(UTC)
    accepted = 0
    for step in steps:
        if not step["action_id"]:
            found = await desk.records.action_for(provider, step["provider_id"])
            if found is None:
                continue  # a message ecrm did not send, or whose record expired
            step["action_id"] = found
        accepted += 1
        known = await desk.known(step["action_id"])
        await desk.records.receipt(Receipt(provider=provider, at=now, **{**known, **step}))
    # the answers the providers expect of a callback
    if spec.type == "aliyun_sms":
        return JSONResponse({"code": 0, "msg": "成功"})
    if spec.type == "tencent_sms":
        return JSONResponse({"result": 0, "errmsg": "OK"})
    return JSONResponse({"accepted": accepted})


@router.get("/r/{token}", tags=["delivery"], include_in_schema=False)
async def click(token: str, request: Request) -> RedirectResponse:
    """A tracked link: the click is recorded, then the shopper goes where the link said."""
    desk = _desk(request)
    try:
        action_id, url = read_click_token(token, desk.settings.privacy_key())
    except BadSignature as exc:
        raise HTTPException(404, "no such link") from exc
    known = await desk.known(action_id)
    await desk.records.receipt(
        Receipt(action_id=action_id, status="clicked", at=datetime.now(UTC), **known)
    )
    return RedirectResponse(url, status_code=302)


@router.post("/v1/unsubscribe", tags=["delivery"])
async def unsubscribe(token: str, request: Request) -> JSONResponse:
    """One-click unsubscribe (RFC 8058): the address of an e-mail's List-Unsubscribe header
    (`unsubscribe_url: https://crm.shop.example/v1/unsubscribe?token={token}`). The token
    (schemas/privacy.py) opts its customer out of its channel, as `ecrm customer unsubscribe
    TOKEN` does: a member update on `ecrm.customers`, which `ecrm deliver` reads before every
    later send."""
    ctx = request.app.state.ctx
    try:
        customer_id, channels = read_unsubscribe_token(token, ctx.settings.privacy_key())
    except BadToken as exc:
        raise HTTPException(404, "no such subscription") from exc
    event = consent_event(
        customer_id, dict.fromkeys(channels, False), datetime.now(UTC), "unsubscribe"
    )
    topic = ctx.settings.topic("customers")
    try:
        await ctx.producer.send_all([(topic, customer_id.encode(), orjson.dumps(event))])
    except BrokerUnavailable as exc:
        raise HTTPException(503, "try again in a moment") from exc
    return JSONResponse({"unsubscribed": channels})
