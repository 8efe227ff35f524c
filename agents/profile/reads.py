"""Reads of the live profiles that commands, the API and tools share."""

from __future__ import annotations

from datetime import UTC, datetime

from agents.identity import MAX_REDIRECTS
from agents.profile.fold import RfmPolicy, refresh
from schemas.profile import Profile, from_stored
from streams import keyspace
from streams.settings import Settings


def read_profile(
    settings: Settings, customer_id: str, now: datetime | None = None
) -> Profile | None:
    """The customer's live profile re-rated as of `now` (default: the wall clock), or None."""
    client = settings.redis()
    try:
        profile = None
        for _ in range(MAX_REDIRECTS + 1):  # an id linked to a customer reads as that customer
            raw = client.get(keyspace.profile(customer_id, settings.partitions))
            if raw is None:
                return None
            profile = from_stored(raw)
            if profile.merged_into is None:
                break
            customer_id = profile.merged_into
    finally:
        client.close()
    assert profile is not None
    policy = RfmPolicy.of(settings)
    return refresh(profile, now or datetime.now(UTC), policy)
