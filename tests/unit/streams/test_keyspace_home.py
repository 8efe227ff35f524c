"""A customer's home partition is the same whether worked out or remembered
(streams/keyspace.py keeps the latest ones: murmur2 is pure Python)."""

from __future__ import annotations

from streams import keyspace


def test_a_remembered_home_is_the_one_worked_out() -> None:
    ids = ["cust-000001", "访客-7", "", "c" * 300, *(f"cust-{i}" for i in range(50))]
    for partitions in (1, 4, 8, 12):
        worked_out = [keyspace.home.__wrapped__(cid, partitions) for cid in ids]
        assert [keyspace.home(cid, partitions) for cid in ids] == worked_out
        assert [keyspace.home(cid, partitions) for cid in ids] == worked_out
    assert len({keyspace.home(f"cust-{i}", 8) for i in range(50)}) > 1
