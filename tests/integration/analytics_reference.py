"""The analysts' numbers computed again in plain Python from the inserted rows, written from
the definitions in docs/clickhouse.md and not from the SQL, so the two can be compared."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from tests.integration.analytics_history import History

Z95 = 1.959963984540054


def unique_events(history: History) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for row in history.events:
        seen.setdefault(row["event_id"], row)
    return list(seen.values())


def paid_orders(history: History) -> list[dict[str, Any]]:
    return [e for e in unique_events(history) if e["kind"] == "order" and e["status"] == "paid"]


def touches(history: History) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for row in history.rule_decisions:
        if row["outcome"] in ("fired", "held_out"):
            seen.setdefault((row["action_id"], row["outcome"]), row)
    return list(seen.values())


def attribution(history: History, window: timedelta) -> dict[str, dict[str, Any]]:
    """event_id of each attributed paid order -> the touch (decision row) it is credited to."""
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for touch in touches(history):
        by_customer[touch["customer_id"]].append(touch)
    credited = {}
    for order in paid_orders(history):
        candidates = [
            t
            for t in by_customer[order["customer_id"]]
            if t["decided_at"] < order["ts"] <= t["decided_at"] + window
        ]
        if candidates:
            credited[order["event_id"]] = max(
                candidates, key=lambda t: (t["decided_at"], t["priority"], t["action_id"])
            )
    return credited


@dataclass
class RulePerformance:
    """One rule's row, as the rule_performance query should return it."""

    decided: int
    held_out: int
    suppressed: int
    sent: int
    delivery_sent: int
    delivered: int
    clicked: int
    delivery_failed: int
    converted: int
    treated_customers: int
    treated_converted: int
    held_out_customers: int
    held_out_converted: int
    treated_rate: float | None
    held_out_rate: float | None
    uplift: float | None
    uplift_ci_low: float | None
    uplift_ci_high: float | None
    treated_gmv: Decimal
    held_out_gmv: Decimal
    incremental_gmv: float | None
    coupon_cost: Decimal  # every sent coupon's value (042_rule_performance.sql)
    coupon_value_converted: Decimal  # those followed by an attributed order


def rule_performance(
    history: History, since: datetime, until: datetime, window: timedelta
) -> dict[str, RulePerformance]:
    credited = attribution(history, window)
    orders = {o["event_id"]: o for o in paid_orders(history)}
    action_orders: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event_id, touch in credited.items():
        action_orders[touch["action_id"]].append(orders[event_id])

    decided: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for row in history.rule_decisions:
        if since <= row["decided_at"] < until:
            decided[row["rule_id"]]["all"].add(row["action_id"])
            decided[row["rule_id"]][row["outcome"]].add(row["action_id"])

    in_period = [t for t in touches(history) if since <= t["decided_at"] < until]
    # per (rule, customer): the latest touch's outcome, conversions and GMV of all touches
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    customer_orders: dict[tuple[str, str], int] = defaultdict(int)
    customer_gmv: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for t in in_period:
        key = (t["rule_id"], t["customer_id"])
        if key not in latest or (t["decided_at"], t["action_id"]) > (
            latest[key]["decided_at"],
            latest[key]["action_id"],
        ):
            latest[key] = t
        for order in action_orders[t["action_id"]]:
            customer_orders[key] += 1
            customer_gmv[key] += order["amount"]

    result = {}
    for rule_id, sets in decided.items():
        reached: dict[str, set[str]] = defaultdict(set)
        for d in history.deliveries:
            if d["action_id"] in sets["fired"]:
                reached["failed" if d["status"] == "bounced" else d["status"]].add(d["action_id"])
        steps = {status: len(ids) for status, ids in reached.items()}
        steps = defaultdict(int, steps)
        fired = [t for t in in_period if t["rule_id"] == rule_id and t["outcome"] == "fired"]
        converted = [t for t in fired if action_orders[t["action_id"]]]
        groups: dict[bool, list[tuple[str, str]]] = {True: [], False: []}
        for key, t in latest.items():
            if key[0] == rule_id:
                groups[t["outcome"] == "fired"].append(key)
        n_t, n_c = len(groups[True]), len(groups[False])
        conv_t = sum(1 for k in groups[True] if customer_orders[k] > 0)
        conv_c = sum(1 for k in groups[False] if customer_orders[k] > 0)
        gmv_t = sum((customer_gmv[k] for k in groups[True]), Decimal(0))
        gmv_c = sum((customer_gmv[k] for k in groups[False]), Decimal(0))
        p_t = conv_t / n_t if n_t else None
        p_c = conv_c / n_c if n_c else None
        uplift = low = high = incremental = None
        if p_t is not None and p_c is not None:
            uplift = p_t - p_c
            margin = Z95 * math.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
            low, high = uplift - margin, uplift + margin
            incremental = (float(gmv_t) / n_t - float(gmv_c) / n_c) * n_t
        result[rule_id] = RulePerformance(
            decided=len(sets["all"]),
            held_out=len(sets["held_out"]),
            suppressed=len(sets["suppressed"]),
            sent=len(sets["fired"]),
            delivery_sent=steps["sent"],
            delivered=steps["delivered"],
            clicked=steps["clicked"],
            delivery_failed=steps["failed"],
            converted=len(converted),
            treated_customers=n_t,
            treated_converted=conv_t,
            held_out_customers=n_c,
            held_out_converted=conv_c,
            treated_rate=p_t,
            held_out_rate=p_c,
            uplift=uplift,
            uplift_ci_low=low,
            uplift_ci_high=high,
            treated_gmv=gmv_t,
            held_out_gmv=gmv_c,
            incremental_gmv=incremental,
            coupon_cost=sum((t["coupon_value"] or Decimal(0) for t in fired), Decimal(0)),
            coupon_value_converted=sum(
                (t["coupon_value"] or Decimal(0) for t in converted), Decimal(0)
            ),
        )
    return result


def segment_at(history: History, customer: str, moment: datetime) -> str:
    changes = [
        c for c in history.segment_changes if c["customer_id"] == customer and c["at"] <= moment
    ]
    return max(changes, key=lambda c: c["at"])["to_segment"] if changes else "prospect"


def segment_migration(history: History, a: datetime, b: datetime) -> dict[tuple[str, str], int]:
    customers = {c["customer_id"] for c in history.segment_changes if c["at"] <= max(a, b)}
    cells: dict[tuple[str, str], int] = defaultdict(int)
    for customer in customers:
        cells[(segment_at(history, customer, a), segment_at(history, customer, b))] += 1
    return dict(cells)


def current_segment(history: History, customer: str) -> str:
    changes = [c for c in history.segment_changes if c["customer_id"] == customer]
    return max(changes, key=lambda c: c["at"])["to_segment"] if changes else "prospect"


def repurchase_intervals(
    history: History, since: datetime, until: datetime
) -> dict[str, list[float]]:
    """Segment (and 'all') -> days between each paid order in the period and the one before."""
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for order in paid_orders(history):
        by_customer[order["customer_id"]].append(order)
    days: dict[str, list[float]] = defaultdict(list)
    for customer, orders in by_customer.items():
        orders.sort(key=lambda o: (o["ts"], o["event_id"]))
        for previous, order in zip(orders, orders[1:], strict=False):
            if since <= order["ts"] < until:
                gap = (order["ts"] - previous["ts"]) / timedelta(days=1)
                days[current_segment(history, customer)].append(gap)
                days["all"].append(gap)
    return dict(days)


def month_of(moment: datetime) -> date:
    return date(moment.year, moment.month, 1)


def months_between(a: date, b: date) -> int:
    return (b.year - a.year) * 12 + b.month - a.month


def cohort_retention(history: History, since: date, until: date) -> dict[tuple[date, int], Any]:
    """(cohort, months_after) -> (cohort_size, customers ordering again)."""
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for order in paid_orders(history):
        by_customer[order["customer_id"]].append(order)
    horizon = max(month_of(o["ts"]) for orders in by_customer.values() for o in orders)
    cohorts: dict[date, list[list[dict[str, Any]]]] = defaultdict(list)
    for orders in by_customer.values():
        orders.sort(key=lambda o: (o["ts"], o["event_id"]))
        cohort = month_of(orders[0]["ts"])
        if month_of(since) <= cohort < until:
            cohorts[cohort].append(orders)
    table = {}
    for cohort, members in cohorts.items():
        for k in range(months_between(cohort, horizon) + 1):
            again = sum(
                1
                for orders in members
                if any(months_between(cohort, month_of(o["ts"])) == k for o in orders[1:])
            )
            table[(cohort, k)] = (len(members), again)
    return table


def abandoned_products(
    history: History, since: datetime, until: datetime, window: timedelta
) -> dict[str, tuple[int, int, int, Decimal]]:
    """sku -> (cart_adds, abandoned, customers abandoning, abandoned value)."""
    orders = paid_orders(history)
    carts = [e for e in unique_events(history) if e["kind"] == "cart" and since <= e["ts"] < until]
    adds: dict[str, int] = defaultdict(int)
    abandoned: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for cart in carts:
        adds[cart["sku"]] += 1
        bought = any(
            o["customer_id"] == cart["customer_id"]
            and cart["ts"] <= o["ts"] <= cart["ts"] + window
            and (
                not orjson.loads(o["items"])
                or cart["sku"] in {i["sku"] for i in orjson.loads(o["items"])}
            )
            for o in orders
        )
        if not bought:
            abandoned[cart["sku"]].append(cart)
    return {
        sku: (
            adds[sku],
            len(rows),
            len({r["customer_id"] for r in rows}),
            sum((r["qty"] * r["price"] for r in rows), Decimal(0)),
        )
        for sku, rows in abandoned.items()
    }
