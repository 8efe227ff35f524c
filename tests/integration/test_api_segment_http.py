"""What every Segment-compatible client sends, through real HTTP to a real `ecrm api`
(uvicorn on a free port, the embedded Tansu and Valkey): gzip and deflate bodies within
limits, errors with `code` and `message`, rate limits that bind across API processes, sizes
measured as sent, resends without messageId counted once, the browser library's paths and
CORS, identify traits, and liveness / readiness."""

from __future__ import annotations

import contextlib
import gzip
import os
import socket
import subprocess
import sys
import threading
import time
import zlib
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import redis

from ecrm.api.keys import ApiKey, key_hash
from tests.integration.api_server import (
    KEYS,
    READ_KEY,
    WRITE_KEY,
    free_port,
    serving,
    serving_app,
)
from tests.integration.conftest import consumed, wait_for

pytestmark = pytest.mark.integration

W = (WRITE_KEY, "")
R = (READ_KEY, "")
SHOP = "http://shop.test:8000"
BROWSER_KEY = "b" * 64
SLOW_KEY = "s" * 64
ALL_KEYS = [
    *KEYS,
    ApiKey(name="storefront", kind="write", sha256=key_hash(BROWSER_KEY), origins=(SHOP,)),
    ApiKey(name="slow", kind="write", sha256=key_hash(SLOW_KEY), rate_per_s=0.1),
]


def view(user: str, sku: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Product Viewed",
        "userId": user,
        "timestamp": datetime.now(UTC).isoformat(),
        "properties": {"sku": sku},
        **extra,
    }


def profile_of(http: httpx.Client, cid: str) -> dict[str, Any] | None:
    got = http.get(f"/v1/profiles/{cid}", auth=R)
    return got.json() if got.status_code == 200 else None


def test_gzip_and_deflate_bodies_land_and_a_compression_bomb_is_refused(settings, start_worker):
    start_worker()
    with serving(settings, keys=ALL_KEYS) as url, httpx.Client(base_url=url, timeout=30) as http:
        for i, (encoding, pack) in enumerate([("gzip", gzip.compress), ("deflate", zlib.compress)]):
            body = {"batch": [view("gz-1", f"sku-{encoding}", messageId=f"gz-{i}")]}
            answer = http.post(
                "/v1/batch",
                content=pack(orjson.dumps(body)),
                headers={"content-encoding": encoding, "content-type": "application/json"},
                auth=W,
            )
            assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
        wait_for(
            lambda: (
                set((profile_of(http, "gz-1") or {}).get("views", {}))
                >= {"sku-gzip", "sku-deflate"}
            ),
            what="both compressed views in the profile",
        )
        bomb = gzip.compress(b"[" + b" " * 100_000_000 + b"]")
        refused = http.post("/v1/batch", content=bomb, headers={"content-encoding": "gzip"}, auth=W)
        assert refused.status_code == 413, refused.text
        assert refused.json()["code"] == "payload_too_large" and "KB" in refused.json()["message"]
        broken = http.post(
            "/v1/track", content=b"\x1f\x8bnot", headers={"content-encoding": "gzip"}, auth=W
        )
        assert broken.status_code == 400 and broken.json()["code"] == "invalid_request"


def test_every_error_has_code_and_message_beside_detail(settings):
    with serving(settings, keys=ALL_KEYS) as url, httpx.Client(base_url=url, timeout=30) as http:
        answers = {
            401: http.post("/v1/track", json=view("e", "s")),
            403: http.get("/v1/profiles/e", auth=W),
            404: http.post("/v1/events/points", json={}, auth=W),
            400: http.post("/v1/track", content=b"{", auth=W),
            415: http.post("/v1/track", content=b"{}", headers={"content-encoding": "br"}, auth=W),
            422: http.get("/v1/profiles/e/decisions", params={"limit": "x"}, auth=R),
        }
        for status, answer in answers.items():
            body = answer.json()
            assert answer.status_code == status, (status, answer.text)
            assert {"detail", "code", "message"} <= set(body), body
            assert isinstance(body["code"], str) and isinstance(body["message"], str)
            assert body["message"], body
        assert answers[401].json()["code"] == "unauthorized"
        assert answers[401].headers["www-authenticate"].startswith("Basic")


def test_rate_limits_count_every_event_refuse_oversized_requests_and_bind_across_processes(
    settings,
):
    slow = (SLOW_KEY, "")
    batch = lambda n, tag: {"batch": [view("r-1", f"{tag}-{i}") for i in range(n)]}  # noqa: E731
    with (
        serving(settings, keys=ALL_KEYS) as one,
        serving(settings, keys=ALL_KEYS) as other,
        httpx.Client(timeout=30) as http,
    ):
        # --rate 0.1: bursts of 500 (one full batch); 501 events can never pass
        too_big = http.post(f"{one}/v1/batch", json=batch(501, "a"), auth=slow)
        assert too_big.status_code == 429, too_big.text
        assert "at most 500 in one request" in too_big.json()["message"]
        assert int(too_big.headers["retry-after"]) >= 1
        assert http.post(f"{one}/v1/batch", json=batch(400, "b"), auth=slow).status_code == 200
        # the other process sees the same bucket: 100 left, not another 500
        assert http.post(f"{other}/v1/batch", json=batch(100, "c"), auth=slow).status_code == 200
        over = http.post(f"{other}/v1/batch", json=batch(50, "d"), auth=slow)
        assert over.status_code == 429 and over.json()["code"] == "rate_limited"
        assert (
            int(over.headers["retry-after"]) >= 1 and "0.1 events a second" in over.json()["detail"]
        )
        # a single call takes a token too
        assert http.post(f"{one}/v1/track", json=view("r-1", "e"), auth=slow).status_code == 429
        # other keys have their own buckets
        assert http.post(f"{one}/v1/batch", json=batch(100, "f"), auth=W).status_code == 200


def test_an_event_is_measured_as_sent_inside_a_batch_too(settings):
    big = view("big", "sku", properties={"sku": "sku", "note": "x" * 40_000})
    with serving(settings, keys=ALL_KEYS) as url, httpx.Client(base_url=url, timeout=30) as http:
        answer = http.post("/v1/batch", json={"batch": [view("big", "ok"), big]}, auth=W).json()
        assert (answer["accepted"], answer["refused"], answer["success"]) == (1, 1, False)
        assert "bytes; at most 32 KB" in answer["results"][1]["reason"]
        alone = http.post("/v1/track", json=big, auth=W)
        assert alone.status_code == 413 and alone.json()["code"] == "payload_too_large"


def test_a_call_without_message_id_sent_twice_is_one_event(settings, start_worker):
    start_worker()
    added = {
        "event": "Product Added",
        "userId": "twice",
        "properties": {"sku": "tea", "price": "12.00", "quantity": 1},
    }
    with serving(settings, keys=ALL_KEYS) as url, httpx.Client(base_url=url, timeout=30) as http:
        first = http.post("/v1/track", json={**added, "sentAt": "2026-01-01T00:00:00Z"}, auth=W)
        again = http.post("/v1/track", json={**added, "sentAt": "2026-01-01T00:00:07Z"}, auth=W)
        assert first.status_code == again.status_code == 200
        assert first.json()["event_id"] == again.json()["event_id"]
        assert first.json()["event_id"].startswith("api:")
        # a later, different call is another event
        more = {**added, "properties": {**added["properties"], "sku": "cup"}}
        assert http.post("/v1/track", json=more, auth=W).status_code == 200
        seen = wait_for(
            lambda: (p := profile_of(http, "twice")) and set(p["cart"]) == {"tea", "cup"} and p,
            what="both products in the cart",
        )
        assert seen["cart"]["tea"]["qty"] == 1  # the resend counted once


def test_a_503_after_the_event_landed_is_told_truly_and_the_resend_counts_once(
    settings, start_worker
):
    """The broker takes the event but its acknowledgement comes too late (here: a producer
    that waits a microsecond): 503. The client resends as told; the event is on the topic
    twice with one id, and in the profile once."""
    from kafka import KafkaConsumer

    start_worker()
    added = {
        "event": "Product Added",
        "anonymousId": "late-ack",
        "properties": {"sku": "tea", "price": "9.00", "quantity": 1},
    }
    with serving_app(settings, keys=ALL_KEYS) as (url, app), httpx.Client(base_url=url) as http:
        producer = app.state.ctx.producer
        assert http.post("/v1/track", json={**added, "userId": "warm"}, auth=W).status_code == 200
        producer.timeout_s = 1e-6  # the acknowledgement cannot arrive in time
        late = http.post("/v1/track", json=added, auth=W, timeout=30)
        producer.timeout_s = 10.0
        assert late.status_code == 503 and late.headers["retry-after"]
        assert "may have reached it: send the same request again" in late.json()["message"]
        again = http.post("/v1/track", json=added, auth=W, timeout=30)
        assert again.status_code == 200, again.text
        consumer = KafkaConsumer(
            settings.topic("cart"),
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            consumer_timeout_ms=3000,
        )
        copies = [
            orjson.loads(m.value)
            for m in consumer
            if orjson.loads(m.value)["customer_id"] == "late-ack"
        ]
        consumer.close()
        assert len(copies) == 2 and copies[0]["event_id"] == copies[1]["event_id"]
        rds = redis.Redis.from_url(settings.redis_url)
        wait_for(lambda: consumed(rds) >= 3, what="the worker read both copies")
        rds.close()
        seen = profile_of(http, "late-ack")
        assert seen is not None and seen["cart"]["tea"]["qty"] == 1


def test_the_browser_library_path_text_plain_write_key_in_body_and_cors(settings, start_worker):
    start_worker()
    page = {"Origin": SHOP}
    with serving(settings, keys=ALL_KEYS) as url, httpx.Client(base_url=url, timeout=30) as http:
        preflight = http.options(
            "/v1/t",
            headers={
                **page,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == SHOP
        assert "authorization" in preflight.headers["access-control-allow-headers"]
        stranger = http.options(
            "/v1/t",
            headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "POST"},
        )
        assert stranger.status_code == 403 and "access-control-allow-origin" not in stranger.headers

        def send(path: str, body: dict[str, Any], origin: str = SHOP) -> httpx.Response:
            return http.post(
                path,
                content=orjson.dumps({**body, "writeKey": BROWSER_KEY}),
                headers={"Content-Type": "text/plain", "Origin": origin},
            )

        t = send("/v1/t", {**view("shopper", "sku-b"), "anonymousId": "anon-b", "userId": None})
        assert t.status_code == 200, t.text
        assert t.headers["access-control-allow-origin"] == SHOP
        p = send("/v1/p", {"anonymousId": "anon-b", "properties": {"url": "https://s/x"}})
        assert p.status_code == 200, p.text
        b = send(
            "/v1/b", {"batch": [{**view("x", "sku-c"), "anonymousId": "anon-b", "userId": None}]}
        )
        assert b.status_code == 200 and b.json()["accepted"] == 1
        i = send("/v1/i", {"userId": "shopper-1", "anonymousId": "anon-b"})
        assert i.status_code == 200 and i.json()["topic"] == "identities"
        a = send("/v1/a", {"userId": "shopper-1", "previousId": "anon-b"})
        assert a.status_code == 200
        long_path = send("/v1/track", {**view("shopper-1", "sku-d"), "messageId": "long-path"})
        assert long_path.status_code == 200 and long_path.json()["event_id"] == "long-path"
        elsewhere = send("/v1/t", view("shopper", "sku-b"), origin="http://evil.test")
        assert (
            elsewhere.status_code == 403
            and "--origin http://evil.test" in elsewhere.json()["message"]
        )
        server_key_from_page = http.post("/v1/track", json=view("x", "y"), auth=W, headers=page)
        assert server_key_from_page.status_code == 403  # web-shop names no origins
        settings_answer = http.get(f"/v1/projects/{BROWSER_KEY}/settings", headers=page)
        assert settings_answer.status_code == 200
        segment_io = settings_answer.json()["integrations"]["Segment.io"]
        assert segment_io["apiHost"] == f"{url.removeprefix('http://')}/v1"
        assert http.get(f"/v1/projects/{'z' * 64}/settings").status_code == 404
        merged = wait_for(
            lambda: (
                (q := profile_of(http, "shopper-1"))
                and {"sku-b", "sku-c", "sku-d"} <= set(q["views"])
                and q
            ),
            what="the browser session merged into shopper-1",
        )
        assert merged["customer_id"] == "shopper-1"


def test_identify_traits_set_consent_and_birthday_and_a_bare_identify_is_a_no_op(
    settings, start_worker
):
    start_worker()
    with serving(settings, keys=ALL_KEYS) as url, httpx.Client(base_url=url, timeout=30) as http:
        bare = http.post(
            "/v1/batch", json={"batch": [{"type": "identify", "userId": "m-1"}]}, auth=W
        )
        assert bare.status_code == 200 and bare.json()["success"] is True, bare.text
        assert bare.json()["results"][0]["topic"] is None
        traits = {
            "type": "identify",
            "userId": "m-1",
            "timestamp": datetime.now(UTC).isoformat(),
            "traits": {
                "email": "m@example.com",
                "birthday": "1991-07-04",
                "consent": {"sms": False, "email": True},
            },
        }
        answer = http.post("/v1/batch", json={"batch": [traits]}, auth=W).json()
        assert answer["results"][0]["topic"] == "customers", answer
        seen = wait_for(
            lambda: (p := profile_of(http, "m-1")) and p.get("birthday") and p,
            what="the member attributes in the profile",
        )
        assert seen["birthday"] == "07-04"
        assert {k: v["granted"] for k, v in seen["consent"].items()} == {
            "sms": False,
            "email": True,
        }
        assert "m@example.com" not in orjson.dumps(seen).decode()


class Forwarder:
    """A TCP port that forwards to another once opened: a broker that comes back."""

    def __init__(self, port: int, target: str) -> None:
        host, _, target_port = target.rpartition(":")
        self.target = (host, int(target_port))
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.server.close()


def test_ecrm_api_serves_at_once_ready_beside_ecrm_up_and_503_while_the_broker_is_away(
    settings, tmp_path
):
    """`ecrm api` as its own process next to the embedded services (what `ecrm up` runs):
    alive and ready. Pointed at a broker that is not there, it serves as soon as it would
    with one (it used to spend ~30 s on the topics first), answers 503 and is not ready; when
    the broker comes, it is ready and takes events, without a restart."""
    keys = tmp_path / "keys.yaml"
    env = {**os.environ, **settings.as_env(), "ECRM_API_KEYS_FILE": str(keys)}

    def ecrm_api(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "ecrm", "api", *args],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    key = ecrm_api("key", "add", "web", "--kind", "write", "--origin", "https://shop.example")
    assert "https://shop.example" in ecrm_api("key", "list")
    broker_port = free_port()
    away = {**env, "ECRM_KAFKA_BOOTSTRAP": f"127.0.0.1:{broker_port}"}
    took: dict[str, float] = {}
    for environment, broker in ((env, "there"), (away, "away")):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "ecrm", "api", "--port", str(port)],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        forwarder = None
        try:

            def alive(base: str = base) -> bool:
                try:
                    return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            def ready(base: str = base) -> httpx.Response | None:
                answer = httpx.get(f"{base}/readyz", timeout=10)
                return answer if answer.status_code == 200 else None

            wait_for(alive, timeout=60, what="ecrm api serving")
            took[broker] = time.monotonic() - started
            if broker == "away":
                # the same start as with a broker (both measured in this run), not 30 s more
                assert took["away"] < took["there"] + 10, took
                not_ready = httpx.get(f"{base}/readyz", timeout=10)
                assert not_ready.status_code == 503 and not_ready.json()["redis"] == "ok"
                assert not_ready.json()["broker"].startswith("unavailable")
                sent = httpx.post(f"{base}/v1/track", json=view("z", "s"), auth=(key, ""))
                assert sent.status_code == 503 and sent.headers["retry-after"]
                forwarder = Forwarder(broker_port, settings.kafka_bootstrap)
            answer = wait_for(ready, timeout=60, what=f"ready (broker {broker})")
            assert answer.json()["broker"] == answer.json()["redis"] == "ok"
            sent = httpx.post(f"{base}/v1/track", json=view("z", "s"), auth=(key, ""), timeout=30)
            assert sent.status_code == 200, sent.text
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            if forwarder is not None:
                forwarder.close()
