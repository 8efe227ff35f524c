"""Which records of a fetch are handed over, and which offsets a batch marks done."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord
from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st

from streams.batches import Part

TOPIC = TP("ecrm.orders", 0)


def fetched(*offsets: int) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(TOPIC.topic, TOPIC.partition, o, 0, 0, b"k", b"{}", None, 1, 2, [])
        for o in offsets
    ]


def offsets_of(part: Part | None) -> list[int]:
    return [] if part is None else [r.offset for r in part.records]


def test_a_fetch_that_follows_the_last_one_marks_exactly_its_own_offsets():
    part = Part.of(TOPIC, fetched(10, 11, 12), expected=10)
    assert part is not None and list(part.offsets(committed=10)) == [10, 11, 12]


def test_offsets_the_broker_skipped_since_the_last_batch_are_marked_with_the_next():
    # 10-12 were transaction markers or compacted away: no record will ever come for them,
    # and Faust commits only runs of consecutive offsets
    part = Part.of(TOPIC, fetched(13, 15), expected=10)
    assert part is not None and list(part.offsets(committed=None)) == [10, 11, 12, 13, 14, 15]


def test_records_already_read_are_not_handed_over_again():
    assert offsets_of(Part.of(TOPIC, fetched(8, 9, 10, 11), expected=10)) == [10, 11]
    assert Part.of(TOPIC, fetched(8, 9), expected=10) is None


def test_a_first_read_starts_at_the_first_record():
    part = Part.of(TOPIC, fetched(500, 501), expected=None)
    assert part is not None and list(part.offsets(committed=None)) == [500, 501]


def test_what_is_committed_already_is_not_marked_again():
    part = Part.of(TOPIC, fetched(10, 11, 12), expected=10)
    assert part is not None and list(part.offsets(committed=12)) == [12]


@given(
    offsets=st.lists(st.integers(0, 200), unique=True).map(sorted),
    expected=st.none() | st.integers(0, 220),
    committed=st.none() | st.integers(0, 220),
)
def test_every_record_handed_over_is_marked_and_nothing_before_the_expected_offset_is(
    offsets: list[int], expected: int | None, committed: int | None
):
    part = Part.of(TOPIC, fetched(*offsets), expected)
    handed = offsets_of(part)
    assert handed == [o for o in offsets if expected is None or o >= expected]
    if part is None:
        return
    marked = set(part.offsets(committed))
    # where this part starts accounting (the offset expected, else its first record),
    # unless more than that is committed already
    start = handed[0] if expected is None else expected
    floor = start if committed is None else max(start, committed)
    assert {o for o in handed if o >= floor} <= marked
    assert all(floor <= o <= handed[-1] for o in marked)
    # a contiguous run from the floor: Faust can commit past all of it
    assert marked == set(range(floor, handed[-1] + 1)) or not marked
