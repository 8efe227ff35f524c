"""Ingestion over HTTP: Segment's /v1/track, /v1/page, /v1/identify, /v1/alias, /v1/batch and
ecrm's own /v1/events/{topic}, each event validated by the worker's own decoder, answered
200 only once the broker has acknowledged it (docs/api.md)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from agents.profile.incoming import decode
from ecrm.api import segment
from ecrm.api.context import ApiContext, require_key
from ecrm.api.producer import BrokerUnavailable
from ecrm.api.segment import Mapped, Refused

#: Segment's limits: 32 KB an event, 500 KB a batch request
MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
#: the storefront topics /v1/events/{topic} takes (campaigns are `ecrm campaign send`'s)
EVENT_TOPICS = ("orders", "cart", "favorites", "browse", "identities")

router = APIRouter(tags=["ingestion"])


@dataclass
class Outcome:
    """One event's answer: accepted onto a topic, or refused with the reason."""

    index: int
    topic: str | None = None
    event: dict[str, Any] | None = None
    reason: str | None = None

    def answer(self) -> dict[str, Any]:
        if self.reason is not None:
            return {"index": self.index, "status": "refused", "reason": self.reason}
        assert self.event is not None
        return {
            "index": self.index,
            "status": "accepted",
            "topic": self.topic,
            "event_id": self.event["event_id"],
        }


def checked(ctx: ApiContext, index: int, mapped: Mapped, now: datetime) -> Outcome:
    """Validated exactly as the worker will (agents/profile/incoming.py `decode`)."""
    if isinstance(mapped, Refused):
        return Outcome(index, reason=mapped.reason)
    topic, event = mapped
    raw = orjson.dumps(event)
    if len(raw) > MAX_EVENT_BYTES:
        return Outcome(index, reason=f"the event is {len(raw):,} bytes; at most 32 KB")
    window = ctx.settings.time_window(now)
    item = decode(ctx.settings.topic(topic), topic, 0, 0, None, raw, window)
    if item.error is not None:
        return Outcome(index, topic, reason=item.error)
    return Outcome(index, topic, event)


async def body_json(request: Request, limit: int) -> Any:
    """The request's JSON body; 413 past `limit` bytes, 400 when not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the body is {int(declared):,} bytes; at most {limit // 1024} KB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"the body is over {limit // 1024} KB")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, f"the body is not JSON: {exc}") from exc


async def deliver(ctx: ApiContext, key_name: str, outcomes: list[Outcome]) -> None:
    """Rate-limit then send the accepted events; 429 or 503 refuse the whole request."""
    accepted = [o for o in outcomes if o.reason is None]
    rate = ctx.rate_of(key_name)
    wait = ctx.limits.take(key_name, len(accepted), time.monotonic(), rate)
    if wait:
        ctx.metrics.refused.labels(reason="rate_limited").inc(len(accepted))
        raise HTTPException(
            429,
            f"key {key_name!r} is over its {rate:g} events a second; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    messages = []
    for o in accepted:
        assert o.event is not None and o.topic is not None
        messages.append(
            (
                ctx.settings.topic(o.topic),
                str(o.event["customer_id"]).encode(),
                orjson.dumps({**o.event, "source": key_name}),
            )
        )
    try:
        await ctx.producer.send_all(messages)
    except BrokerUnavailable as exc:
        ctx.metrics.refused.labels(reason="broker_unavailable").inc(len(accepted))
        raise HTTPException(
            503,
            f"{exc}; nothing was accepted, send again",
            headers={"Retry-After": str(ctx.settings.api_retry_after_s)},
        ) from exc
    for o in accepted:
        ctx.metrics.events.labels(topic=o.topic, source=key_name).inc()
    for o in outcomes:
        if o.reason is not None:
            ctx.metrics.refused.labels(reason="invalid").inc()


async def one(
    request: Request, mapping: Callable[[Mapping[str, Any], datetime], Mapped]
) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    key = require_key(request, "write")
    message = await body_json(request, MAX_EVENT_BYTES)
    if not isinstance(message, dict):
        raise HTTPException(400, "the body must be a JSON object")
    now = datetime.now(UTC)
    outcome = checked(ctx, 0, mapping(message, now), now)
    if outcome.reason is not None:
        ctx.metrics.refused.labels(reason="invalid").inc()
        raise HTTPException(400, outcome.reason)
    await deliver(ctx, key.name, [outcome])
    return JSONResponse({"success": True, **outcome.answer()})


@router.post("/v1/track", summary="Segment track: an e-commerce event")
async def track(request: Request) -> JSONResponse:
    return await one(request, segment.from_track)


@router.post("/v1/page", summary="Segment page: a page view (browse with its url)")
async def page(request: Request) -> JSONResponse:
    return await one(request, segment.from_page)


@router.post("/v1/identify", summary="Segment identify: link anonymousId to userId")
async def identify(request: Request) -> JSONResponse:
    return await one(request, segment.from_identify)


@router.post("/v1/alias", summary="Segment alias: previousId is userId from now on")
async def alias(request: Request) -> JSONResponse:
    return await one(request, segment.from_alias)


@router.post("/v1/batch", summary="Segment batch: many calls, an answer for each")
async def batch(request: Request) -> JSONResponse:
    ctx: ApiContext = request.app.state.ctx
    key = require_key(request, "write")
    body = await body_json(request, MAX_BATCH_BYTES)
    items = body.get("batch") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise HTTPException(400, 'the body must be {"batch": [ ... ]}')
    now = datetime.now(UTC)
    outcomes = []
    for i, message in enumerate(items):
        kind = message.get("type") if isinstance(message, dict) else None
        mapping = segment.BY_TYPE.get(kind) if isinstance(kind, str) else None
        if mapping is None:
            known = ", ".join(segment.BY_TYPE)
            outcomes.append(Outcome(i, reason=f"type {kind!r} is not one of {known}"))
            continue
        outcomes.append(checked(ctx, i, mapping(message, now), now))
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


@router.post("/v1/events/{topic}", summary="ecrm's own event shape (CONTRACT.md) onto a topic")
async def contract_event(topic: str, request: Request) -> JSONResponse:
    if topic not in EVENT_TOPICS:
        raise HTTPException(404, f"no input topic {topic!r}; ecrm takes {', '.join(EVENT_TOPICS)}")

    def as_is(message: Mapping[str, Any], now: datetime) -> Mapped:
        return topic, dict(message)

    return await one(request, as_is)
