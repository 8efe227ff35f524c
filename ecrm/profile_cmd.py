"""`ecrm profile ID`: the live profile from Redis, re-rated as of now."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import redis

from agents.profile_fold import refresh
from agents.profiles import rfm_policy
from schemas.profile import Profile
from streams.redis_store import KEY_PREFIX
from streams.settings import Settings

PROFILE_KEY = KEY_PREFIX + "profiles:{}"


def read_profile(
    settings: Settings, customer_id: str, now: datetime | None = None
) -> Profile | None:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        raw = client.get(PROFILE_KEY.format(customer_id))
    finally:
        client.close()
    if raw is None:
        return None
    policy = rfm_policy(settings)
    return refresh(Profile.model_validate_json(raw), now or datetime.now(UTC), policy)


def show_profile(settings: Settings, customer_id: str, as_json: bool) -> int:
    profile = read_profile(settings, customer_id)
    if profile is None:
        print(f"no profile for customer {customer_id!r}")
        return 1
    view = profile.public_view()
    if as_json:
        print(json.dumps(view, ensure_ascii=False, indent=2))
        return 0
    print(f"customer     {profile.customer_id}  (shop {profile.shop_id})")
    print(f"segment      {profile.segment}  since {profile.segment_since:%Y-%m-%d %H:%M}")
    print(
        f"RFM          R={profile.recency_days} days  F={profile.frequency} orders  "
        f"M={profile.monetary}"
    )
    print(f"last order   {profile.last_order_at}")
    print(f"cart         {', '.join(f'{s} x{c.qty}' for s, c in profile.cart.items()) or '-'}")
    print(f"favourites   {', '.join(profile.favorites) or '-'}")
    top = sorted(profile.views.items(), key=lambda kv: -kv[1].count)[:5]
    print(f"most viewed  {', '.join(f'{s} ({v.count})' for s, v in top) or '-'}")
    return 0
