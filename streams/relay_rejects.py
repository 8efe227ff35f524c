"""Messages the Kafka relay could never send, kept in Redis with the reason, and its counters.

A message too large for the topic is moved, in the same MULTI that acknowledges its outbox
entry, to its outbox's rejects stream (`keyspace.relay_rejects(stream)`, in the outbox's slot;
one per partition): whole (value included, so it can be repaired and queued again) unless it
holds a phone number or an e-mail address (then `value_prefix`, masked, `value_size` and
`value_sha256`), with its size and why it was refused. Operators read
them with `ecrm relay rejects` (`list_rejects`, every partition's); `keyspace.relay_stats(stream)`
counts what each outbox's relay sent, skipped (already on the topic), rejected, retried and
took over, and `relay_stats` sums them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.pii import withheld_fields
from streams import keyspace


@dataclass(frozen=True)
class Reject:
    """One message set aside: where it was going, why it was refused, and the message."""

    id: str
    #: the outbox stream it came from (one per partition)
    outbox: str
    outbox_id: str
    topic: str
    key: bytes | None
    size: int
    reason: str
    rejected_at: datetime
    relay: str
    value: bytes


def reject_fields(
    outbox_id: bytes, fields: dict[bytes, bytes], reason: str, relay: str, now: datetime
) -> dict[bytes, bytes]:
    """The XADD fields of a reject: the outbox entry's own fields plus why and when."""
    value = fields.get(b"value", b"")
    size = len(value) + len(fields.get(b"key") or b"")
    return {
        **withheld_fields(fields),
        b"outbox_id": outbox_id,
        b"size": str(size).encode(),
        b"reason": reason.encode(),
        b"rejected_at": now.astimezone(UTC).isoformat().encode(),
        b"relay": relay.encode(),
    }


def list_rejects(client: Any, outboxes: Sequence[str], count: int = 100) -> list[Reject]:
    """The latest `count` rejects of these outboxes together, newest first (`ecrm relay
    rejects`; `client`: a synchronous Redis or RedisCluster client)."""
    pipe = client.pipeline(transaction=False)
    for outbox in outboxes:
        pipe.xrevrange(keyspace.relay_rejects(outbox), count=count)
    found = [
        _reject(outbox, eid, fields)
        for outbox, records in zip(outboxes, pipe.execute(), strict=True)
        for eid, fields in records
    ]
    found.sort(key=lambda r: _id_key(r.id), reverse=True)
    return found[:count]


def relay_stats(client: Any, outboxes: Sequence[str]) -> dict[str, int]:
    """The relays' counters over these outboxes: sent, skipped, rejected, retries, taken_over."""
    pipe = client.pipeline(transaction=False)
    for outbox in outboxes:
        pipe.hgetall(keyspace.relay_stats(outbox))
    total: Counter[str] = Counter()
    for counts in pipe.execute():
        for k, v in counts.items():
            total[_text(k)] += int(v)
    return dict(total)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _reject(outbox: str, eid: Any, fields: dict[bytes, bytes]) -> Reject:
    return Reject(
        id=_text(eid),
        outbox=outbox,
        outbox_id=_text(fields.get(b"outbox_id", b"")),
        topic=_text(fields.get(b"topic", b"")),
        key=fields.get(b"key"),
        size=int(fields.get(b"size", b"0")),
        reason=_text(fields.get(b"reason", b"")),
        rejected_at=datetime.fromisoformat(_text(fields[b"rejected_at"])),
        relay=_text(fields.get(b"relay", b"")),
        value=fields.get(b"value", b""),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
