"""The import's plumbing: a customer's events land on the partition every other producer
picks, and the progress bar says how far, how fast and how long."""

from __future__ import annotations

import io

from aiokafka.partitioner import DefaultPartitioner

from agents.order_import.rows import _PROVINCE_BY_HEAD, PROVINCES
from ecrm.progress import Progress
from streams.bulk_producer import partition_for


def test_the_bulk_producer_partitions_keys_like_the_other_kafka_clients() -> None:
    partitioner = DefaultPartitioner()
    for n in (1, 4, 12):
        partitions = list(range(n))
        for i in range(500):
            key = f"c_{i:024x}".encode()
            assert partition_for(key, n) == partitioner(key, partitions, partitions)


def test_provinces_are_told_apart_by_their_first_two_characters() -> None:
    assert len(_PROVINCE_BY_HEAD) == len(PROVINCES)


def test_the_progress_bar_shows_share_rows_and_rate_on_a_terminal_only() -> None:
    out = io.StringIO()
    position = iter([500, 1000])
    bar = Progress(1000, lambda: next(position), stream=out, enabled=True, interval=0)
    bar.tick(1024)
    bar.tick(1025)  # only every 1024 rows
    bar.done(2048)
    first, last = out.getvalue().split("\r")[1:]
    assert "50%" in first and "1,024 rows" in first and "rows/s" in first and "ETA" in first
    assert "100%" in last and "2,048 rows" in last and "done in" in last and last.endswith("\n")
    quiet = io.StringIO()
    Progress(1000, lambda: 0, stream=quiet).done(10)  # a StringIO is no terminal
    assert quiet.getvalue() == ""
