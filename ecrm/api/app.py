"""The `ecrm api` application: ingestion, reading, metrics and the dashboard in one FastAPI app.

`create_app(settings)` reads the keys from `settings.keys_file`; a process that owns the
embedded chdb passes it (`create_app(settings, clickhouse=ch)`); uvicorn serves the result.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles

from ecrm.api import dashboard, ingest, reading, receipts
from ecrm.api.context import Analysis, ApiContext
from ecrm.api.keys import ApiKey, Keyring, load_keys
from ecrm.api.producer import AckedProducer
from ecrm.api.ratelimit import RateLimits
from streams.clickhouse import ClickHouse
from streams.kafka_auth import KafkaAuth
from streams.settings import Settings

STATIC = Path(__file__).resolve().parent / "static"


def create_app(
    settings: Settings,
    *,
    clickhouse: ClickHouse | None = None,
    keys: list[ApiKey] | None = None,
) -> FastAPI:
    """The app; `keys` (tests, the demo) instead of the keys file; `clickhouse`: a connection
    this process owns (else opened per request, as `ecrm sql` does)."""
    keys = load_keys(settings.keys_file) if keys is None else keys
    ctx = ApiContext(
        settings=settings,
        keyring=Keyring(keys),
        keys=keys,
        producer=AckedProducer(settings.kafka_bootstrap, auth=KafkaAuth.of(settings)),
        analysis=Analysis(settings.clickhouse_url, clickhouse),
        limits=RateLimits(settings.api_rate_per_s),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await ctx.producer.stop()

    app = FastAPI(
        title="ecrm",
        summary="Segment-compatible ingestion, live profiles, audiences, metrics, dashboard",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.ctx = ctx

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        ctx.metrics.latency.labels(route=name).observe(time.perf_counter() - started)
        ctx.metrics.requests.labels(route=name, status=str(response.status_code)).inc()
        return response

    app.include_router(ingest.router)
    app.include_router(reading.router)
    app.include_router(dashboard.router)
    app.include_router(receipts.router)  # delivery receipts and click links (docs/delivery.md)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
