"""A consumed message, decoded and validated, or refused with a reason (the worker and the
ingest API both decode here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from schemas.events import EVENT_BY_TOPIC, TIME_WINDOW, Event, TimeWindow
from schemas.pii import PiiGuard


@dataclass
class Incoming:
    """One consumed message, decoded or refused."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    event: Event | None = None
    error: str | None = None
    #: what the consumer acknowledges once this is applied (the worker's Faust event)
    source: Any = None
    #: the partition's clock as it is decided (agents/profile/event_time.py), once released
    mark: datetime | None = None

    @property
    def at(self) -> datetime | None:
        """When it happened (None for a message that is not a valid event)."""
        return self.event.ts if self.event is not None else None


def decode(
    topic: str,
    kind: str,
    partition: int,
    offset: int,
    key: Any,
    value: Any,
    window: TimeWindow | None = None,
    guard: PiiGuard | None = None,
) -> Incoming:
    """One message read and validated; `window` (from the caller's clock, see
    `Settings.time_window`) refuses event times that make no sense; `guard` replaces the
    personal data an event holds (schemas/pii.py) before anything stores or forwards it."""
    raw = value if isinstance(value, bytes) else (b"" if value is None else str(value).encode())
    item = Incoming(topic, partition, offset, key if isinstance(key, bytes) else None, raw)
    model = EVENT_BY_TOPIC.get(kind)
    if model is None:
        item.error = f"no event is defined for topic {topic!r}"
        return item
    try:
        event = model.model_validate_json(raw, context={TIME_WINDOW: window})
    except ValidationError as exc:
        item.error = _reason(exc)
        return item
    item.event = event if guard is None else guard.protect(event)
    return item


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
