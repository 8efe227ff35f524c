"""The partition's order of decision: offset order per topic, topics merged by event time, a
record held until every other topic's next one is read, an idle topic read to its end that
never holds anything, the clock (latest event time decided), the wall clock once live."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from agents.profile.event_time import EventClock, decision_order

T0 = datetime(2024, 5, 1, tzinfo=UTC)
WALL = T0 + timedelta(days=30)
MIN = timedelta(minutes=1)


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    at: datetime | None
    mark: datetime | None = None


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
    (first,) = clock.release(0, WALL)
    assert first.mark == WALL
    assert clock.clock(0, WALL) == (WALL, False)


def test_invalid_messages_never_hold_anything_back() -> None:
    clock = clock_over({"orders": 5, "cart": 5})
    clock.read([Msg("orders", 0, 0, None), Msg("cart", 0, 0, T0)], WALL)
    assert len(clock.release(0, WALL)) == 1  # the invalid one; the cart waits for an order
    assert clock.held() == 1


@given(
    times=st.lists(st.integers(0, 10_000), min_size=1, max_size=60),
    picks=st.lists(st.booleans(), min_size=60, max_size=60),
    sizes=st.lists(st.integers(1, 5), min_size=60, max_size=60),
)
def test_whatever_the_reads_the_release_order_is_the_decision_order(times, picks, sizes) -> None:
    """Two topics, event times in any order within each, read in any interleaving and in
    reads of any size: what is released, and the clock each gets, is `decision_order` of the
    topics' contents; once both are read to their end nothing stays held."""
    topics: dict[str, list[datetime]] = {"orders": [], "cart": []}
    for t, pick in zip(times, picks, strict=False):
        topics["orders" if pick else "cart"].append(T0 + t * MIN)
    clock = clock_over({name: len(v) for name, v in topics.items()})
    out: list[tuple[str, int, datetime | None]] = []
    pos = {name: 0 for name in topics}
    for pick, size in zip(picks, sizes, strict=True):
        name = "orders" if pick else "cart"
        got = topics[name][pos[name] : pos[name] + size]
        clock.read([Msg(name, 0, pos[name] + i, at) for i, at in enumerate(got)], WALL)
        pos[name] += len(got)
        out += [(m.topic, m.offset, m.mark) for m in clock.release(0, WALL)]
    for name in topics:
        rest = topics[name][pos[name] :]
        clock.read([Msg(name, 0, pos[name] + i, at) for i, at in enumerate(rest)], WALL)
    out += [(m.topic, m.offset, m.mark) for m in clock.release(0, WALL)]
    assert clock.held() == 0
    runs = [[Msg(name, 0, i, at) for i, at in enumerate(topics[name])] for name in clock.topics]
    expected = [(m.topic, m.offset, mark) for m, mark in decision_order(runs, lambda m: m.at)]
    assert out == expected


def test_within_a_topic_offset_order_whatever_the_event_times() -> None:
    clock = clock_over({"orders": 2, "cart": 0})
    clock.read([Msg("orders", 0, 0, T0 + 60 * MIN), Msg("orders", 0, 1, T0)], WALL)
    released = clock.release(0, WALL)
    assert [(m.offset, m.mark) for m in released] == [(0, T0 + 60 * MIN), (1, T0 + 60 * MIN)]


def test_a_record_waits_until_the_next_record_of_every_unfinished_topic_is_read() -> None:
    clock = clock_over({"orders": 5, "cart": 5})
    clock.read([Msg("orders", 0, 0, T0), Msg("orders", 0, 1, T0 + MIN)], WALL)
    assert clock.release(0, WALL) == []  # a cart not read yet may come before it
    clock.read([Msg("cart", 0, 0, T0 + 30 * MIN)], WALL)
    assert [(m.topic, m.offset) for m in clock.release(0, WALL)] == [
        ("orders", 0),
        ("orders", 1),
    ]  # then orders has nothing held and is unfinished: the cart waits


def test_a_resumed_clock_marks_late_records_with_what_was_decided_before_the_restart() -> None:
    clock = clock_over({"orders": 5, "cart": 0})
    clock.resume(0, T0 + 60 * MIN)
    clock.read([Msg("orders", 0, 3, T0)], WALL)
    assert clock.clock(0, WALL) == (T0 + 60 * MIN, False)
    (late,) = clock.release(0, WALL)
    assert late.mark == T0 + 60 * MIN


def test_a_future_dated_event_is_merged_by_its_own_time() -> None:
    clock = clock_over({"orders": 5, "cart": 5})
    clock.read([Msg("cart", 0, 0, T0), Msg("cart", 0, 1, T0 + MIN)], WALL)
    clock.read([Msg("orders", 0, 0, WALL + timedelta(hours=3)), Msg("orders", 0, 1, T0)], WALL)
    released = clock.release(0, WALL)
    assert [(m.topic, m.offset) for m in released] == [("cart", 0), ("cart", 1)]
