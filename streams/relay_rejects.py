"""Messages the Kafka relay could never send, kept in Redis with the reason, and its counters.

A message too large for the topic is moved, in the same MULTI that acknowledges its outbox
entry, to the `ecrm:relay:rejects` stream: whole (value included, so it can be repaired and
queued again) unless it holds a phone number or an e-mail address (then `value_prefix`,
masked, `value_size` and `value_sha256`), with its size and why it was refused. Operators read it with
`redis-cli XRANGE ecrm:relay:rejects - +` or `list_rejects`; `ecrm:relay:stats` counts what
the relay sent, skipped (already on the topic), rejected, retried and took over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from schemas.pii import withheld_fields
from streams import keyspace

RELAY_REJECTS = keyspace.RELAY_REJECTS
RELAY_STATS = keyspace.RELAY_STATS


@dataclass(frozen=True)
class Reject:
    """One message set aside: where it was going, why it was refused, and the message."""

    id: str
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


def list_rejects(
    client: redis.Redis, count: int = 100, stream: str = RELAY_REJECTS
) -> list[Reject]:
    """The latest `count` rejects, newest first (for an `ecrm relay rejects` command)."""
    return [_reject(eid, fields) for eid, fields in client.xrevrange(stream, count=count)]


def relay_stats(client: redis.Redis, key: str = RELAY_STATS) -> dict[str, int]:
    """The relay's counters: sent, skipped, rejected, retries, taken_over."""
    return {_text(k): int(v) for k, v in client.hgetall(key).items()}


def _reject(eid: Any, fields: dict[bytes, bytes]) -> Reject:
    return Reject(
        id=_text(eid),
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
