"""One row of an order file in; its order events, or why it was skipped or rejected, out.

Pure: the clock and the secret come in through `ImportPolicy`. A paid row gives a `paid`
event whose id derives from the order number (`taobao:{order}:paid`), and a refund gives a
`refunded` event (`taobao:{order}:refund`), so importing a file twice changes nothing
downstream. Every event says `origin: import`: history updates profiles but never markets.
Personal data never reaches an event: the buyer becomes a keyed hash, the phone and buyer
only appear masked, the address only as its province.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from agents.order_import.values import (
    MAX_ID_LENGTH,
    clean,
    local_time,
    money,
    order_number,
    zone_named,
)
from schemas.events import IMPORT_ORIGIN
from schemas.order_mapping import OrderFileError, OrderMapping, StatusAction, status_key
from schemas.pii import customer_id_for, mask_phone, mask_text, scrub

ZERO = Decimal("0")
MAX_TEXT = 200
#: provincial-level divisions, as an address starts (浙江省…, 广西壮族自治区…, 北京 北京市…)
PROVINCES = (
    "北京 天津 河北 山西 内蒙古 辽宁 吉林 黑龙江 上海 江苏 浙江 安徽 福建 江西 山东 河南 湖北 "
    "湖南 广东 广西 海南 重庆 四川 贵州 云南 西藏 陕西 甘肃 青海 宁夏 新疆 台湾 香港 澳门"
).split()
_PROVINCE_BY_HEAD = {p[:2]: p for p in PROVINCES}  # no two share their first two characters
_CURRENCY = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True)
class Imported:
    """The row is an order: these events go to the orders topic."""

    events: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Skipped:
    """The row is no order to count (yet): awaiting payment, closed unpaid, too old …"""

    reason: str


@dataclass(frozen=True)
class Rejected:
    """The row cannot be read; the reason says what to fix."""

    reason: str


RowOutcome = Imported | Skipped | Rejected


@dataclass(frozen=True)
class ImportPolicy:
    """What an import run decides once for every row."""

    now: datetime
    secret: bytes | None = None
    #: orders paid before this are skipped: they would leave the RFM window at once
    not_before: datetime | None = None
    #: every event's shop; None = the file's shop column, or `default`
    shop_id: str | None = None
    #: a time further in the future than this is a typo, not an order
    max_ahead: timedelta = timedelta(days=1)


class RowReader:
    """Reads the rows of one file, given its header; raises OrderFileError on a header
    that lacks a mapped column."""

    def __init__(self, mapping: OrderMapping, header: list[str], policy: ImportPolicy) -> None:
        self.mapping = mapping
        self.policy = policy
        self.header = [clean(h) for h in header]
        index: dict[str, int] = {}
        for i, name in enumerate(self.header):
            if name:
                index.setdefault(name, i)
        self.width = max(index.values(), default=-1) + 1
        wanted = {**mapping.columns.used(), **{f"keep.{k}": v for k, v in mapping.keep.items()}}
        missing = [h for h in wanted.values() if h not in index and h not in mapping.optional]
        if missing:
            found = ", ".join(h for h in self.header if h) or "nothing"
            raise OrderFileError(f"the header lacks {', '.join(missing)} (it has: {found})")
        if mapping.columns.buyer is not None and policy.secret is None:
            raise OrderFileError("buyer names are hashed: the import needs ECRM_PII_SECRET")
        try:
            self.zone = zone_named(mapping.timezone)
        except ValueError as exc:
            raise OrderFileError(str(exc)) from None
        self.headers = wanted
        self.columns = {field: index.get(h) for field, h in wanted.items()}
        self.statuses = mapping.status_actions()
        self.latest = policy.now + policy.max_ahead
        shown = set(wanted) - {"buyer", "customer_id", "phone", "address"}
        self.shown = {i for field, i in self.columns.items() if field in shown and i is not None}

    def read(self, fields: list[str]) -> RowOutcome:
        if not "".join(fields).strip():
            return Skipped("blank_row")
        if not self.aligned(fields):
            return Rejected(f"{len(fields)} fields where the header has {self.width}")
        try:
            return self._read(fields)
        except ValueError as exc:
            return Rejected(str(exc))

    def aligned(self, fields: list[str]) -> bool:
        """As many fields as the header names (empty trailing ones do not count)."""
        return len(fields) >= self.width and not "".join(fields[self.width :]).strip()

    def masked(self, fields: list[str]) -> list[str]:
        """The row as a reject file may show it: only order columns in clear, scrubbed."""
        shown = self.shown if self.aligned(fields) else set()
        return [scrub(clean(f)) if i in shown else _mask(f) for i, f in enumerate(fields)]

    def _cell(self, fields: list[str], field: str) -> str:
        i = self.columns.get(field)
        if i is None:
            return ""
        value = fields[i]
        if "\ufffd" in value:
            raise ValueError(f"{self.header[i]} has bytes that do not decode (wrong encoding?)")
        return clean(value)

    def _header(self, field: str) -> str:
        return self.headers.get(field, field)

    def _read(self, fields: list[str]) -> RowOutcome:
        action: StatusAction = "paid"
        if self.statuses is not None:
            status = self._cell(fields, "status")
            found = self.statuses.get(status_key(status))
            if found is None:
                raise ValueError(f"unknown status {status!r}" if status else "no status")
            action, reason = found
            if action == "skip":
                return Skipped(reason)
        order_id = order_number(self._cell(fields, "order_id"))
        customer_id = self._customer(fields)
        amount = money(self._cell(fields, "amount"), self._header("amount"))
        if amount is None:
            raise ValueError(f"no {self._header('amount')}")
        paid_at = local_time(self._cell(fields, "paid_at"), self.zone, self._header("paid_at"))
        created_at = local_time(
            self._cell(fields, "created_at"), self.zone, self._header("created_at")
        )
        refund = money(self._cell(fields, "refund"), self._header("refund")) or ZERO
        if action == "closed" and (
            amount == 0 or (self.columns.get("paid_at") is not None and paid_at is None)
        ):
            return Skipped("closed_unpaid")
        ts = paid_at or created_at
        if ts is None:
            raise ValueError("no payment or creation time")
        if ts > self.latest:
            raise ValueError(f"time {ts.isoformat()} is in the future")
        if refund > amount:
            raise ValueError(f"refund {refund} is more than the payment {amount}")
        if self.policy.not_before is not None and ts < self.policy.not_before:
            return Skipped("older_than_rfm_window")
        if action == "closed" and refund == 0:
            refund = amount  # closed after payment: the money went back
        return Imported(self._events(fields, order_id, customer_id, ts, amount, refund))

    def _customer(self, fields: list[str]) -> str:
        if self.mapping.columns.buyer is None:
            cid = self._cell(fields, "customer_id")
            if not cid or len(cid) > MAX_ID_LENGTH:
                raise ValueError(f"no usable {self._header('customer_id')}")
            if scrub(cid) != cid:
                raise ValueError(
                    f"{self._header('customer_id')} looks like a phone or e-mail: map it as "
                    "columns.buyer to have it hashed"
                )
            return cid
        buyer = self._cell(fields, "buyer")
        if not buyer:
            raise ValueError(f"no {self._header('buyer')}")
        if "*" in buyer:
            # the platform masked it (t**8): hashing it would merge unrelated buyers
            raise ValueError(
                f"{self._header('buyer')} is masked by the platform, so buyers cannot be told "
                "apart: export with full nicknames, or map a buyer id column"
            )
        assert self.policy.secret is not None  # checked in __init__
        return customer_id_for(buyer, self.policy.secret)

    def _events(
        self,
        fields: list[str],
        order_id: str,
        customer_id: str,
        ts: datetime,
        amount: Decimal,
        refund: Decimal,
    ) -> tuple[dict[str, Any], ...]:
        currency = (self._cell(fields, "currency") or self.mapping.currency).upper()
        if not _CURRENCY.fullmatch(currency):
            raise ValueError(f"currency {currency!r} is not a three-letter code")
        shop = self.policy.shop_id or self._cell(fields, "shop_id") or "default"
        base = {
            "customer_id": customer_id,
            "ts": ts.isoformat(),
            "shop_id": shop[:MAX_ID_LENGTH],
            "order_id": order_id,
            "currency": currency,
            **self._extra(fields),
            "origin": IMPORT_ORIGIN,  # history: it builds profiles, it never markets
        }
        source = self.mapping.source
        paid = {"event_id": f"{source}:{order_id}:paid", **base, "status": "paid"}
        paid["amount"] = str(amount)
        if refund == 0:
            return (paid,)
        refunded = {"event_id": f"{source}:{order_id}:refund", **base, "status": "refunded"}
        refunded["amount"] = str(refund)
        return paid, refunded

    def _extra(self, fields: list[str]) -> dict[str, str]:
        """Fields beyond the contract, none of them personal in clear."""
        extra = {"source": self.mapping.source}
        if self.columns.get("buyer") is not None:
            extra["buyer_masked"] = mask_text(self._cell(fields, "buyer"))
        phone = self._cell(fields, "phone")
        if phone:
            extra["phone_masked"] = mask_phone(phone)
        region = region_of(self._cell(fields, "address"))
        if region:
            extra["region"] = region
        title = self._cell(fields, "title")
        if title:
            extra["title"] = scrub(title)[:MAX_TEXT]
        for name in self.mapping.keep:
            value = self._cell(fields, f"keep.{name}")
            if value:
                extra[name] = scrub(value)[:MAX_TEXT]
        return extra


def region_of(address: str) -> str:
    """The province an address starts with (浙江, 北京, 广西), or '': nothing else of it."""
    text = address.lstrip()
    province = _PROVINCE_BY_HEAD.get(text[:2], "")
    return province if text.startswith(province) else ""


def _mask(value: str) -> str:
    text = clean(value)
    digits = re.sub(r"[\s-]", "", text)
    if len(digits) == 11 and digits.isdigit() and digits.startswith("1"):
        return mask_phone(digits)
    return scrub(mask_text(text))
