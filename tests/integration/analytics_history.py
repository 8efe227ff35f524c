"""A seeded, realistic shop history written straight into ClickHouse rows (no Kafka): paid and
refunded orders, cart adds bought or abandoned, segment changes, profile snapshots, and rule
decisions of every outcome with conversions inside and outside the attribution window."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from schemas.outputs import SEGMENTS as ALL_SEGMENTS
from streams.clickhouse import ClickHouse

START = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = 150
WINDOW = timedelta(hours=72)
RAISED = START + timedelta(days=100)
SEGMENTS = list(ALL_SEGMENTS[1:])  # the eight RFM segments, without prospect
SKUS = [f"sku-{n:02d}" for n in range(24)]


@dataclass(frozen=True)
class Rule:
    """What the generator needs of a rule: its priority, holdout share and coupon."""

    rule_id: str
    priority: int
    holdout: float
    coupon_value: Decimal | None
    conversion: tuple[float, float]  # chance of an order in the window: (treated, held out)
    raised_holdout: float | None = None  # the share from RAISED on: some customers change group


RULES = [
    Rule("abandoned-cart", 50, 0.25, Decimal("10"), (0.45, 0.25)),
    Rule("win-back", 40, 0.3, Decimal("30"), (0.35, 0.2)),
    Rule("browse-abandonment", 20, 0.2, None, (0.3, 0.3), raised_holdout=0.4),
    Rule("welcome", 30, 0.0, None, (0.3, 0.0)),
]


@dataclass
class History:
    """The rows of each table, as inserted (duplicates included)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    segment_changes: list[dict[str, Any]] = field(default_factory=list)
    rule_decisions: list[dict[str, Any]] = field(default_factory=list)
    profile_snapshots: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    def insert_into(self, ch: ClickHouse, batch: int = 2000) -> None:
        tables = ("events", "segment_changes", "rule_decisions", "profile_snapshots", "deliveries")
        for table in tables:
            rows = getattr(self, table)
            for n in range(0, len(rows), batch):
                ch.insert(table, rows[n : n + batch], token=f"history-{table}-{n}")


def ms(moment: datetime) -> datetime:
    """Millisecond precision, as DateTime64(3) stores it."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def held_out(rule: Rule, customer_id: str, at: datetime) -> bool:
    """The rules engine's draw: the same customer is always in or out, for one share."""
    share = rule.raised_holdout if rule.raised_holdout and at >= RAISED else rule.holdout
    digest = hashlib.sha256(f"{rule.rule_id}|{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.history = History()
        self.n = 0

    def next_id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n:06d}"

    def moment(self, lo: datetime, hi: datetime) -> datetime:
        return ms(lo + (hi - lo) * self.rng.random())

    def money(self, lo: int, hi: int) -> Decimal:
        return Decimal(self.rng.randrange(lo * 100, hi * 100)) / 100

    def event(self, kind: str, customer: str, ts: datetime, **fields: Any) -> dict[str, Any]:
        row: dict[str, Any] = {
            "event_id": self.next_id("e"),
            "kind": kind,
            "customer_id": customer,
            "shop_id": "default",
            "ts": ts,
            "currency": "CNY" if kind == "order" else "",
            "items": "[]",
            "extra": "{}",
            "source_topic": f"ecrm.{kind}",
            "source_partition": 0,
            "source_offset": self.n,
            "ingested_at": ts,
        }
        row.update(fields)
        self.history.events.append(row)
        if self.rng.random() < 0.04:  # a producer retry stored twice
            self.history.events.append(dict(row))
        return row

    def paid_order(self, customer: str, ts: datetime, skus: list[str] | None = None) -> None:
        if skus is None:
            skus = self.rng.sample(SKUS, self.rng.randint(1, 3))
        items = [{"sku": s, "qty": 1, "price": "19.90", "category": "tea"} for s in skus]
        amount = self.money(20, 600)
        order_id = self.next_id("o")
        self.event(
            "order",
            customer,
            ts,
            order_id=order_id,
            status="paid",
            amount=amount,
            items=orjson.dumps(items).decode(),
        )
        if self.rng.random() < 0.1:
            refunded = min(amount, self.money(5, 300))
            later = ms(ts + timedelta(days=self.rng.uniform(1, 10)))
            self.event(
                "order", customer, later, order_id=order_id, status="refunded", amount=refunded
            )

    def customer(self, customer: str) -> None:
        rng = self.rng
        end = START + timedelta(days=DAYS)
        for _ in range(rng.choice([0, 1, 1, 2, 3, 4, 6])):
            self.paid_order(customer, self.moment(START, end))
        for _ in range(rng.randint(0, 4)):
            sku = rng.choice(SKUS)
            ts = self.moment(START, end)
            self.event(
                "cart", customer, ts, sku=sku, qty=rng.randint(1, 3), price=self.money(5, 200)
            )
            roll = rng.random()
            if roll < 0.3:  # bought within a day
                self.paid_order(customer, ms(ts + timedelta(hours=rng.uniform(0, 23))), [sku])
            elif roll < 0.4:  # bought, but too late
                self.paid_order(customer, ms(ts + timedelta(hours=rng.uniform(25, 60))), [sku])
            elif roll < 0.45:  # an order without items takes the whole cart
                self.paid_order(customer, ms(ts + timedelta(hours=rng.uniform(0, 5))), [])
        self.segment_history(customer, end)
        for rule in RULES:
            if rng.random() < 0.45:
                for _ in range(rng.randint(1, 3)):
                    self.decision(rule, customer, self.moment(START, end))

    def segment_history(self, customer: str, end: datetime) -> None:
        at, segment = self.moment(START, START + timedelta(days=30)), "prospect"
        for _ in range(self.rng.randint(0, 4)):
            to = self.rng.choice([s for s in SEGMENTS if s != segment])
            change = {
                "customer_id": customer,
                "from_segment": segment,
                "to_segment": to,
                "at": at,
                "cause": "event",
                "event_id": "",
            }
            self.history.segment_changes.append(change)
            segment, at = to, self.moment(at, end)
        for n in range(self.rng.randint(1, 3)):
            self.history.profile_snapshots.append(
                {
                    "customer_id": customer,
                    "shop_id": "default",
                    "segment": segment,
                    "recency_days": None if n == 0 else self.rng.randint(0, 90),
                    "frequency": self.rng.randint(0, 6),
                    "monetary": self.money(0, 2000),
                    "first_order_at": None,
                    "last_order_at": None if n == 0 else at,
                    "level": "",
                    "points": 0,
                    "tags": [],
                    "cart_items": 0,
                    "cart_value": Decimal(0),
                    "as_of": ms(at + timedelta(minutes=n)),
                }
            )

    def decision(self, rule: Rule, customer: str, at: datetime) -> None:
        rng = self.rng
        action_id = hashlib.sha256(f"{rule.rule_id}|{customer}|{at}".encode()).hexdigest()[:32]
        base = {
            "action_id": action_id,
            "rule_id": rule.rule_id,
            "customer_id": customer,
            "kind": "coupon" if rule.coupon_value else "message",
            "channel": "sms",
            "params": "{}",
            "trigger_event_id": "",
            "decided_at": at,
            "deliver_at": None,
            "priority": rule.priority,
            "coupon_value": rule.coupon_value,
            "released": 0,
        }
        rows: list[dict[str, Any]] = []
        touched_at: datetime | None = at
        if held_out(rule, customer, at):
            rows.append({**base, "outcome": "held_out", "reason": "holdout"})
        else:
            roll = rng.random()
            if roll < 0.1:
                rows.append({**base, "outcome": "suppressed", "reason": "contact_cap"})
                touched_at = None
            elif roll < 0.3:
                deliver = ms(at + timedelta(hours=rng.uniform(1, 10)))
                rows.append(
                    {**base, "outcome": "deferred", "reason": "quiet_hours", "deliver_at": deliver}
                )
                if rng.random() < 0.8:
                    rows.append(
                        {
                            **base,
                            "outcome": "fired",
                            "reason": "",
                            "decided_at": deliver,
                            "deliver_at": deliver,
                            "released": 1,
                        }
                    )
                    touched_at = deliver
                else:
                    rows.append(
                        {
                            **base,
                            "outcome": "suppressed",
                            "reason": "cancelled",
                            "decided_at": deliver,
                        }
                    )
                    touched_at = None
            else:
                rows.append({**base, "outcome": "fired", "reason": ""})
        for row in rows:
            self.history.rule_decisions.append(row)
            if rng.random() < 0.05:  # a sink retry stored twice
                self.history.rule_decisions.append(dict(row))
            if row["outcome"] == "fired":
                self.delivery(row)
        if touched_at is not None:
            self.conversion(rule, customer, touched_at, treated=rows[0]["outcome"] != "held_out")

    def delivery(self, fired: dict[str, Any]) -> None:
        """What `ecrm deliver` and the receipts said of a fired action: sent (then perhaps
        delivered, clicked, a click twice), or failed; some never reached (deliver down).
        Its own dice, so the rest of the history stays as it was."""
        dice = random.Random(fired["action_id"])
        roll = dice.random()
        if roll < 0.1:
            return
        base = {
            "action_id": fired["action_id"],
            "rule_id": fired["rule_id"],
            "customer_id": fired["customer_id"],
            "channel": "sms",
            "provider": "aliyun",
            "provider_id": "",
            "reason": "",
            "attempts": 1,
        }
        at = fired["decided_at"] + timedelta(seconds=dice.uniform(1, 60))
        if roll < 0.2:
            self.history.deliveries.append(
                {**base, "status": "failed", "reason": "HTTP 400", "at": ms(at)}
            )
            return
        steps = ["sent"]
        if dice.random() < 0.8:
            steps.append("delivered")
            if dice.random() < 0.3:
                steps += ["clicked"] * dice.randint(1, 2)
        for n, status in enumerate(steps):
            self.history.deliveries.append(
                {**base, "status": status, "at": ms(at + timedelta(minutes=n))}
            )

    def conversion(self, rule: Rule, customer: str, touched_at: datetime, treated: bool) -> None:
        rng = self.rng
        if rng.random() >= rule.conversion[0 if treated else 1]:
            return
        roll = rng.random()
        if roll < 0.05:
            delay = WINDOW  # the last instant of the window still counts
        elif roll < 0.08:
            delay = timedelta(0)  # at the touch itself: not after it, not attributed
        elif roll < 0.75:
            delay = timedelta(hours=rng.uniform(0.1, 71.9))
        else:
            delay = timedelta(hours=rng.uniform(72.1, 200))  # outside the window
        self.paid_order(customer, ms(touched_at + delay))


def generate(seed: int, customers: int = 600) -> History:
    """A history of `customers` customers over DAYS days from START, the same for a seed."""
    builder = _Builder(seed)
    for n in range(customers):
        builder.customer(f"c{n:05d}")
    return builder.history
