"""Reads of the live profiles that commands, the API and tools share."""

from __future__ import annotations

from datetime import UTC, datetime

from agents.identity import MAX_REDIRECTS
from agents.membership.state import MemberState
from agents.profile.fold import refresh
from agents.profile.policy import rfm_policy
from schemas.profile import Profile, from_stored
from streams import keyspace
from streams.redis_client import mget
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
    policy = rfm_policy(settings)
    return refresh(profile, now or datetime.now(UTC), policy)


def read_member(settings: Settings, customer_id: str) -> tuple[Profile | None, MemberState | None]:
    """The customer's stored profile and member state as Redis holds them (`ecrm member show`,
    the dashboard's customer page), each None when there is none."""
    client = settings.redis()
    try:
        raw_profile, raw_member = mget(
            client,
            [
                keyspace.profile(customer_id, settings.partitions),
                keyspace.member(customer_id, settings.partitions),
            ],
        )
    finally:
        client.close()
    profile = Profile.model_validate_json(raw_profile) if raw_profile else None
    member = MemberState.model_validate_json(raw_member) if raw_member else None
    return profile, member
