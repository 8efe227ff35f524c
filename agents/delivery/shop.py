"""The two questions `ecrm deliver` asks the shop, each a signed POST (the webhook signature):
the recipient's address on a channel (ecrm keeps no phone numbers, e-mail addresses or
openids), and a coupon code for a coupon action (minted once per action id)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from agents.delivery.channels.base import Outcome, read_secret
from agents.delivery.channels.webhook import signed_post_headers
from schemas.delivery import Contacts, Coupons
from schemas.outputs import Action


class ShopAnswer(Exception):
    """The shop did not answer usefully; `outcome` says whether to retry."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


async def _ask(
    http: httpx.AsyncClient, url: str, secret: bytes, payload: dict[str, Any], key: str, want: str
) -> str:
    body = orjson.dumps(payload)
    try:
        answer = await http.post(url, content=body, headers=signed_post_headers(secret, body, key))
    except httpx.HTTPError as exc:
        raise ShopAnswer(Outcome("retry", reason=f"{url}: {type(exc).__name__}: {exc}")) from exc
    if answer.status_code >= 500 or answer.status_code in (408, 429):
        raise ShopAnswer(Outcome("retry", reason=f"{url}: HTTP {answer.status_code}"))
    if answer.status_code == 404:
        raise ShopAnswer(Outcome("failed", reason=f"the shop knows no {want} for it"))
    if answer.status_code >= 300:
        raise ShopAnswer(Outcome("failed", reason=f"{url}: HTTP {answer.status_code}"))
    try:
        value = orjson.loads(answer.content)[want]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ShopAnswer(Outcome("failed", reason=f"{url} answered without {want!r}")) from exc
    if not value:
        raise ShopAnswer(Outcome("failed", reason=f"the shop has no {want} for it"))
    return str(value)


class Shop:
    def __init__(self, contacts: Contacts | None, coupons: Coupons | None) -> None:
        self.contacts = contacts
        self.coupons = coupons
        self.contacts_secret = read_secret(contacts.secret).encode() if contacts else b""
        self.coupons_secret = read_secret(coupons.secret).encode() if coupons else b""
        self.http = httpx.AsyncClient(timeout=10.0)

    async def address(self, action: Action, channel: str) -> str:
        """The customer's address on `channel`; ShopAnswer when there is none."""
        if self.contacts is None:
            raise ShopAnswer(
                Outcome(
                    "failed",
                    reason=f"no contacts: in the delivery file to find {channel} addresses",
                )
            )
        payload = {"customer_id": action.customer_id, "channel": channel}
        return await _ask(
            self.http, self.contacts.url, self.contacts_secret, payload, action.action_id, "address"
        )

    async def coupon_code(self, action: Action) -> str:
        """A code minted by the shop for this coupon action (idempotent on the action id)."""
        if self.coupons is None:
            raise ShopAnswer(
                Outcome("failed", reason="no coupons: in the delivery file to mint the code")
            )
        payload = action.model_dump(mode="json")
        payload["params"].pop("unsubscribe_token", None)
        return await _ask(
            self.http, self.coupons.url, self.coupons_secret, payload, action.action_id, "code"
        )

    async def close(self) -> None:
        await self.http.aclose()
