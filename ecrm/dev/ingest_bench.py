"""`ecrm bench --only ingest`: events a second accepted through `ecrm api`'s /v1/batch (100
Segment calls a request, a real `ecrm api` process) beside the same events produced straight to
Kafka with acks=all in the same run, and the p99 latency of both."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from ecrm.api.keys import add_key
from ecrm.api.segment import Refused, from_track
from ecrm.dev.processes import stop_process
from streams.settings import Settings

BATCH = 100
IN_FLIGHT = 4


def segment_calls(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """A storefront's mix: views, cart adds and orders of 2,000 customers, as Segment sends them."""
    rng = random.Random(seed)  # noqa: S311 - seeded synthetic traffic
    now = datetime.now(UTC).isoformat()
    calls = []
    for i in range(n):
        customer = f"b-{rng.randrange(2000)}"
        sku = f"sku-{rng.randrange(300)}"
        roll = rng.random()
        if roll < 0.7:
            name, props = "Product Viewed", {"sku": sku, "category": "tea"}
        elif roll < 0.9:
            name, props = "Product Added", {"sku": sku, "quantity": 1, "price": "39.00"}
        else:
            name, props = "Order Completed", {"order_id": f"o-{i}", "total": "39.00"}
        calls.append(
            {
                "type": "track",
                "event": name,
                "userId": customer,
                "messageId": f"bench-{i}",
                "timestamp": now,
                "properties": props,
            }
        )
    return calls


def _pct(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _through_api(
    url: str, key: str, calls: list[dict[str, Any]]
) -> tuple[float, list[float]]:
    batches = [calls[i : i + BATCH] for i in range(0, len(calls), BATCH)]
    latencies: list[float] = []
    queue = asyncio.Queue[list[dict[str, Any]]]()
    for b in batches:
        queue.put_nowait(b)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, auth=(key, ""), timeout=60) as http:
            while not queue.empty():
                body = orjson.dumps({"batch": queue.get_nowait()})
                started = time.perf_counter()
                answer = await http.post(
                    "/v1/batch", content=body, headers={"content-type": "application/json"}
                )
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 200 or answer.json()["refused"]:
                    raise SystemExit(
                        f"bench: /v1/batch answered {answer.status_code} {answer.text[:300]}"
                    )

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(IN_FLIGHT)))
    return len(calls) / (time.perf_counter() - t0), latencies


async def _straight_to_kafka(
    s: Settings, messages: list[tuple[str, bytes, bytes]]
) -> tuple[float, list[float]]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=s.kafka_bootstrap.split(","), acks="all", linger_ms=2
    )
    await producer.start()
    latencies: list[float] = []
    batches = [messages[i : i + BATCH] for i in range(0, len(messages), BATCH)]
    queue = asyncio.Queue[list[tuple[str, bytes, bytes]]]()
    for b in batches:
        queue.put_nowait(b)

    async def client() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            started = time.perf_counter()
            futures = [await producer.send(t, value=v, key=k) for t, k, v in batch]
            await asyncio.gather(*futures)
            latencies.append(time.perf_counter() - started)

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(IN_FLIGHT)))
        return len(messages) / (time.perf_counter() - t0), latencies
    finally:
        await producer.stop()


def ingest(s: Settings, work: Path, quick: bool) -> dict[str, Any]:
    n = 20_000 if quick else 100_000
    calls = segment_calls(n)
    now = datetime.now(UTC)
    messages = []
    for call in calls:
        mapped = from_track(call, now)
        assert not isinstance(mapped, Refused)
        [(topic, event)] = mapped
        messages.append((s.topic(topic), event["customer_id"].encode(), orjson.dumps(event)))
    keys = work / "bench-api-keys.yaml"
    key = add_key(keys, f"bench-{s.app_id}", "write", rate_per_s=10_000_000)
    port = _free_port()
    env = {**os.environ, **s.as_env(), "ECRM_API_KEYS_FILE": str(keys)}
    log = (work / "api.log").open("ab")
    proc = subprocess.Popen(  # noqa: S603 - our own command
        [sys.executable, "-m", "ecrm", "api", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/openapi.json", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("bench: ecrm api did not start; see api.log") from None
                time.sleep(0.2)
        api_rate, api_lat = asyncio.run(_through_api(url, key, calls))
    finally:
        stop_process(proc)
        log.close()
    kafka_rate, kafka_lat = asyncio.run(_straight_to_kafka(s, messages))
    return {
        "events": n,
        "batch": BATCH,
        "in_flight": IN_FLIGHT,
        "api_events_per_s": round(api_rate),
        "kafka_events_per_s": round(kafka_rate),
        "ratio": round(api_rate / kafka_rate, 4),
        "api_request_p50_ms": round(_pct(api_lat, 0.5) * 1000, 1),
        "api_request_p99_ms": round(_pct(api_lat, 0.99) * 1000, 1),
        "kafka_batch_p50_ms": round(_pct(kafka_lat, 0.5) * 1000, 1),
        "kafka_batch_p99_ms": round(_pct(kafka_lat, 0.99) * 1000, 1),
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
