"""How the sink merges outbox entries into large inserts that a crash cannot regroup.

ClickHouse likes few large inserts; workers write one outbox entry per batch per table
(up to a few thousand rows). The sink therefore merges entries of one table, in stream-id
order, into groups of up to `max_rows` rows, each inserted once with a deduplication token.
A retried insert is dropped by ClickHouse only if it has the same token *and* was meant to
hold the same rows, so a group must come out the same after a crash, whoever retries it.

The rule: a group of two or more entries is written down in Redis (`{stream}:groups`, each
member id -> the group's table and member ids) *before* it is inserted, and removed in the
same MULTI that acknowledges and deletes its members. A drainer that claims a dead one's
entries (XAUTOCLAIM) looks them up there first and re-forms exactly the recorded group —
same members, same order, same token `{stream}/{first}..{last}` — claiming any member it did
not get. An entry with no record was never part of a merged insert, so it goes alone with
its own token `{stream}/{entry_id}`, as every entry did before merging existed. Only entries
read fresh (never delivered before) are merged into new groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.outbox import entry_token


@dataclass
class Group:
    """Outbox entries of one table inserted as one insert under one token."""

    table: str
    entry_ids: list[bytes]
    #: each member entry's fields as read, for rejecting an entry whole
    fields: list[dict[bytes, bytes]]
    rows: list[dict[str, Any]]
    #: how many of `rows` each member holds, in order
    sizes: list[int]
    token: str
    recorded: bool = False
    #: deliveries so far (the most of any member), against the sink's max_deliveries
    attempts: int = 1
    #: rows ClickHouse refused, (index in rows, reason), found by bisection
    refused: list[tuple[int, str]] = field(default_factory=list)
    #: the whole insert was refused too often: its entries are set aside as they are
    set_aside: str | None = None

    def origin(self, row: int) -> bytes:
        """The id of the member entry holding rows[row]."""
        for entry_id, size in zip(self.entry_ids, self.sizes, strict=True):
            if row < size:
                return entry_id
            row -= size
        raise IndexError(row)


@dataclass(frozen=True)
class Parsed:
    """An outbox entry read and parsed: its id, fields, table, rows and deliveries so far."""

    entry_id: bytes
    fields: dict[bytes, bytes]
    table: str
    rows: list[dict[str, Any]]
    deliveries: int = 1


def merged_token(stream: str, first: bytes, last: bytes) -> str:
    """The token of a merged group: its first and last member ids name it (no entry is in two)."""
    return f"{stream}/{first.decode()}..{last.decode()}"


def plan(entries: Sequence[Parsed], max_rows: int) -> list[list[Parsed]]:
    """Entries grouped by table in id order, a group closed before it would pass max_rows
    (an entry larger than max_rows is a group alone)."""
    open_groups: dict[str, list[Parsed]] = {}
    sizes: dict[str, int] = {}
    done: list[list[Parsed]] = []
    for entry in sorted(entries, key=lambda e: id_key(e.entry_id)):
        members = open_groups.get(entry.table)
        if members and sizes[entry.table] + len(entry.rows) > max_rows:
            done.append(members)
            members = None
        if not members:
            open_groups[entry.table] = members = []
            sizes[entry.table] = 0
        members.append(entry)
        sizes[entry.table] += len(entry.rows)
    return sorted(done + list(open_groups.values()), key=lambda g: id_key(g[0].entry_id))


def group_of(stream: str, members: Sequence[Parsed]) -> Group:
    """The Group inserting members (one table, id order) with its deterministic token."""
    first, last = members[0].entry_id, members[-1].entry_id
    single = len(members) == 1
    return Group(
        table=members[0].table,
        entry_ids=[m.entry_id for m in members],
        fields=[m.fields for m in members],
        rows=[row for m in members for row in m.rows],
        sizes=[len(m.rows) for m in members],
        token=entry_token(stream, first.decode()) if single else merged_token(stream, first, last),
        recorded=not single,
        attempts=max(m.deliveries for m in members),
    )


def record(group: Group) -> bytes:
    """What `{stream}:groups` holds for each member of a merged group."""
    return group.table.encode() + b" " + b",".join(group.entry_ids)


def members_of(recorded: bytes) -> list[bytes]:
    """The member ids of a recorded group, in order."""
    return recorded.split(b" ", 1)[1].split(b",")


def id_key(entry_id: bytes) -> tuple[int, int]:
    """A stream entry id as numbers, for ordering ids (of one stream or several)."""
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)
