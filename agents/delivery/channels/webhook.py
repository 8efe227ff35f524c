"""Webhook: the action as JSON, POSTed with `Idempotency-Key: <action id>` and the signature
header (agents/delivery/signing.py); 2xx sent, 4xx failed, 5xx and timeouts retried."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from agents.delivery.channels.base import Message, Outcome, http_outcome, read_secret
from agents.delivery.signing import SIGNATURE_HEADER, webhook_signature
from schemas.delivery import WebhookProvider


def signed_post_headers(secret: bytes, body: bytes, idempotency_key: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key,
        SIGNATURE_HEADER: webhook_signature(secret, body, int(time.time())),
    }


def webhook_body(message: Message) -> bytes:
    payload: dict[str, Any] = message.action.model_dump(mode="json")
    if message.coupon_code is not None:
        payload["coupon_code"] = message.coupon_code
    if message.rendered is not None and message.rendered.text:
        payload["text"] = message.rendered.text
        payload["locale"] = message.rendered.locale
    return orjson.dumps(payload)


class WebhookChannel:
    def __init__(self, name: str, provider: WebhookProvider) -> None:
        self.name = name
        self.provider = provider
        self.secret = read_secret(provider.secret).encode()
        self.http = httpx.AsyncClient(timeout=provider.timeout.total_seconds())

    async def send(self, message: Message) -> Outcome:
        action = message.action
        # a `kind: webhook` rule names its own address; other channels go to the provider's
        url = str(action.params.get("url") or self.provider.url)
        body = webhook_body(message)
        try:
            answer = await self.http.post(
                url, content=body, headers=signed_post_headers(self.secret, body, action.action_id)
            )
        except httpx.TimeoutException:
            return Outcome("retry", reason=f"no answer from {url} within {self.provider.timeout}")
        except httpx.HTTPError as exc:
            return Outcome("retry", reason=f"{url}: {type(exc).__name__}: {exc}")
        return http_outcome(answer.status_code, answer.text, answer.headers.get("X-Request-Id", ""))

    async def close(self) -> None:
        await self.http.aclose()
