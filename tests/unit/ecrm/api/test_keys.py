"""API keys: kept hashed, checked by kind, and each key's rate limited."""

from __future__ import annotations

import base64

import pytest

from ecrm.api.keys import Keyring, Refusal, add_key, load_keys
from ecrm.api.ratelimit import RateLimits
from schemas.errors import ConfigError


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def test_a_new_key_is_stored_only_as_its_hash_and_checked_by_kind(tmp_path):
    path = tmp_path / "keys.yaml"
    write = add_key(path, "web-shop", "write")
    read = add_key(path, "desk", "read")
    assert write not in path.read_text() and read not in path.read_text()
    ring = Keyring(load_keys(path))
    assert ring.check(basic(write), "write").name == "web-shop"
    wrong = ring.check(basic(read), "write")
    assert isinstance(wrong, Refusal) and wrong.status == 403 and "read key" in wrong.reason
    assert ring.check(None, "read").status == 401
    assert "unknown key" in ring.check(basic("nope"), "read").reason


def test_a_key_over_its_rate_waits_and_another_key_does_not():
    limits = RateLimits(default_rate=100)
    assert limits.take_here("a", 500, now=0.0).allowed  # a full burst
    assert limits.take_here("a", 100, now=0.0).wait_s == 1
    assert limits.take_here("b", 100, now=0.0).allowed
    assert limits.take_here("a", 100, now=1.0).allowed  # a second refills 100


def test_a_request_larger_than_the_bucket_never_passes_even_when_it_is_full():
    limits = RateLimits(default_rate=10)  # bursts of 500 (one full Segment batch)
    too_big = limits.take_here("a", 501, now=0.0)
    assert too_big.too_large and not too_big.allowed and too_big.capacity == 500
    assert too_big.wait_s == 50  # the time the whole bucket takes to fill
    assert limits.take_here("a", 500, now=0.0).allowed  # the refusal took nothing
    assert limits.take_here("a", 10, now=0.5).wait_s == 1  # 5 refilled, 10 asked


def test_a_write_key_names_the_origins_its_pages_may_send_from(tmp_path):
    path = tmp_path / "keys.yaml"
    add_key(path, "web", "write", origins=("https://Shop.example/", "http://127.0.0.1:8000"))
    add_key(path, "server", "write")
    [web, server] = load_keys(path)
    assert web.origins == ("https://shop.example", "http://127.0.0.1:8000")
    assert web.allows_origin("https://shop.example") and not web.allows_origin(
        "https://evil.example"
    )
    assert not server.allows_origin("https://shop.example")
    assert Keyring([web, server]).any_allows_origin("http://127.0.0.1:8000")
    with pytest.raises(ConfigError, match="scheme://host"):
        add_key(path, "bad", "write", origins=("shop.example/path",))
    with pytest.raises(ConfigError, match="write keys"):
        add_key(path, "desk", "read", origins=("https://shop.example",))


def test_the_body_may_carry_the_write_key(tmp_path):
    path = tmp_path / "keys.yaml"
    key = add_key(path, "web", "write")
    ring = Keyring(load_keys(path))
    assert ring.check_key(key, "write").name == "web"
    assert ring.check_key("nope", "write").status == 401


def test_without_redis_the_limit_holds_in_the_process():
    import asyncio
    import socket

    from redis.asyncio import Redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed

    async def run() -> list[bool]:
        client = Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
        limits = RateLimits(default_rate=1, redis=client)
        try:
            return [(await limits.take("a", 300)).allowed for _ in range(2)]
        finally:
            await client.aclose()

    assert asyncio.run(run()) == [True, False]  # 500 a burst, in this process
