"""A topic the consumer has not fetched from yet (an empty points or tags topic while a
backlog of orders is read) must not hold the event-time clock: the keeper asks the broker
for its end once, and events are released as they are read."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from agents.profile.keeper import ProfileKeeper
from streams.settings import Settings

T0 = datetime(2026, 5, 1, tzinfo=UTC)
WALL = T0 + timedelta(days=30)


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    at: datetime | None


@dataclass
class _App:
    settings: Settings


def _keeper(fetched: set[str]) -> tuple[ProfileKeeper, list[list[tuple[str, int]]]]:
    """A keeper whose consumer knows the end of the topics in `fetched` only."""
    settings = Settings()

    def highwater(topic: str, partition: int) -> int | None:
        return 5 if topic in {settings.topic(t) for t in fetched} else None

    asked: list[list[tuple[str, int]]] = []

    async def end_offsets(sources: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        asked.append(sources)
        return dict.fromkeys(sources, 0)  # empty topics

    keeper = ProfileKeeper(_App(settings), highwater=highwater)  # type: ignore[arg-type]
    keeper.end_offsets = end_offsets
    return keeper, asked


def test_unfetched_empty_topics_stop_holding_events_once_the_broker_is_asked() -> None:
    keeper, asked = _keeper({"orders"})
    clock = keeper.event_clock
    assert clock is not None
    order = Msg(keeper.app.settings.topic("orders"), 0, 0, T0)
    clock.read([order], WALL)
    assert clock.release(0, WALL) == []  # the other topics' ends are unknown: held
    asyncio.run(keeper._know_ends([0]))
    assert clock.release(0, WALL) == [order]
    assert len(asked) == 1 and ("ecrm.points", 0) in asked[0]
    asyncio.run(keeper._know_ends([0]))
    assert len(asked) == 1  # asked once; the consumer's own fetches tell the rest


def test_without_a_broker_to_ask_the_clock_holds_as_before() -> None:
    keeper, _ = _keeper({"orders"})
    keeper.end_offsets = None
    clock = keeper.event_clock
    assert clock is not None
    clock.read([Msg(keeper.app.settings.topic("orders"), 0, 0, T0)], WALL)
    asyncio.run(keeper._know_ends([0]))
    assert clock.release(0, WALL) == []
