"""Reads of the live profiles that commands, the API and tools share."""

from __future__ import annotations

from datetime import UTC, datetime

import redis

from agents.profile.fold import refresh
from agents.profile.keeper import rfm_policy
from schemas.profile import Profile, from_stored
from streams import keyspace
from streams.settings import Settings


def read_profile(
    settings: Settings, customer_id: str, now: datetime | None = None
) -> Profile | None:
    """The customer's live profile re-rated as of `now` (default: the wall clock), or None."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        raw = client.get(keyspace.profile(customer_id))
    finally:
        client.close()
    if raw is None:
        return None
    policy = rfm_policy(settings)
    return refresh(from_stored(raw), now or datetime.now(UTC), policy)
