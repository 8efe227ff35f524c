"""Points and tag requests stored in `events` come back as the same requests, so the
backtest replays redemptions and manual tags like the worker applied them."""

from __future__ import annotations

from datetime import UTC, datetime

from agents.backtest.history import event_from_row
from agents.profile.rows import event_row
from schemas.events import PointsEvent, TagEvent

AT = datetime(2026, 5, 1, tzinfo=UTC)


def _round_trip(event: PointsEvent | TagEvent) -> object:
    row = event_row(event, topic="t", partition=0, offset=1, now=AT)
    return event_from_row(row)


def test_a_redemption_on_an_order_reads_back_as_itself() -> None:
    event = PointsEvent.model_validate(
        {"event_id": "q1", "customer_id": "c", "ts": AT, "kind": "redeem"}
        | {"points": 300, "reason": "checkout", "order_id": "O9", "till": "A3"}
    )
    assert _round_trip(event) == event


def test_an_adjustment_without_an_order_and_a_manual_tag_read_back_as_themselves() -> None:
    adjust = PointsEvent.model_validate(
        {"event_id": "a1", "customer_id": "c", "ts": AT, "kind": "adjust", "points": -20}
    )
    tag = TagEvent(event_id="t1", customer_id="c", ts=AT, tag="wholesale", op="remove")
    assert _round_trip(adjust) == adjust
    assert _round_trip(tag) == tag
