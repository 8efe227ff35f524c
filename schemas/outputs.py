"""What ecrm emits: segment changes, actions and dead-letter records."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Segment = Literal[
    "prospect",
    "important_value",
    "important_develop",
    "important_keep",
    "important_retain",
    "general_value",
    "general_develop",
    "general_keep",
    "general_retain",
]
#: Every segment slug, prospects first, then the eight of PRODUCT.md in its order.
SEGMENTS: tuple[str, ...] = get_args(Segment)


class SegmentChange(BaseModel):
    """A customer moved from one RFM segment to another, by an event or by time passing."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    customer_id: str
    from_: Segment = Field(alias="from")
    to: Segment
    at: AwareDatetime
    cause: Literal["event", "time"] = "event"
    event_id: str | None = None

    @classmethod
    def of(
        cls,
        customer_id: str,
        was: str,
        now_in: str,
        at: datetime,
        cause: str,
        event_id: str | None,
    ) -> SegmentChange:
        """The change of one customer from `was` to `now_in` (one place builds them all)."""
        return cls.model_validate(
            {
                "customer_id": customer_id,
                "from": was,
                "to": now_in,
                "at": at,
                "cause": cause,
                "event_id": event_id,
            }
        )

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class Action(BaseModel):
    """One action to deliver; `action_id` is the same for the same trigger, so consumers dedupe."""

    model_config = ConfigDict(frozen=True)

    action_id: str
    rule_id: str
    customer_id: str
    kind: str
    channel: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    trigger_event_id: str | None = None
    fired_at: AwareDatetime


class DeadLetter(BaseModel):
    """An input that could not be used, kept whole with the reason."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int
    key: str | None = None
    error: str
    value_b64: str = Field(description="the original bytes, base64")
    value_text: str | None = Field(
        default=None, description="the original bytes as UTF-8, when they are"
    )
    at: datetime

    @classmethod
    def of(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes,
        error: str,
        at: datetime,
    ) -> DeadLetter:
        try:
            text: str | None = value.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key.decode("utf-8", "replace") if key is not None else None,
            error=error,
            value_b64=base64.b64encode(value).decode(),
            value_text=text,
            at=at,
        )
