"""What ecrm keeps about a member beside the profile — the lots, the level and its term,
the qualifying history, manual tags — and the movements a step makes, each recorded once.

`MemberState` is stored as JSON in its own Redis key beside the profile (streams/keyspace.py
`member`), read and written in the same unit; the profile carries only the totals.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field

from schemas.written import Written

#: idempotency tokens kept per member (requests, rule actions, notices)
SEEN_KEPT = 128
#: redemptions and order earnings kept for refunds (the oldest go first)
RECORDS_KEPT = 64

LotState = Literal["pending", "active"]


class Lot(BaseModel):
    """One credit of points. Spent, expired and reversed lots leave the state (their
    movements are the record); `remaining` is what is left to spend."""

    id: str  # "order:<order_id>", "action:<action_id>", "adjust:<request>", "return:<…>"
    points: int
    remaining: int
    state: LotState
    earned_at: AwareDatetime
    unlock_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None


class Earning(BaseModel):
    """What an order earned, to take back the refunded share of it."""

    amount: Decimal
    points: int
    refunded: Decimal = Decimal("0")
    reversed: int = 0


class Redemption(BaseModel):
    """Points spent by a request, given back in proportion when its order is refunded."""

    points: int
    order_id: str | None = None
    returned: int = 0


class Qualifying(BaseModel):
    """One contribution to the level metric (an order's net spend, a lot's points, an order)."""

    at: AwareDatetime
    value: Decimal


class MemberState(BaseModel):
    """Per member: level and term, lots, debt (policy `unlimited` only), records for refunds."""

    customer_id: str
    level: str | None = None
    level_since: AwareDatetime | None = None
    term_end: AwareDatetime | None = None
    grace_until: AwareDatetime | None = None
    pinned: bool = False
    lots: list[Lot] = Field(default_factory=list)
    debt: int = 0
    earned: dict[str, Earning] = Field(default_factory=dict)
    redemptions: dict[str, Redemption] = Field(default_factory=dict)
    qualifying: dict[str, Qualifying] = Field(default_factory=dict)
    #: the latest paid order or earning (expiry mode `inactivity` counts from it)
    last_active_at: AwareDatetime | None = None
    manual_tags: list[str] = Field(default_factory=list)
    seen: list[str] = Field(default_factory=list)

    @property
    def is_member(self) -> bool:
        return self.level is not None

    @property
    def balance(self) -> int:
        """Active points, less any debt a refund left (`refund: unlimited`)."""
        return sum(lot.remaining for lot in self.lots if lot.state == "active") - self.debt

    @property
    def pending(self) -> int:
        return sum(lot.remaining for lot in self.lots if lot.state == "pending")

    def saw(self, token: str) -> bool:
        """True when `token` was seen before; else remembers it."""
        short = hashlib.blake2b(token.encode(), digest_size=8).hexdigest()
        if short in self.seen:
            return True
        self.seen.append(short)
        del self.seen[:-SEEN_KEPT]
        return False

    def has_seen(self, token: str) -> bool:
        return hashlib.blake2b(token.encode(), digest_size=8).hexdigest() in self.seen

    def is_empty(self) -> bool:
        return self.level is None and not self.lots and not self.manual_tags and not self.seen


MovementKind = Literal[
    "earned",
    "unlocked",
    "redeemed",
    "refused",
    "reversed",
    "expired",
    "adjusted",
    "returned",
    "level_changed",
    "tag_added",
    "tag_removed",
]
POINTS_KINDS = frozenset(
    ("earned", "unlocked", "redeemed", "refused", "reversed", "expired", "adjusted", "returned")
)


@dataclass(frozen=True)
class Movement:
    """One change to a member, as `ecrm.member-changes` and ClickHouse record it.

    `points` is the signed change to the balance, or to the pending total when `pending`
    (an order's lot earned, reversed or lapsed before it unlocked); a refused request
    carries the points asked for. A spend over several lots is one movement per lot."""

    kind: MovementKind
    customer_id: str
    at: datetime
    points: int = 0
    balance: int | None = None
    lot: str = ""
    source: str = ""
    reason: str = ""
    level_from: str | None = None
    level_to: str | None = None
    tag: str | None = None
    tag_source: str | None = None
    #: the movement concerns pending points (an order's lot before it unlocks): the balance
    #: does not move
    pending: bool = False
    #: when the lot it concerns lapses (finance's liability by month)
    expires_at: datetime | None = None
    #: the member's level at the movement
    level: str | None = None

    @property
    def movement_id(self) -> str:
        """The same movement always has the same id, so a consumer can dedupe."""
        key = "|".join(
            (
                self.kind,
                self.customer_id,
                self.at.isoformat(),
                self.lot,
                self.source,
                str(self.points),
                str(self.pending),
                self.reason,
                str(self.level_to),
                str(self.tag),
            )
        )
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def as_message(self) -> dict[str, Any]:
        """The `ecrm.member-changes` message."""
        out: dict[str, Any] = {
            "movement_id": self.movement_id,
            "customer_id": self.customer_id,
            "kind": self.kind,
            "at": self.at.isoformat(),
        }
        if self.kind in POINTS_KINDS:
            out.update(points=self.points, balance=self.balance, lot=self.lot or None)
            if self.pending:
                out["pending"] = True
            if self.expires_at is not None:
                out["expires_at"] = self.expires_at.isoformat()
        if self.source:
            out["source"] = self.source
        if self.reason:
            out["reason"] = self.reason
        if self.kind == "level_changed":
            out.update({"from": self.level_from, "to": self.level_to})
        if self.tag is not None:
            out.update(tag=self.tag, tag_source=self.tag_source)
        return out


#: member states this process wrote lately (schemas/written.py): the step changes a member
#: in place, so one read back is handed over, not shared
_WRITTEN: Written[MemberState] = Written(handed_over=True)


def member_json(member: MemberState) -> bytes:
    """The member state as Redis keeps it (JSON). Not to be changed after: `member_from_json`
    may hand it back for these bytes."""
    return _WRITTEN.remember(member.model_dump_json().encode(), member)


def member_kept(raw: bytes, member: MemberState) -> bytes:
    """The member state as read (`raw`), which a step left as it was: not encoded again, and
    remembered again under its bytes for the next read."""
    return _WRITTEN.remember(raw, member)


def member_from_json(raw: bytes | str) -> MemberState:
    """A member state read back from Redis (bytes this process wrote lately: not validated
    again)."""
    return _WRITTEN.take(raw) or MemberState.model_validate_json(raw)
