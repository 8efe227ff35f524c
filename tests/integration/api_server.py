"""`ecrm api` served by a real uvicorn on a free port, in a thread of the test process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from ecrm.api.app import create_app
from ecrm.api.keys import ApiKey, key_hash
from streams.clickhouse import ClickHouse
from streams.settings import Settings

WRITE_KEY = "w" * 64
READ_KEY = "r" * 64
KEYS = [
    ApiKey(name="web-shop", kind="write", sha256=key_hash(WRITE_KEY)),
    ApiKey(name="crm-desk", kind="read", sha256=key_hash(READ_KEY)),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(
    settings: Settings, *, clickhouse: ClickHouse | None = None, keys: list[ApiKey] = KEYS
) -> Iterator[str]:
    """The base URL of a running API; stopped on exit."""
    with serving_app(settings, clickhouse=clickhouse, keys=keys) as (url, _):
        yield url


@contextmanager
def serving_app(
    settings: Settings, *, clickhouse: ClickHouse | None = None, keys: list[ApiKey] = KEYS
) -> Iterator[tuple[str, FastAPI]]:
    """The base URL of a running API and its app (to reach into its context); stopped on exit."""
    port = free_port()
    app = create_app(settings, clickhouse=clickhouse, keys=keys)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the API server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=15)
