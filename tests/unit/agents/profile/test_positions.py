"""A topic the consumer has not fetched from yet (an empty points or tags topic while a
backlog of orders is read) must not hold the event-time clock: the keeper asks the broker
for its end once, and events are released as they are read."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from agents.profile.positions import BrokerView, Positions
from streams.settings import Settings

T0 = datetime(2026, 5, 1, tzinfo=UTC)
WALL = T0 + timedelta(days=30)


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    at: datetime | None


SETTINGS = Settings()


def _positions(
    fetched: set[str], ask: bool = True
) -> tuple[Positions, list[list[tuple[str, int]]]]:
    """Positions whose consumer knows the end of the topics in `fetched` only (`ask`: the
    broker can be asked for the others)."""
    settings = SETTINGS

    def highwater(topic: str, partition: int) -> int | None:
        return 5 if topic in {settings.topic(t) for t in fetched} else None

    asked: list[list[tuple[str, int]]] = []

    async def end_offsets(sources: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        asked.append(sources)
        return dict.fromkeys(sources, 0)  # empty topics

    broker = BrokerView(highwater, end_offsets if ask else None)
    return Positions(settings, store=None, broker=broker), asked  # type: ignore[arg-type]


def test_unfetched_empty_topics_stop_holding_events_once_the_broker_is_asked() -> None:
    positions, asked = _positions({"orders"})
    clock = positions.event_clock
    assert clock is not None
    order = Msg(SETTINGS.topic("orders"), 0, 0, T0)
    clock.read([order], WALL)
    assert clock.release(0, WALL) == []  # the other topics' ends are unknown: held
    asyncio.run(positions.know_ends([0]))
    assert clock.release(0, WALL) == [order]
    assert len(asked) == 1 and ("ecrm.points", 0) in asked[0]
    asyncio.run(positions.know_ends([0]))
    assert len(asked) == 1  # asked once; the consumer's own fetches tell the rest


def test_without_a_broker_to_ask_the_clock_holds_as_before() -> None:
    positions, _ = _positions({"orders"}, ask=False)
    clock = positions.event_clock
    assert clock is not None
    clock.read([Msg(SETTINGS.topic("orders"), 0, 0, T0)], WALL)
    asyncio.run(positions.know_ends([0]))
    assert clock.release(0, WALL) == []
