"""`ecrm profile ID`: the live profile from Redis, re-rated as of now."""

from __future__ import annotations

import argparse
import json

from agents.profile.reads import read_profile
from schemas.errors import EcrmError
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
    if profile.level is not None:
        print(
            f"member       {profile.level}, {profile.points} points"
            f" ({profile.points_pending} pending)  (ecrm member show {profile.customer_id})"
        )
    print(f"tags         {', '.join(profile.tags) or '-'}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    profile = sub.add_parser("profile", help="print a customer's live profile")
    who = profile.add_mutually_exclusive_group(required=True)
    who.add_argument("customer_id", nargs="?")
    who.add_argument(
        "--buyer", metavar="NAME", help="an imported buyer's name, hashed with ECRM_PII_SECRET"
    )
    profile.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    customer_id = args.customer_id
    if args.buyer is not None:
        from schemas.pii import customer_id_for, normalized_name

        if not normalized_name(args.buyer):
            raise EcrmError("--buyer needs a name")
        customer_id = customer_id_for(args.buyer, settings.pii_key())
    else:
        from schemas.pii import looks_personal, personal_id

        if looks_personal(customer_id):  # the worker keeps such an id as its keyed hash
            customer_id = personal_id(customer_id, settings.privacy_key())
    return show_profile(settings, customer_id, args.json)
