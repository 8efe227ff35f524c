"""The profile's stored form in Redis (docs/profile.md): compact, versioned, lossless."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from agents.profile.fold import RfmPolicy, fold_many, refresh
from schemas.events import BrowseEvent, CartEvent, OrderEvent
from schemas.profile import STORED_FORMAT, Profile, empty_profile, from_stored, stored

T0 = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)


def _busy_customer() -> Profile:
    events = [
        OrderEvent(
            event_id="o1", customer_id="c1", ts=T0, order_id="A", status="paid", amount="120.50"
        ),
        OrderEvent(
            event_id="r1",
            customer_id="c1",
            ts=T0 + timedelta(days=1),
            order_id="A",
            status="refunded",
            amount="20",
        ),
        CartEvent(event_id="c1", customer_id="c1", ts=T0, sku="S1", qty=2, price="9.90"),
        BrowseEvent(event_id="b1", customer_id="c1", ts=T0, sku="S2", category="tea"),
        BrowseEvent(event_id="b2", customer_id="c1", ts=T0, url="/home"),
    ]
    profile = fold_many(empty_profile("c1"), events)
    return refresh(profile, T0 + timedelta(days=3), RfmPolicy())


def test_a_profile_reads_back_exactly_as_it_was_stored() -> None:
    profile = _busy_customer()
    assert from_stored(stored(profile)) == profile
    new = empty_profile("c-new")
    assert from_stored(stored(new)) == new


def test_the_stored_form_names_its_version_and_leaves_defaults_out() -> None:
    profile = _busy_customer()
    data = json.loads(stored(profile))
    assert data["v"] == STORED_FORMAT
    assert data["customer_id"] == "c1"
    assert Decimal(data["monetary"]) == Decimal("100.50")
    # what this customer never had is not spelled out
    for absent in ("favorites", "tags", "level", "points", "campaign_event_ids", "shop_id"):
        assert absent not in data
    assert len(stored(profile)) < len(profile.model_dump_json())


def test_profiles_written_in_the_full_json_of_earlier_versions_still_read() -> None:
    profile = _busy_customer()
    assert from_stored(profile.model_dump_json().encode()) == profile
