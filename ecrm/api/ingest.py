"""Ingestion over HTTP: Segment's /v1/track, /v1/page, /v1/identify, /v1/alias, /v1/batch (and
the browser library's short paths /v1/t, /p, /i, /a, /b) and ecrm's own /v1/events/{topic},
each event validated by the worker's own decoder, answered 200 only once the broker has
acknowledged it (docs/api.md).

The body may be gzip or deflate, JSON or text/plain (`ecrm/api/body.py`); the write key comes
as HTTP Basic or, from browsers, as `writeKey` in the body; a page's origin must be one its key
allows (`ecrm/api/cors.py`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from agents.profile.incoming import decode
from ecrm.api import cors, segment
from ecrm.api.body import body_json
from ecrm.api.context import ApiContext, require_key
from ecrm.api.keys import ApiKey, Refusal
from ecrm.api.producer import BrokerUnavailable
from ecrm.api.segment import Mapped, Refused, Sent

#: Segment's limits: 32 KB an event, 500 KB a batch request (decoded, as sent)
MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
#: the storefront topics /v1/events/{topic} takes (campaigns are `ecrm campaign send`'s)
EVENT_TOPICS = ("orders", "cart", "favorites", "browse", "identities", "customers")

router = APIRouter(tags=["ingestion"])


@dataclass
class Outcome:
    """One call's answer: the events it sent (none for a call with nothing to record), or
    refused with the reason."""

    index: int
    sent: list[Sent] = field(default_factory=list)
    reason: str | None = None

    def answer(self) -> dict[str, Any]:
        if self.reason is not None:
            return {"index": self.index, "status": "refused", "reason": self.reason}
        first = self.sent[0] if self.sent else (None, {"event_id": None})
        out: dict[str, Any] = {
            "index": self.index,
            "status": "accepted",
            "topic": first[0],
            "event_id": first[1]["event_id"],
        }
        if not self.sent:
            out["note"] = "nothing for ecrm to record in this call"
        if len(self.sent) > 1:
            out["events"] = [{"topic": t, "event_id": e["event_id"]} for t, e in self.sent]
        return out


def checked(ctx: ApiContext, index: int, mapped: Mapped, now: datetime) -> Outcome:
    """Each event validated exactly as the worker will (agents/profile/incoming.py `decode`)."""
    if isinstance(mapped, Refused):
        return Outcome(index, reason=mapped.reason)
    window = ctx.settings.time_window(now)
    for topic, event in mapped:
        item = decode(ctx.settings.topic(topic), topic, 0, 0, None, orjson.dumps(event), window)
        if item.error is not None:
            return Outcome(index, reason=item.error)
    return Outcome(index, list(mapped))


def as_sent_size(message: Any) -> int:
    """An event's size as its sender wrote it (compact JSON, as the libraries write it)."""
    return len(orjson.dumps(message))


async def writer(request: Request, body: Any = None) -> ApiKey:
    """The write key: HTTP Basic, else the body's `writeKey` (the browser library, whose
    text/plain calls carry it there); taken out of the body. The page's origin is checked."""
    ctx: ApiContext = request.app.state.ctx
    sent_key = body.pop("writeKey", None) if isinstance(body, dict) else None
    if request.headers.get("authorization") or not isinstance(sent_key, str):
        key = require_key(request, "write")
    else:
        found = ctx.keyring.check_key(sent_key, "write")
        if isinstance(found, Refusal):
            raise HTTPException(found.status, found.reason)
        key = found
    cors.allow(request, key)
    return key


async def within_rate(ctx: ApiContext, key: ApiKey, n: int) -> None:
    """Take `n` events from the key's bucket; 429 with Retry-After when it may not."""
    verdict = await ctx.limits.take(key.name, n, ctx.rate_of(key.name))
    if verdict.allowed:
        return
    ctx.metrics.refused.labels(reason="rate_limited").inc(n)
    if verdict.too_large:
        why = (
            f"key {key.name!r} may send {verdict.rate:g} events a second, at most "
            f"{verdict.capacity:g} in one request; this one has {n}: send it in smaller batches"
        )
    else:
        why = (
            f"key {key.name!r} is over its {verdict.rate:g} events a second "
            f"(bursts up to {verdict.capacity:g}); retry in {verdict.wait_s} s"
        )
    raise HTTPException(429, why, headers={"Retry-After": str(verdict.wait_s)})


async def deliver(ctx: ApiContext, key_name: str, outcomes: list[Outcome]) -> None:
    """Send the accepted events; 503 when the broker did not acknowledge them all."""
    sent = [s for o in outcomes if o.reason is None for s in o.sent]
    messages = [
        (
            ctx.settings.topic(topic),
            str(event["customer_id"]).encode(),
            orjson.dumps({**event, "source": key_name}),
        )
        for topic, event in sent
    ]
    try:
        await ctx.producer.send_all(messages)
    except BrokerUnavailable as exc:
        ctx.metrics.refused.labels(reason="broker_unavailable").inc(len(sent))
        raise HTTPException(
            503,
            f"{exc}. Some of the events may have reached it: send the same request again; "
            "each event's id (its messageId, else one made from its content and your key) "
            "makes a resend count once",
            headers={"Retry-After": str(ctx.settings.api_retry_after_s)},
        ) from exc
    for topic, _ in sent:
        ctx.metrics.events.labels(topic=topic, source=key_name).inc()
    for o in outcomes:
        if o.reason is not None:
            ctx.metrics.refused.labels(reason="invalid").inc()


async def one(
    request: Request, mapping: Callable[[Mapping[str, Any], datetime], Mapped]
) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    if request.headers.get("authorization"):
        require_key(request, "write")  # refused before the body is read
    message = await body_json(request, MAX_EVENT_BYTES)
    if not isinstance(message, dict):
        raise HTTPException(400, "the body must be a JSON object")
    key = await writer(request, message)
    await within_rate(ctx, key, 1)
    now = datetime.now(UTC)
    outcome = checked(ctx, 0, mapping(segment.with_message_id(message, key.name), now), now)
    if outcome.reason is not None:
        ctx.metrics.refused.labels(reason="invalid").inc()
        raise HTTPException(400, outcome.reason)
    await deliver(ctx, key.name, [outcome])
    return JSONResponse({"success": True, **outcome.answer()})


async def track(request: Request) -> JSONResponse:
    return await one(request, segment.from_track)


async def page(request: Request) -> JSONResponse:
    return await one(request, segment.from_page)


async def identify(request: Request) -> JSONResponse:
    return await one(request, segment.from_identify)


async def alias(request: Request) -> JSONResponse:
    return await one(request, segment.from_alias)


async def batch(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    if request.headers.get("authorization"):
        require_key(request, "write")
    body = await body_json(request, MAX_BATCH_BYTES)
    key = await writer(request, body)
    items = body.get("batch") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise HTTPException(400, 'the body must be {"batch": [ ... ]}')
    await within_rate(ctx, key, len(items))
    now = datetime.now(UTC)
    outcomes = []
    for i, message in enumerate(items):
        kind = message.get("type") if isinstance(message, dict) else None
        mapping = segment.BY_TYPE.get(kind) if isinstance(kind, str) else None
        if mapping is None:
            known = ", ".join(segment.BY_TYPE)
            outcomes.append(Outcome(i, reason=f"type {kind!r} is not one of {known}"))
            continue
        size = as_sent_size(message)
        if size > MAX_EVENT_BYTES:
            outcomes.append(Outcome(i, reason=f"the event is {size:,} bytes; at most 32 KB"))
            continue
        outcomes.append(
            checked(ctx, i, mapping(segment.with_message_id(message, key.name), now), now)
        )
    await deliver(ctx, key.name, outcomes)
    answers = [o.answer() for o in outcomes]
    accepted = sum(1 for a in answers if a["status"] == "accepted")
    return JSONResponse(
        {
            "success": accepted == len(answers),
            "accepted": accepted,
            "refused": len(answers) - accepted,
            "results": answers,
        }
    )


#: Segment's calls: (name, handler, summary); each at /v1/NAME and at the browser library's
#: /v1/N (its first letter)
CALLS: tuple[tuple[str, Callable[[Request], Any], str], ...] = (
    ("track", track, "Segment track: an e-commerce event"),
    ("page", page, "Segment page: a page view (browse with its url)"),
    ("identify", identify, "Segment identify: link anonymousId to userId; member traits"),
    ("alias", alias, "Segment alias: previousId is userId from now on"),
    ("batch", batch, "Segment batch: many calls, an answer for each"),
)
for _name, _handler, _summary in CALLS:
    router.add_api_route(f"/v1/{_name}", _handler, methods=["POST"], summary=_summary)
    router.add_api_route(
        f"/v1/{_name[0]}", _handler, methods=["POST"], summary=_summary, include_in_schema=False
    )


@router.post("/v1/events/{topic}", summary="ecrm's own event shape (CONTRACT.md) onto a topic")
async def contract_event(topic: str, request: Request) -> JSONResponse:
    if topic not in EVENT_TOPICS:
        raise HTTPException(404, f"no input topic {topic!r}; ecrm takes {', '.join(EVENT_TOPICS)}")

    def as_is(message: Mapping[str, Any], now: datetime) -> Mapped:
        return [(topic, dict(message))]

    return await one(request, as_is)


@router.get("/v1/projects/{write_key}/settings", summary="analytics.js settings for a write key")
async def browser_settings(write_key: str, request: Request) -> JSONResponse:
    """What analytics.js fetches from its `cdnURL` before sending: point `cdnURL` at ecrm and
    its events come here (`apiHost` is this API as the page reached it). 404 for a key that
    is not a write key (the browser library then does not load)."""
    ctx: ApiContext = request.app.state.ctx
    found = ctx.keyring.check_key(write_key, "write")
    if isinstance(found, Refusal):
        raise HTTPException(404, "no write key by that value")
    cors.allow(request, found)
    api_host = f"{request.url.netloc}/v1"
    return JSONResponse(
        {
            "integrations": {
                "Segment.io": {
                    "apiKey": write_key,
                    "apiHost": api_host,
                    "protocol": request.url.scheme,
                }
            },
            # the library's own telemetry would go to Segment: off
            "metrics": {"sampleRate": 0},
        }
    )
