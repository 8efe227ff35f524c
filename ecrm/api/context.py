"""What every endpoint of one API process shares: settings, keys, limits, the producer,
ClickHouse, metrics; and the key check each endpoint starts with."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import HTTPException, Request
from prometheus_client import CollectorRegistry, Counter, Histogram

from ecrm.api.keys import ApiKey, Keyring, Kind, Refusal
from ecrm.api.producer import AckedProducer
from ecrm.api.ratelimit import RateLimits
from schemas.errors import ClickHouseError
from streams.analysis import open_for_analysis
from streams.clickhouse import ClickHouse
from streams.settings import Settings

T = TypeVar("T")


class ApiMetrics:
    """The API's own Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "ecrm_api_events_accepted",
            "Events the broker acknowledged, by topic and key",
            ["topic", "source"],
            registry=self.registry,
        )
        self.refused = Counter(
            "ecrm_api_events_refused",
            "Events refused, by reason (invalid, rate_limited, broker_unavailable)",
            ["reason"],
            registry=self.registry,
        )
        self.requests = Counter(
            "ecrm_api_requests",
            "Requests answered, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ecrm_api_request_seconds",
            "Request latency by route",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


class Analysis:
    """ClickHouse for the read endpoints and the dashboard: the caller's own connection when
    it holds one (`ecrm demo --serve` owns the embedded chdb), else opened per request as
    `ecrm sql` opens it (a server read-only; chdb directly, or through `ecrm up` while it
    holds the folder: streams/clickhouse_served.py)."""

    def __init__(self, url: str, owned: ClickHouse | None = None) -> None:
        self.url = url
        self.owned = owned
        self._lock = threading.Lock()

    @contextmanager
    def _opened(self) -> Iterator[ClickHouse]:
        if self.owned is not None:
            yield self.owned
            return
        with self._lock:  # chdb: one session per process at a time
            ch = open_for_analysis(self.url)
            try:
                yield ch
            finally:
                ch.close()

    def run(self, work: Callable[[ClickHouse], T]) -> T:
        """`work(ch)`; a ClickHouse that cannot be reached becomes a 503 saying why."""
        try:
            with self._opened() as ch:
                return work(ch)
        except ClickHouseError as exc:
            raise HTTPException(503, f"ClickHouse: {exc}") from exc


@dataclass
class ApiContext:
    settings: Settings
    keyring: Keyring
    keys: list[ApiKey]
    producer: AckedProducer
    analysis: Analysis
    limits: RateLimits
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    #: set once the topics are known to exist (made in the background at start)
    topics_ready: asyncio.Event = field(default_factory=asyncio.Event)

    def rate_of(self, key_name: str) -> float:
        key = next((k for k in self.keys if k.name == key_name), None)
        return (key.rate_per_s if key else None) or self.settings.api_rate_per_s


def require_key(request: Request, kind: Kind) -> ApiKey:
    """The request's key if it is a `kind` key; else 401 (no or unknown key) or 403 (a key
    of the other kind), saying which."""
    ctx: ApiContext = request.app.state.ctx
    found = ctx.keyring.check(request.headers.get("authorization"), kind)
    if isinstance(found, Refusal):
        headers = {"WWW-Authenticate": 'Basic realm="ecrm"'} if found.status == 401 else None
        raise HTTPException(found.status, found.reason, headers=headers)
    return found
