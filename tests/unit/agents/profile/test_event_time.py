"""The partition's event-time clock: the watermark over its unread topics, events held until
it reaches them, an idle topic that never freezes it, the wall clock once everything is read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from agents.profile.event_time import EventClock

T0 = datetime(2024, 5, 1, tzinfo=UTC)
WALL = T0 + timedelta(days=30)
MIN = timedelta(minutes=1)


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    at: datetime | None


def clock_over(ends: dict[str, int | None]) -> EventClock:
    return EventClock(("orders", "cart"), lambda topic, partition: ends.get(topic))


def test_a_topic_read_ahead_waits_for_the_slower_one() -> None:
    clock = clock_over({"orders": 10, "cart": 10})
    clock.read([Msg("orders", 0, 0, T0 + 60 * MIN)], WALL)
    clock.read([Msg("cart", 0, 0, T0)], WALL)
    released = clock.release(0, WALL)
    assert [m.topic for m in released] == ["cart"]  # the order is an hour ahead of the carts
    assert clock.clock(0, WALL) == (T0, False)
    clock.read([Msg("cart", 0, 1, T0 + 61 * MIN)], WALL)
    assert [m.topic for m in clock.release(0, WALL)] == ["orders"]


def test_an_unknown_end_offset_counts_as_unread() -> None:
    clock = clock_over({"orders": 1, "cart": None})
    clock.read([Msg("orders", 0, 0, T0)], WALL)
    assert clock.release(0, WALL) == []
    assert clock.clock(0, WALL) == (None, False)


def test_a_topic_read_to_its_end_stops_holding_the_clock_back() -> None:
    clock = clock_over({"orders": 1, "cart": 0})  # no cart was ever added
    clock.read([Msg("orders", 0, 0, T0)], WALL)
    assert clock.clock(0, WALL) == (WALL, True)
    assert len(clock.release(0, WALL)) == 1


def test_a_resumed_source_counts_from_redis_watermark() -> None:
    clock = clock_over({"orders": 5, "cart": 3})
    clock.start_at("cart", 0, 3)  # everything was applied before the restart
    clock.read([Msg("orders", 0, 4, T0)], WALL)
    assert clock.clock(0, WALL) == (WALL, True)


def test_a_future_dated_event_does_not_run_the_clock_ahead() -> None:
    clock = clock_over({"orders": 5, "cart": 5})
    clock.read([Msg("orders", 0, 0, WALL + timedelta(hours=20))], WALL)
    clock.read([Msg("cart", 0, 0, WALL + timedelta(hours=20))], WALL)
    now, live = clock.clock(0, WALL)
    assert not live and now == WALL


def test_invalid_messages_never_hold_anything_back() -> None:
    clock = clock_over({"orders": 5, "cart": 5})
    clock.read([Msg("orders", 0, 0, None), Msg("cart", 0, 0, T0)], WALL)
    assert len(clock.release(0, WALL)) == 1  # the invalid one; the cart waits for an order
    assert clock.held() == 1


@given(
    times=st.lists(st.integers(0, 10_000), min_size=1, max_size=60),
    picks=st.lists(st.booleans(), min_size=60, max_size=60),
)
def test_released_events_come_in_time_order_across_topics(times, picks) -> None:
    """Whatever the interleaving, each topic in time order: while a topic is unread, released
    events never go back in time; once every topic is read to its end nothing stays held."""
    topics = {"orders": [], "cart": []}
    for t, pick in zip(times, picks, strict=False):
        topics["orders" if pick else "cart"].append(t)
    for name in topics:
        topics[name].sort()
    ends = {name: len(v) for name, v in topics.items()}
    clock = clock_over(ends)
    out: list[datetime] = []
    ordered: list[list[datetime]] = []
    pos = {name: 0 for name in topics}
    for pick in picks:
        name = "orders" if pick else "cart"
        if pos[name] < len(topics[name]):
            at = T0 + topics[name][pos[name]] * MIN
            clock.read([Msg(name, 0, pos[name], at)], WALL)
            pos[name] += 1
            live = clock.clock(0, WALL)[1]
            released = [m.at for m in clock.release(0, WALL)]
            out += released
            if not live and released:
                ordered.append(released)
    # while a topic was unread, nothing released came before what an earlier release held
    # (within one release the keeper sorts each customer's events itself)
    for earlier, later in zip(ordered, ordered[1:], strict=False):
        assert max(earlier) <= min(later)
    for name in topics:
        for offset in range(pos[name], len(topics[name])):
            clock.read([Msg(name, 0, offset, T0 + topics[name][offset] * MIN)], WALL)
    out += [m.at for m in clock.release(0, WALL)]  # all read: live, everything goes
    assert clock.held() == 0
    assert sorted(out) == sorted(T0 + t * MIN for t in times)


def test_a_future_dated_event_does_not_hold_its_topic_back() -> None:
    clock = clock_over({"orders": 5, "cart": 5})
    clock.read([Msg("cart", 0, 0, T0)], WALL)
    clock.read([Msg("orders", 0, 0, WALL + timedelta(hours=3)), Msg("orders", 0, 1, T0)], WALL)
    assert [m.offset for m in clock.release(0, WALL) if m.topic == "orders"] == [0, 1]
