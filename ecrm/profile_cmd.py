"""`ecrm profile ID`: the live profile from Redis, re-rated as of now."""

from __future__ import annotations

import json

from agents.profile.reads import read_profile
from streams.settings import Settings


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
