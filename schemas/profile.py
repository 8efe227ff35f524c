"""The live customer profile as stored in Redis (JSON) and printed by `ecrm profile`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from schemas.outputs import Segment
from schemas.written import Written


class OrderLine(BaseModel):
    """A paid order inside the RFM window, with what was refunded of it since."""

    model_config = ConfigDict(extra="ignore")

    at: AwareDatetime | None = None  # None while only a refund has been seen (out of order)
    amount: Decimal = Decimal("0")
    refunded: Decimal = Decimal("0")
    refund_ids: list[str] = Field(default_factory=list)

    @property
    def paid(self) -> bool:
        return self.at is not None

    @property
    def net(self) -> Decimal:
        return max(self.amount - self.refunded, Decimal("0"))


class CartLine(BaseModel):
    qty: int
    price: Decimal
    added_at: AwareDatetime


class ViewStat(BaseModel):
    count: int
    last_at: AwareDatetime
    category: str | None = None


class ConsentMark(BaseModel):
    """A customer's word on one channel, and when they gave it (the event's `ts`): the latest
    word wins, whatever order the events arrive in."""

    granted: bool
    at: AwareDatetime


def _empty(value: object) -> bool:
    return not value


class PointsExpiry(BaseModel):
    """Active points that lapse at one instant."""

    at: AwareDatetime
    points: int


class Profile(BaseModel):
    """Everything ecrm knows about one customer, kept small (well under 1 KB typically)."""

    model_config = ConfigDict(extra="ignore")

    customer_id: str
    shop_id: str = "default"
    first_seen_at: AwareDatetime | None = None
    last_seen_at: AwareDatetime | None = None

    # RFM, as of `as_of` (refreshed on every event and by the time sweep)
    recency_days: int | None = None
    frequency: int = 0
    monetary: Decimal = Decimal("0")
    segment: Segment = "prospect"
    segment_since: AwareDatetime | None = None
    as_of: AwareDatetime | None = None
    first_order_at: AwareDatetime | None = None
    last_order_at: AwareDatetime | None = None
    orders: dict[str, OrderLine] = Field(default_factory=dict)

    # behaviour
    cart: dict[str, CartLine] = Field(default_factory=dict)
    favorites: dict[str, AwareDatetime] = Field(default_factory=dict)
    views: dict[str, ViewStat] = Field(default_factory=dict)
    page_views: int = 0
    events_seen: int = 0

    # member attributes (`ecrm.customers`)
    joined_at: AwareDatetime | None = None
    birthday: str | None = None  # MM-DD, no year
    #: channel (sms, push, wechat, email, inbox) -> the customer's latest word on it; a channel
    #: missing here follows ECRM_CONSENT_DEFAULT (docs/privacy.md)
    consent: dict[str, ConsentMark] = Field(default_factory=dict)

    # membership (agents/membership, docs/membership.md): the totals; the lots live in their
    # own key beside the profile. Left out of the stored JSON while empty (profiles stay small).
    level: str | None = None
    points: int = 0
    tags: list[str] = Field(default_factory=list)
    points_pending: int = Field(default=0, exclude_if=_empty)
    #: the soonest instants active points lapse, with how many
    points_expiring: list[PointsExpiry] = Field(default_factory=list, exclude_if=_empty)
    #: when the level's term ends (re-evaluated against the keep threshold then)
    level_until: AwareDatetime | None = Field(default=None, exclude_if=_empty)
    #: the level's benefits as the programme file names them
    benefits: dict[str, Any] = Field(default_factory=dict, exclude_if=_empty)

    #: set when this id was linked to another customer (an anonymous session that logged
    #: in, agents/identity.py): this profile is only a redirect, everything lives there
    merged_into: str | None = None

    #: ids of the latest non-order events, to count a redelivered event once
    recent_event_ids: list[str] = Field(
        default_factory=list
    )  # hashed (agents.profile_fold.id_token)
    #: ids of the latest campaign events, kept apart so that a busy customer's views do not
    #: push them out: a campaign sent again reaches the customer once
    campaign_event_ids: list[str] = Field(default_factory=list)

    def public_view(self) -> dict[str, object]:
        """The JSON shape `ecrm profile --json` prints (no internal bookkeeping)."""
        data = self.model_dump(
            mode="json", exclude={"recent_event_ids", "campaign_event_ids", "orders"}
        )
        data["orders_in_window"] = len([o for o in self.orders.values() if o.paid])
        for name, info in type(self).model_fields.items():
            if info.exclude_if is not None and name not in data:  # empty: printed all the same
                data[name] = to_jsonable_python(getattr(self, name))
        return data


def empty_profile(customer_id: str, shop_id: str = "default") -> Profile:
    return Profile(customer_id=customer_id, shop_id=shop_id)


#: The shape of a profile as stored in Redis (docs/profile.md "Stored form"): the JSON of
#: `Profile` with every field at its default left out, after a leading `"v"` naming this
#: version. A reader fills missing fields with the defaults documented there.
STORED_FORMAT = 1
_STORED_PREFIX = b'{"v":%d,' % STORED_FORMAT


#: profiles this process stored lately (schemas/written.py): the step changes a profile in
#: place, so a profile read back is handed over, not shared
_WRITTEN: Written[Profile] = Written(handed_over=True)


def stored(profile: Profile) -> bytes:
    """The profile as Redis keeps it: compact (defaults left out) and versioned. About 40 %
    less to write, read and parse than the full JSON for the typical customer. The profile
    must not be changed after it was stored (`from_stored` may hand it back for these bytes)."""
    body = profile.model_dump_json(exclude_defaults=True).encode()
    # customer_id has no default: the object is never empty
    return _WRITTEN.remember(_STORED_PREFIX + body[1:], profile)


def from_stored(raw: bytes | str) -> Profile:
    """A profile read back from Redis, in the stored form or in the full JSON of earlier
    versions (both are `Profile` JSON; `"v"` is not a field and is ignored). Bytes this
    process stored lately give back the profile they were stored from, not validated again."""
    return _WRITTEN.take(raw) or Profile.model_validate_json(raw)


__all__ = [
    "STORED_FORMAT",
    "CartLine",
    "ConsentMark",
    "OrderLine",
    "PointsExpiry",
    "Profile",
    "ViewStat",
    "empty_profile",
    "from_stored",
    "stored",
]
