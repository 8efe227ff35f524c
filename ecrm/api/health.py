"""Liveness and readiness: `/healthz` says the process serves; `/readyz` says whether what
ingestion and the profile API need answers — the broker and Redis — each `ok` or what is
wrong. ClickHouse is not part of readiness: only the analysts' endpoints use it, and they
answer 503 themselves, saying why (with the embedded chdb held by `ecrm up` it is never
this process's to open)."""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ecrm.api.context import ApiContext

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """Liveness: 200 while the process serves HTTP."""
    return JSONResponse({"status": "ok", "at": datetime.now(UTC).isoformat()})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 when the broker and Redis answer, else 503 with what is wrong."""
    ctx: ApiContext = request.app.state.ctx
    broker = (
        "ok" if await ctx.producer.reachable() else f"unavailable: {ctx.settings.kafka_bootstrap}"
    )
    if broker == "ok" and not ctx.topics_ready.is_set():
        broker = "ok, but the topics are not made yet"
    checks = {"broker": broker, "redis": await redis_state(ctx)}
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "not ready", **checks}
    body["at"] = datetime.now(UTC).isoformat()
    return JSONResponse(body, status_code=200 if ready else 503)


async def redis_state(ctx: ApiContext) -> str:
    client = ctx.limits.redis
    if client is None:
        return "not used"
    try:
        await client.ping()
    except (redis.RedisError, OSError) as exc:
        return f"unavailable: {exc}"
    return "ok"
