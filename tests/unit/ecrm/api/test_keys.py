"""API keys: kept hashed, checked by kind, and each key's rate limited."""

from __future__ import annotations

import base64

from ecrm.api.keys import Keyring, Refusal, add_key, load_keys
from ecrm.api.ratelimit import RateLimits


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
    assert limits.take("a", 500, now=0.0) == 0  # a full burst
    assert limits.take("a", 100, now=0.0) == 1
    assert limits.take("b", 100, now=0.0) == 0
    assert limits.take("a", 100, now=1.0) == 0  # a second refills 100
