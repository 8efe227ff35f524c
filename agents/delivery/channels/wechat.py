"""WeChat: an official account's template message (`cgi-bin/message/template/send`, with
`client_msg_id` = the action id, which WeChat dedupes per recipient) or a mini program's
subscribe message (`cgi-bin/message/subscribe/send`). The access token is fetched with the
app secret (`cgi-bin/token`), cached in Redis for every `ecrm deliver` until shortly before it
expires, and fetched again at once when WeChat says it is invalid or expired."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from agents.delivery.channels.base import Message, Outcome, read_secret
from schemas.delivery import WechatProvider
from streams import keyspace

#: the token is dropped this long before WeChat's expiry, so none is used as it lapses
TOKEN_MARGIN_S = 300
#: errcodes meaning the access token is bad: fetch a new one and send again
TOKEN_ERRORS = frozenset({40001, 40014, 42001})
#: errcodes meaning "not now": system busy, API rate limits
RETRY_ERRORS = frozenset({-1, 45009, 45011, 45047})


class WechatChannel:
    def __init__(self, name: str, provider: WechatProvider) -> None:
        self.name = name
        self.provider = provider
        self.app_secret = read_secret(provider.app_secret)
        self.http = httpx.AsyncClient(timeout=provider.timeout.total_seconds())
        self.redis: Any = None
        self._token: str | None = None  # without Redis (tests of the adapter alone)
        #: how many tokens this process fetched (operators, tests)
        self.fetched = 0

    def use_redis(self, client: Any) -> None:
        self.redis = client

    async def token(self, *, fresh: bool = False) -> str:
        key = keyspace.delivery_token(self.name)
        if not fresh:
            cached = await self.redis.get(key) if self.redis is not None else self._token
            if cached:
                return cached.decode() if isinstance(cached, bytes) else str(cached)
        answer = await self.http.get(
            f"{self.provider.api}/cgi-bin/token",
            params={
                "grant_type": "client_credential",
                "appid": self.provider.app_id,
                "secret": self.app_secret,
            },
        )
        data = orjson.loads(answer.content)
        if "access_token" not in data:
            raise TokenRefused(
                f"WeChat refused the access token: {data.get('errcode')} {data.get('errmsg')}"
            )
        token = str(data["access_token"])
        ttl = max(int(data.get("expires_in", 7200)) - TOKEN_MARGIN_S, 60)
        self.fetched += 1
        if self.redis is not None:
            await self.redis.set(key, token, ex=ttl)
        else:
            self._token = token
        return token

    def body(self, message: Message) -> dict[str, Any]:
        assert message.rendered is not None
        fields = dict(message.rendered.fields)
        page = fields.pop("__page__", None)
        data = {k: {"value": v} for k, v in fields.items()}
        body: dict[str, Any] = {
            "touser": message.address,
            "template_id": message.rendered.template_id,
            "data": data,
        }
        if self.provider.kind == "official_account":
            body["client_msg_id"] = message.action.action_id
            if page:
                body["url"] = page
        elif page:
            body["page"] = page
        return body

    async def send(self, message: Message) -> Outcome:
        if message.address is None or message.rendered is None:
            return Outcome("failed", reason="no openid or no WeChat template")
        path = (
            "message/template/send"
            if self.provider.kind == "official_account"
            else "message/subscribe/send"
        )
        fresh = False
        for _ in range(2):
            try:
                token = await self.token(fresh=fresh)
                answer = await self.http.post(
                    f"{self.provider.api}/cgi-bin/{path}",
                    params={"access_token": token},
                    content=orjson.dumps(self.body(message)),
                )
                data = orjson.loads(answer.content)
            except TokenRefused as exc:
                return Outcome("failed", reason=str(exc))
            except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
                return Outcome("retry", reason=f"WeChat: {type(exc).__name__}: {exc}")
            code = int(data.get("errcode", 0))
            if code == 0:
                return Outcome("sent", str(data.get("msgid", "")))
            if code in TOKEN_ERRORS and not fresh:
                fresh = True
                continue
            reason = f"WeChat {code}: {data.get('errmsg', '')}"
            return Outcome("retry" if code in RETRY_ERRORS else "failed", reason=reason)
        return Outcome("retry", reason="WeChat refused a fresh access token")

    async def close(self) -> None:
        await self.http.aclose()


class TokenRefused(Exception):
    """WeChat would not give an access token (a wrong app secret, an IP not allow-listed)."""
