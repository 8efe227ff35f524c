"""Where a handed-over partition is read from: Redis's watermark + 1 (streams/resume.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.resume import Partition, Plan, plan


def test_a_redis_that_lost_its_last_writes_reads_them_again():
    assert plan(Partition(watermark=99, position=150, committed=True, start=0, end=200)) == Plan(
        100, reset=False
    )


def test_a_redis_ahead_of_the_committed_offset_lets_faust_read_from_its_commit():
    # the events in between are skipped by offset; Faust will not commit across a gap
    assert plan(Partition(watermark=160, position=150, committed=True, start=0, end=200)) == Plan(
        None, reset=False
    )


def test_a_new_consumer_group_starts_at_the_watermark():
    assert plan(Partition(watermark=160, position=0, committed=False, start=0, end=200)) == Plan(
        161, reset=False
    )


def test_a_redis_that_lost_everything_reads_the_partition_from_its_start():
    assert plan(Partition(watermark=None, position=150, committed=True, start=20, end=200)) == Plan(
        20, reset=False
    )


def test_a_watermark_past_the_end_is_reset_and_the_partition_read_from_its_start():
    # the topic was recreated: its 5 events are new, and must not pass for applied ones
    assert plan(Partition(watermark=900, position=901, committed=True, start=0, end=5)) == Plan(
        0, reset=True
    )
    assert plan(Partition(watermark=5, position=0, committed=False, start=0, end=5)) == Plan(
        None, reset=True
    )


def test_events_deleted_before_being_applied_are_not_waited_for():
    assert plan(Partition(watermark=9, position=150, committed=True, start=50, end=200)) == Plan(
        50, reset=False
    )


@st.composite
def partitions(draw: st.DrawFn) -> Partition:
    start = draw(st.integers(0, 100))
    end = draw(st.integers(start, start + 100))
    watermark = draw(st.none() | st.integers(-1, end + 50))
    committed = draw(st.booleans())
    position = draw(st.integers(start, end)) if committed else start
    return Partition(watermark, position, committed, start, end)


@given(partitions())
def test_no_event_the_watermark_does_not_cover_is_ever_skipped(p):
    todo = plan(p)
    first = p.position if todo.seek is None else todo.seek
    applied_up_to = -1 if todo.reset or p.watermark is None else p.watermark
    # every offset from max(start, watermark + 1) on is read
    assert first <= max(p.start, applied_up_to + 1)
    assert p.start <= first <= max(p.end, p.position)
    assert todo.reset == (p.watermark is not None and p.watermark >= p.end)
