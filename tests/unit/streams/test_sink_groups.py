"""How the sink merges outbox entries: by table, in id order, up to max_rows, with tokens a
crash cannot change."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.sink_groups import Parsed, group_of, members_of, plan, record


def entry(ms: int, table: str, rows: int) -> Parsed:
    return Parsed(f"{ms}-0".encode(), {}, table, [{"n": i} for i in range(rows)])


entries = st.lists(
    st.tuples(st.sampled_from(["events", "segment_changes"]), st.integers(1, 50)),
    max_size=40,
).map(lambda specs: [entry(1000 + i, t, n) for i, (t, n) in enumerate(specs)])


@given(entries, st.integers(1, 120))
def test_every_entry_is_in_exactly_one_group_of_one_table_in_id_order(
    read: list[Parsed], max_rows: int
) -> None:
    groups = plan(read, max_rows)
    assert sorted(e.entry_id for g in groups for e in g) == sorted(e.entry_id for e in read)
    for members in groups:
        assert len({e.table for e in members}) == 1
        ids = [int(e.entry_id.split(b"-")[0]) for e in members]
        assert ids == sorted(ids)
        assert len(members) == 1 or sum(len(e.rows) for e in members) <= max_rows


@given(entries)
def test_the_plan_does_not_depend_on_the_order_entries_were_read_in(read: list[Parsed]) -> None:
    assert plan(read, 60) == plan(list(reversed(read)), 60)


def test_a_lone_entry_keeps_its_own_token_and_a_merged_group_is_named_by_its_ends() -> None:
    alone = group_of("ecrm:outbox", [entry(5, "events", 3)])
    assert alone.token == "ecrm:outbox/5-0" and not alone.recorded
    merged = group_of("ecrm:outbox", [entry(5, "events", 3), entry(9, "events", 2)])
    assert merged.token == "ecrm:outbox/5-0..9-0" and merged.recorded
    assert members_of(record(merged)) == [b"5-0", b"9-0"]
    assert [merged.origin(i) for i in range(5)] == [b"5-0"] * 3 + [b"9-0"] * 2
