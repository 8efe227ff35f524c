"""Time alone moves customers between segments: the sweep finds them through Redis."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from agents.profile.incoming import Incoming, decode
from agents.profile.keeper import ProfileKeeper
from agents.profile.reads import read_profile
from streams import keyspace
from streams.app import create_app
from streams.counters import kafka_outboxes

pytestmark = pytest.mark.integration


def order(i: int, customer: str, when: datetime, amount: str) -> Incoming:
    value = {
        "event_id": f"e{i}",
        "customer_id": customer,
        "ts": when.isoformat(),
        "order_id": f"o{i}",
        "status": "paid",
        "amount": amount,
    }
    return decode("t.orders", "orders", 0, i, customer.encode(), orjson.dumps(value))


def test_a_valuable_customer_who_stops_buying_drifts_to_important_keep(settings, rds):
    ctx = create_app(settings)
    keeper = ProfileKeeper(ctx)
    now = datetime.now(UTC)
    last = now - timedelta(days=2)
    items = [order(1, "vip", now - timedelta(days=20), "400"), order(2, "vip", last, "300")]

    async def scenario() -> tuple[int, int, int]:
        await keeper.apply(items, now=now)
        assert read_profile(settings, "vip", now).segment == "important_value"
        # nothing is due yet: R is still high
        early = await keeper.sweep([0], now=now + timedelta(days=1))
        # R = 30 days is still high, 31 is low: the customer is due exactly then
        wake = last + timedelta(days=settings.r_high_days + 1)
        before = await keeper.sweep([0], now=wake - timedelta(milliseconds=5))
        at = await keeper.sweep([0], now=wake)
        await ctx.store.stop()
        return early, before, at

    early, before, at = asyncio.run(scenario())
    assert (early, before, at) == (0, 0, 1)
    profile = read_profile(settings, "vip", last + timedelta(days=31))
    assert profile.segment == "important_keep"
    messages = [f for o in kafka_outboxes(settings.partitions) for _, f in rds.xrange(o)]
    changes = [
        orjson.loads(f[b"value"])
        for f in messages
        if f[b"topic"] == settings.topic("segment-changes").encode()
    ]
    assert [(c["from"], c["to"], c["cause"]) for c in changes][-1] == (
        "important_value",
        "important_keep",
        "time",
    )
    # the next moment time matters is when the first order leaves the 365-day window
    score = rds.zscore(keyspace.wakes(0), "vip")
    assert score == int((now - timedelta(days=20) + timedelta(days=365)).timestamp() * 1000)
