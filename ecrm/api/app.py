"""The `ecrm api` application: ingestion, reading, metrics and the dashboard in one FastAPI app.

`create_app(settings)` reads the keys from `settings.keys_file`; a process that owns the
embedded chdb passes it (`create_app(settings, clickhouse=ch)`); uvicorn serves the result.
It serves at once: the topics are made in the background (`ensure_topics_soon`), and until
the broker answers every send is a 503 (`ecrm/api/producer.py`).

A new group of endpoints is one module with an `APIRouter` named `router`, added to
`ROUTERS`; errors come out in one shape (`ecrm/api/errors.py`) whatever the module.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles

from ecrm.api import cors, dashboard, errors, health, ingest, reading, receipts
from ecrm.api.context import Analysis, ApiContext
from ecrm.api.keys import ApiKey, Keyring, load_keys
from ecrm.api.producer import AckedProducer
from ecrm.api.ratelimit import RateLimits
from schemas.errors import KafkaError
from streams.clickhouse import ClickHouse
from streams.kafka_auth import KafkaAuth
from streams.redis_client import async_client
from streams.settings import Settings
from streams.topics import contract_topics, ensure_topics

STATIC = Path(__file__).resolve().parent / "static"
#: the endpoints, one module each (a router named `router`)
ROUTERS = (ingest, reading, health, dashboard, receipts)  # receipts: docs/delivery.md
#: how often the topics are tried again while the broker is away
TOPICS_RETRY_S = 5.0

log = logging.getLogger(__name__)


def in_daemon_thread(work: Callable[[], None]) -> asyncio.Future[None]:
    """`work()` in a thread of its own that never holds up the process's exit (a blocking
    Kafka admin call may take its time while the broker is away; asyncio's default executor
    would be waited for when the API stops)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return  # the waiter was cancelled (the API stopping)
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            work()
        except Exception as exc:  # handed to the waiter, which decides
            error = exc
        try:
            loop.call_soon_threadsafe(settle, error)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more

    threading.Thread(target=run, name="ecrm-api-topics", daemon=True).start()
    return done


async def ensure_topics_soon(settings: Settings, ready: asyncio.Event) -> None:
    """The topics the API writes to (identities and customers among them), as `ecrm worker`
    makes them; tried again until the broker answers, while the API already serves."""
    topics = list(contract_topics(settings).values())
    while True:
        try:
            await in_daemon_thread(
                lambda: ensure_topics(
                    settings.kafka_bootstrap,
                    topics,
                    settings.partitions,
                    auth=KafkaAuth.of(settings),
                )
            )
        except KafkaError as exc:
            log.warning("ecrm api: the topics are not there yet (%s); trying again", exc)
            await asyncio.sleep(TOPICS_RETRY_S)
            continue
        ready.set()
        return


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
        limits=RateLimits(
            settings.api_rate_per_s,
            async_client(
                settings.redis_url,
                settings.redis_cluster,
                socket_timeout=2,
                socket_connect_timeout=2,
            ),
        ),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        topics = asyncio.create_task(ensure_topics_soon(settings, ctx.topics_ready))
        yield
        topics.cancel()
        await ctx.producer.stop()
        if ctx.limits.redis is not None:
            await ctx.limits.redis.aclose()

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

    cors.install(app, ctx.keyring)  # outermost: answers preflights, marks allowed answers
    errors.install(app)
    for module in ROUTERS:
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
