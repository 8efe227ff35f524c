"""Synthetic storefront traffic that looks like a real shop's, for `ecrm demo` and benchmarks.

Pure and reproducible from a seed; sending the messages is the caller's job. What makes it
realistic is what makes a CRM's job hard: a few heavy buyers and many occasional ones
(Pareto activity, lognormal baskets), sessions of views that sometimes reach the cart and
sometimes end in a paid order (so carts get abandoned), favourites, refunds (full and
partial) days after their order, a producer that sometimes sends an event twice with the
same `event_id`, and the odd broken message that must go to the dead-letter topic.

Messages come out in event-time order per customer; overall they are ordered up to each
customer's producer lag (at most `MAX_LAG`), as they would be from many producers.

With a `CouponResponse` the shoppers also answer the abandoned-cart coupon, by a stated model
(`ecrm demo` prints it): a shopper who leaves a cart comes back for it within the coupon's
validity with probability `base`, or `base + lift` when the coupon reached them. Who it
reached is known without watching the worker: the rule's holdout is a deterministic hash of
rule and customer (agents/rules/contact_policy.py `holdout`), and the rule's wait and
cooldown are replayed here. Its draws come from a random stream of their own, so the same
seed gives the same shop with or without the effect (`lift=0`: the honest null).

    for event in synthetic_traffic(2000, 20_000, start=datetime.now(UTC), span=timedelta(days=7)):
        producer.send(f"ecrm.{event.topic}", key=event.key.encode(), value=event.payload())
"""

from __future__ import annotations

import copy
import heapq
import itertools
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson

from ecrm.dev.response import Answers, CouponResponse

SHOP_TZ = timezone(timedelta(hours=8))
MAX_LAG = timedelta(seconds=2)
REFUND_RATE = 0.03
RETRY_RATE = 0.01
MALFORMED_RATE = 0.005
CENT = Decimal("0.01")

#: category -> price range in CNY; prices inside are log-uniform
CATEGORIES: dict[str, tuple[int, int]] = {
    "apparel": (49, 599),
    "beauty": (39, 899),
    "snacks": (9, 129),
    "tea": (29, 1299),
    "electronics": (99, 4999),
    "home": (19, 699),
    "baby": (29, 399),
    "sports": (39, 999),
}
PAGES = ("/", "/search?q=新品", "/promo/618", "/promo/double11", "/member", "/live")
PLATFORMS = ("app", "miniprogram", "web", "h5")
#: share of sessions starting in each hour of the day, shop time (quiet at night, busy evenings)
HOURLY = (3, 2, 1, 1, 1, 1, 2, 4, 6, 7, 8, 8, 9, 8, 7, 7, 7, 8, 9, 11, 13, 14, 12, 7)


@dataclass(frozen=True)
class StoreEvent:
    """One message a storefront sends; `payload()` is the exact bytes for Kafka."""

    topic: str  # contract topic without prefix: "orders" | "cart" | "favorites" | "browse"
    key: str  # the customer_id, the message key
    value: dict[str, Any]  # JSON-ready, in the contract's format ({} when `raw` is set)
    raw: bytes | None = None  # bytes to send instead of `value`: a message that is not JSON
    defect: str | None = None  # why this message should land in the dead-letter topic
    retry: bool = False  # a producer's second send of the previous event of this customer
    comeback: bool = False  # an abandoned cart bought after all, by the CouponResponse model

    def payload(self) -> bytes:
        return self.raw if self.raw is not None else orjson.dumps(self.value)


@dataclass(frozen=True)
class _Sku:
    sku: str
    category: str
    price: Decimal


@dataclass(frozen=True)
class _Customer:
    customer_id: str
    lag_ms: int  # this customer's producer is this far behind event time
    cart_rate: float  # chance a viewed product goes into the cart
    buy_rate: float  # chance a session with a cart ends in a paid order
    basket: float  # how many of a thing they buy (lognormal; heavy buyers buy more)


def synthetic_traffic(
    customers: int,
    sessions: int,
    *,
    seed: int = 7,
    start: datetime,
    span: timedelta,
    sku_count: int = 500,
    response: CouponResponse | None = None,
) -> Iterator[StoreEvent]:
    """`sessions` shopping sessions of `customers` customers within [start, start + span];
    with `response`, shoppers also answer the abandoned-cart coupon by that model."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if customers < 1 or sessions < 0 or sku_count < 1 or span <= timedelta(0):
        raise ValueError("need customers >= 1, sessions >= 0, sku_count >= 1 and a positive span")
    rng = random.Random(seed)  # noqa: S311 - reproducible make-believe, not a secret
    shop = _Shop(rng, customers, sku_count)
    if response is not None:
        shop.answers = Answers(response, random.Random(seed * 7919 + 1))  # noqa: S311
    return shop.traffic(sessions, start, span)


class _Shop:
    """The catalogue, the customer base and the one random stream everything draws from."""

    def __init__(self, rng: random.Random, customers: int, sku_count: int) -> None:
        self.rng = rng
        names = list(CATEGORIES)
        self.skus = [self._sku(i, names[i % len(names)]) for i in range(sku_count)]
        # a few products sell most (Zipf), the tail rarely
        self.sku_weights = list(itertools.accumulate(1 / (r + 1) ** 1.07 for r in range(sku_count)))
        self.customers = [self._customer(i) for i in range(customers)]
        # activity is Pareto (the 80/20 of shops): a few customers have most of the sessions
        self.activity = list(
            itertools.accumulate(min(rng.paretovariate(1.3), 100.0) for _ in self.customers)
        )
        self.seq = itertools.count()
        self.platform: str | None = None  # the session's app, sent as an extra field
        self.answers: Answers | None = None  # the coupon response model, when there is one

    def _sku(self, i: int, category: str) -> _Sku:
        low, high = CATEGORIES[category]
        price = math.exp(self.rng.uniform(math.log(low), math.log(high)))
        cents = self.rng.choice(("0.90", "0.00", "0.99", "0.80"))
        return _Sku(f"SKU{i:05d}", category, Decimal(int(price)) + Decimal(cents))

    def _customer(self, i: int) -> _Customer:
        rng = self.rng
        return _Customer(
            customer_id=f"cust-{i:06d}",
            lag_ms=rng.randrange(int(MAX_LAG / timedelta(milliseconds=1)) + 1),
            cart_rate=rng.uniform(0.08, 0.35),
            buy_rate=rng.uniform(0.2, 0.75),
            basket=rng.lognormvariate(0, 0.6),
        )

    def traffic(self, sessions: int, start: datetime, span: timedelta) -> Iterator[StoreEvent]:
        start_ms = _ms(start)
        end_ms = start_ms + span // timedelta(milliseconds=1)
        starts = sorted(self._session_start(start_ms, end_ms) for _ in range(sessions))
        who = self.rng.choices(self.customers, cum_weights=self.activity, k=sessions)
        pending: list[tuple[int, int, _Customer, str, dict[str, Any]]] = []
        for at, customer in zip(starts, who, strict=True):
            while pending and pending[0][0] < at:  # nothing later can come before `at`
                yield from self._deliver(heapq.heappop(pending))
            for ts, topic, value in self._session(customer, at):
                if ts <= end_ms:
                    entry = (ts + customer.lag_ms, next(self.seq), customer, topic, value)
                    heapq.heappush(pending, entry)
        while pending:
            yield from self._deliver(heapq.heappop(pending))

    def _session_start(self, start_ms: int, end_ms: int) -> int:
        busiest = max(HOURLY)
        while True:
            at = self.rng.randrange(start_ms, max(end_ms, start_ms + 1))
            hour = (at // 3_600_000 + 8) % 24  # in the shop's zone, UTC+8
            if self.rng.random() * busiest < HOURLY[hour]:
                return at

    def _session(self, c: _Customer, at: int) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """One visit: views, maybe cart adds and favourites, maybe an order and its refund."""
        rng = self.rng
        self.platform = rng.choice(PLATFORMS) if rng.random() < 0.5 else None
        if rng.random() < 0.4:
            yield at, "browse", self._event(c, at, url=rng.choice(PAGES))
        cart: dict[str, tuple[_Sku, int]] = {}
        viewed: list[_Sku] = []
        last_cart_at = at
        for _ in range(min(1 + int(rng.expovariate(0.3)), 15)):
            at += rng.randrange(5_000, 90_000)
            item = rng.choices(self.skus, cum_weights=self.sku_weights)[0]
            viewed.append(item)
            for _ in range(1 + (rng.random() < 0.2) + (rng.random() < 0.05)):
                yield at, "browse", self._event(c, at, sku=item.sku, category=item.category)
                at += rng.randrange(3_000, 60_000)
            if rng.random() < 0.04:
                yield at, "favorites", self._event(c, at, sku=item.sku)
            if rng.random() < c.cart_rate:
                at += rng.randrange(1_000, 20_000)
                qty = max(1, round(c.basket * rng.uniform(0.5, 1.5)))
                cart[item.sku] = (item, cart.get(item.sku, (item, 0))[1] + qty)
                last_cart_at = at
                yield (
                    at,
                    "cart",
                    self._event(c, at, sku=item.sku, qty=qty, price=self._money(item.price)),
                )
        bought = [line for line in cart.values() if rng.random() < 0.9]
        if not (cart and bought and rng.random() < c.buy_rate):
            bought = [(viewed[-1], 1)] if rng.random() < 0.04 else []  # "buy now", no cart
        if bought:
            at += rng.randrange(20_000, 600_000)
            yield from self._order(c, at, bought)
        elif cart and self.answers is not None:
            yield from self._comeback(c, last_cart_at, list(cart.values()))

    def _comeback(
        self, c: _Customer, last_cart_at: int, lines: list[tuple[_Sku, int]]
    ) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """The abandoned cart bought after all, by the response model (its own random draws)."""
        assert self.answers is not None
        answers, model = self.answers, self.answers.model
        at = answers.comeback(c.customer_id, last_cart_at)
        if at is None:
            return
        amount = sum((item.price * qty for item, qty in lines), Decimal("0"))
        if model.coupon_reaches(c.customer_id) and amount >= max(model.threshold, model.value):
            amount -= model.value  # the coupon, redeemed
        rng = answers.rng
        fields: dict[str, Any] = {
            "order_id": str(rng.randrange(10**17, 10**18)),
            "status": "paid",
            "amount": str(amount.quantize(CENT)),
            "items": [
                {"sku": i.sku, "qty": q, "price": str(i.price), "category": i.category}
                for i, q in lines
            ],
        }
        ts = datetime.fromtimestamp(at / 1000, SHOP_TZ).isoformat(timespec="milliseconds")
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        answers.sent.add(event_id)
        yield at, "orders", {"event_id": event_id, "customer_id": c.customer_id, "ts": ts, **fields}

    def _order(
        self, c: _Customer, at: int, lines: list[tuple[_Sku, int]]
    ) -> Iterator[tuple[int, str, dict[str, Any]]]:
        rng = self.rng
        amount = sum((item.price * qty for item, qty in lines), Decimal("0"))
        if amount >= 300 and rng.random() < 0.3:
            amount -= 20  # 满300减20: the shop's threshold discount
        order_id = str(rng.randrange(10**17, 10**18))
        fields: dict[str, Any] = {"order_id": order_id, "status": "paid"}
        fields["amount"] = self._money(amount)
        if rng.random() < 0.5:
            fields["currency"] = "CNY"
        if rng.random() < 0.92:
            fields["items"] = [
                {"sku": i.sku, "qty": q, "price": self._money(i.price), "category": i.category}
                for i, q in lines
            ]
        yield at, "orders", self._event(c, at, **fields)
        if rng.random() < REFUND_RATE:
            later = at + rng.randrange(3_600_000, 14 * 86_400_000)
            if rng.random() < 0.6:
                refunded = amount
            elif len(lines) > 1:
                refunded = min(lines[0][0].price * lines[0][1], amount)
            else:
                refunded = max((amount * Decimal(rng.uniform(0.2, 0.6))).quantize(CENT), CENT)
            yield (
                later,
                "orders",
                self._event(
                    c,
                    later,
                    order_id=order_id,
                    status="refunded",
                    amount=self._money(refunded),
                    reason=rng.choice(("七天无理由", "质量问题", "发错货")),
                ),
            )

    def _event(self, c: _Customer, at: int, **fields: Any) -> dict[str, Any]:
        rng = self.rng
        ts: str | int = at
        if rng.random() < 0.6:
            ts = datetime.fromtimestamp(at / 1000, SHOP_TZ).isoformat(timespec="milliseconds")
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        event = {"event_id": event_id, "customer_id": c.customer_id, "ts": ts, **fields}
        if self.platform is not None:
            event["platform"] = self.platform
        return event

    def _money(self, amount: Decimal) -> str | float:
        """Storefronts send money as a decimal string or as a JSON number."""
        text = str(amount.quantize(CENT))
        return text if self.rng.random() < 0.7 else float(text)

    def _deliver(
        self, entry: tuple[int, int, _Customer, str, dict[str, Any]]
    ) -> Iterator[StoreEvent]:
        _, _, customer, topic, value = entry
        key = customer.customer_id
        if self.answers is not None and value["event_id"] in self.answers.sent:
            yield StoreEvent(topic, key, value, comeback=True)  # no draw: the same shop either way
            return
        if self.rng.random() < MALFORMED_RATE:
            yield self._break(StoreEvent(topic, key, value))
            return
        yield StoreEvent(topic, key, value)
        if self.rng.random() < RETRY_RATE:
            yield StoreEvent(topic, key, copy.deepcopy(value), retry=True)

    def _break(self, event: StoreEvent) -> StoreEvent:
        """The same message as a buggy producer would have sent it."""
        rng, value = self.rng, copy.deepcopy(event.value)
        defect = rng.choice(("missing field", "bad ts", "negative qty", "not JSON"))
        if defect == "negative qty" and event.topic == "cart":
            value["qty"] = -rng.randrange(1, 3)
        elif defect == "negative qty" and value.get("items"):
            value["items"][0]["qty"] = -1
        elif defect == "bad ts":
            local = datetime.fromtimestamp(_ms_of(value["ts"]) / 1000, SHOP_TZ)
            value["ts"] = rng.choice(
                (local.replace(tzinfo=None).isoformat(sep=" "), "yesterday", 10**18)
            )
        elif defect == "not JSON":
            whole = orjson.dumps(value)
            raw = rng.choice((whole[: len(whole) // 2], b"\xff\xfe" + whole, b"null,"))
            return StoreEvent(event.topic, event.key, {}, raw=raw, defect=defect)
        else:
            defect = "missing field"
            named = ("event_id", "customer_id", "ts", "sku", "order_id", "amount", "qty")
            required = [f for f in named if f in value]
            del value[rng.choice(required)]
        return StoreEvent(event.topic, event.key, value, defect=defect)


def _ms(moment: datetime) -> int:
    return (moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _ms_of(ts: str | int) -> int:
    return ts if isinstance(ts, int) else _ms(datetime.fromisoformat(ts))


__all__ = ["MAX_LAG", "CouponResponse", "StoreEvent", "synthetic_traffic"]
