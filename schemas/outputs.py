"""What ecrm emits: segment changes, actions and dead-letter records."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.pii import looks_personal, scrub, withheld

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


#: How much of a refused message a dead letter keeps: with base64 and text copies a letter
#: stays around 12 KB, far below the 1 MB a Kafka broker accepts by default, however big the
#: message was (its size and SHA-256 say what the rest was).
DEAD_LETTER_PREFIX_BYTES = 4096
#: Message keys are customer ids; a longer one is cut to this many bytes.
DEAD_LETTER_KEY_BYTES = 1024
#: Reasons are a few lines; a longer one is cut to this many characters.
DEAD_LETTER_ERROR_CHARS = 2000


def bounded_key(key: bytes | None) -> bytes | None:
    """The key a dead letter is sent with: the message's, cut to DEAD_LETTER_KEY_BYTES."""
    return None if key is None else key[:DEAD_LETTER_KEY_BYTES]


class DeadLetter(BaseModel):
    """An input that could not be used, with the reason: the message whole when it is small,
    else its first 4 KiB (DEAD_LETTER_PREFIX_BYTES) with its full size and SHA-256."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int
    key: str | None = None
    error: str
    value_b64: str = Field(
        description="the original bytes, base64; only the first "
        f"{DEAD_LETTER_PREFIX_BYTES} when value_truncated"
    )
    value_text: str | None = Field(
        default=None,
        description="the same bytes as UTF-8, when the message is UTF-8 (a character cut by "
        "the prefix is left out)",
    )
    value_size: int | None = Field(default=None, description="size of the original bytes")
    value_sha256: str | None = Field(default=None, description="SHA-256 of the original bytes, hex")
    value_truncated: bool = Field(
        default=False, description="true when value_b64 and value_text hold only a prefix"
    )
    at: datetime

    @classmethod
    def withheld(
        cls, *, topic: str, partition: int, offset: int, size: int, error: str, at: datetime
    ) -> DeadLetter:
        """A letter that keeps nothing of the message (an erased customer's event): where it
        was, its size and why; no key, no bytes, no hash."""
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            error=error,
            value_b64="",
            value_size=size,
            value_truncated=size > 0,
            at=at,
        )

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
        kept = value[:DEAD_LETTER_PREFIX_BYTES]
        truncated = len(kept) < len(value)
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            text: str | None = None
        else:  # the whole is UTF-8, so only a character cut at the end can be undecodable
            text = kept.decode("utf-8", "ignore") if truncated else kept.decode("utf-8")
        if looks_personal(value.decode("utf-8", "replace")):
            # personal data is not kept in clear: a short prefix, masked, with size and hash
            shown = withheld(value)
            text = str(shown["prefix"])
            kept = text.encode()
            truncated = True
        if key is not None and looks_personal(key.decode("utf-8", "replace")):
            key = scrub(key.decode("utf-8", "replace")).encode()
        if looks_personal(error):
            error = scrub(error)
        if len(error) > DEAD_LETTER_ERROR_CHARS:
            error = f"{error[: DEAD_LETTER_ERROR_CHARS - 1]}…"
        short_key = bounded_key(key)
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            key=short_key.decode("utf-8", "replace") if short_key is not None else None,
            error=error,
            value_b64=base64.b64encode(kept).decode(),
            value_text=text,
            value_size=len(value),
            value_sha256=hashlib.sha256(value).hexdigest(),
            value_truncated=truncated,
            at=at,
        )
