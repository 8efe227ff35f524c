"""Same input, same decisions: the keeper's order of decision (agents/profile/event_time.py)
depends only on the records — not on how the batches fell, when the fetches came, where the
worker restarted or which units Redis lost and the worker replayed — and the backtest
(agents/backtest/replay.py) decides in that same order.

`Worker` below is the keeper without I/O: the event-time clock, the customer step per
customer of a released batch, the sweep of due customers up to the partition's clock, and a
"Redis" (profiles, rule states, due set, budgets, watermarks and the clock) committed one
unit at a time, which a restart resumes from and a lost unit rolls back.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.backtest.replay import Replay
from agents.customer_step import Customer, StepContext, advance, on_event
from agents.profile.event_time import EventClock, decision_order
from agents.profile.fold import RfmPolicy
from agents.rules.contact_policy import BudgetBook
from agents.rules.state import CustomerRuleState, Decision
from schemas.events import BrowseEvent, Event
from schemas.profile import empty_profile
from tests.unit.agents.rules.rule_driver import (
    ABANDONED_CART,
    BROWSED,
    DAY,
    MIN,
    NOON,
    WELCOME,
    cart,
    paid,
    ruleset,
)

RULES = ruleset(ABANDONED_CART, BROWSED, WELCOME)
TOPICS = ("orders", "cart", "browse")
END = NOON + 300 * DAY  # the wall clock: every topic is read to its end before it


@dataclass
class Record:
    """One message of an input topic-partition, as the consumer reads it."""

    topic: str
    partition: int
    offset: int
    event: Event
    mark: datetime | None = None

    @property
    def at(self) -> datetime | None:
        return self.event.ts


Decided = tuple[str, str, str, str, str]  # rule, customer, action id, outcome, decided at


def decided(ds: list[Decision]) -> list[Decided]:
    return [
        (d.rule_id, d.customer_id, d.action_id, d.outcome, d.decided_at.isoformat()) for d in ds
    ]


@dataclass
class Redis:
    """What a unit commits: a restart reads it back, a lost unit is missing from it."""

    profiles: dict[str, Customer] = field(default_factory=dict)
    due: dict[str, datetime] = field(default_factory=dict)
    budget: BudgetBook = field(default_factory=BudgetBook)
    watermarks: dict[str, int] = field(default_factory=dict)
    clock: datetime | None = None
    decisions: list[Decision] = field(default_factory=list)


@dataclass
class Worker:
    """The keeper's loop over one partition, without I/O."""

    topics: dict[str, list[Event]]
    redis: Redis = field(default_factory=Redis)
    #: every decision a unit made, committed or later lost (its actions were relayed)
    sent: list[Decision] = field(default_factory=list)
    units: int = 0

    def start(self) -> None:
        """A (re)start: reading resumes at Redis's watermarks + 1, with Redis's clock."""
        ends = {t: len(v) for t, v in self.topics.items()}
        self.clock = EventClock(TOPICS, lambda topic, p: ends[topic])
        self.position = {t: self.redis.watermarks.get(t, -1) + 1 for t in TOPICS}
        for topic, position in self.position.items():
            self.clock.start_at(topic, 0, position)
        self.clock.resume(0, self.redis.clock)

    def fetch(self, topic: str, n: int, sweep: bool = True) -> None:
        """The consumer reads up to n messages of a topic; the clock releases what it may,
        which is one unit, then the sweep (a timer of its own in the worker) is another."""
        at = self.position[topic]
        got = self.topics[topic][at : at + n]
        self.position[topic] = at + len(got)
        self.clock.read([Record(topic, 0, at + i, e) for i, e in enumerate(got)], END)
        released = self.clock.release(0, END)
        if released:
            self.unit(released)
        if sweep:
            self.sweep()

    def unit(self, items: list[Record]) -> None:
        redis = copy.deepcopy(self.redis)  # committed whole, or not at all
        ctx = StepContext(RfmPolicy(), RULES, redis.budget)
        by_customer: dict[str, list[Record]] = {}
        for item in items:
            by_customer.setdefault(item.event.customer_id, []).append(item)
        for cid, mine in by_customer.items():
            customer = redis.profiles.get(cid) or Customer(
                empty_profile(cid), CustomerRuleState(customer_id=cid)
            )
            step = on_event(
                customer, [i.event for i in mine], ctx, wall=END, marks=[i.mark for i in mine]
            )
            self.took(redis, cid, step)
        for item in items:
            redis.watermarks[item.topic] = item.offset
        marks = [i.mark for i in items if i.mark is not None]
        if marks:
            redis.clock = max(marks)
        self.commit(redis)

    def sweep(self) -> None:
        now, live = self.clock.clock(0, END)
        if now is None:
            return
        due = sorted((w, c) for c, w in self.redis.due.items() if w < now or (live and w == now))
        if not due:
            return
        redis = copy.deepcopy(self.redis)
        ctx = StepContext(RfmPolicy(), RULES, redis.budget)
        for _, cid in due:
            self.took(redis, cid, advance(redis.profiles[cid], now, ctx, inclusive=live))
        self.commit(redis)

    def took(self, redis: Redis, cid: str, step) -> None:  # noqa: ANN001 - a Step
        redis.profiles[cid] = step.customer
        redis.decisions += step.decisions
        self.sent += step.decisions
        if step.wake is None:
            redis.due.pop(cid, None)
        else:
            redis.due[cid] = step.wake

    def commit(self, redis: Redis) -> None:
        self.redis = redis
        self.units += 1


def topics_of(events: list[tuple[str, Event]]) -> dict[str, list[Event]]:
    topics: dict[str, list[Event]] = {t: [] for t in TOPICS}
    for topic, event in events:
        topics[topic].append(event)
    return topics


def straight(topics: dict[str, list[Event]]) -> Worker:
    """Everything in one fetch per topic, then the clock runs to the end."""
    worker = Worker(topics)
    worker.start()
    for topic in TOPICS:
        worker.fetch(topic, 10_000)
    return worker


def backtest(topics: dict[str, list[Event]]) -> list[Decided]:
    replay = Replay(RULES, RfmPolicy())
    runs = [topics[t] for t in TOPICS]
    replay.feed_decided(decision_order(runs, lambda e: e.ts))
    replay.advance(END)
    return decided(replay.decisions)


def test_a_late_first_order_never_takes_the_welcome_from_the_one_decided_before_it() -> None:
    """The issue's customer: a paid order dated 2024-10-25 at a lower offset of the orders
    topic, one dated 2024-06-02 at a higher one. Read in one fetch or in two, the first
    order decided — the lower offset — is the one welcomed, under the same action id."""
    october, june = NOON + 177 * DAY, NOON + 32 * DAY
    topics = topics_of([("orders", paid("oct", october)), ("orders", paid("jun", june))])
    runs = []
    for n in (1, 2):
        worker = Worker(topics)
        worker.start()
        worker.fetch("orders", n)
        worker.fetch("orders", n)
        runs.append(decided(worker.redis.decisions))
    welcomes = [[d for d in run if d[0] == "welcome"] for run in runs]
    assert welcomes[0] == welcomes[1]
    assert len(welcomes[0]) == 1
    assert welcomes[0] == [d for d in backtest(topics) if d[0] == "welcome"]


def test_a_late_order_does_not_cancel_a_wait_that_fell_due_before_its_turn() -> None:
    """A cart at noon waits 30 minutes for an order. The orders topic holds a 13:00 order
    of someone else, then the customer's 12:10 order (late in its topic). The 13:00 order
    moved the clock past the deadline, so the coupon went out before the late order's turn:
    however the records are fetched."""
    topics = topics_of(
        [
            ("cart", cart("c", NOON)),
            ("orders", paid("other", NOON + 60 * MIN, customer="c2")),
            ("orders", paid("late", NOON + 10 * MIN)),
        ]
    )
    outcomes = set()
    for n in (1, 2, 3):
        worker = Worker(topics)
        worker.start()
        for _ in range(3):
            worker.fetch("orders", n)
            worker.fetch("cart", n)
        run = decided(worker.redis.decisions)
        outcomes.add(tuple(sorted(run)))
        coupons = [d for d in run if d[0] == "abandoned-cart"]
        assert [d[3] for d in coupons] == ["fired"]
    assert len(outcomes) == 1
    assert sorted(backtest(topics)) == sorted(next(iter(outcomes)))


def test_a_restart_resumes_the_clock_so_a_late_order_after_it_decides_as_without_it() -> None:
    """The cart and someone's 13:00 order are decided in one unit, then the worker dies
    before its sweep stepped the cart's wait. The late 12:10 order read after the restart
    comes after the 13:00 one: its turn is at 13:00, past the deadline (Redis keeps the
    clock with the watermarks), as in a run that never stopped."""
    topics = topics_of(
        [
            ("cart", cart("c", NOON)),
            ("orders", paid("other", NOON + 60 * MIN, customer="c2")),
            ("orders", paid("late", NOON + 10 * MIN)),
        ]
    )
    worker = Worker(topics)
    worker.start()
    worker.fetch("orders", 1, sweep=False)
    worker.fetch("browse", 1, sweep=False)
    worker.fetch("cart", 1, sweep=False)  # the cart and the 13:00 order: one unit
    assert worker.redis.watermarks == {"cart": 0, "orders": 0}
    worker.start()  # killed before the sweep
    worker.fetch("orders", 1)
    assert sorted(decided(worker.redis.decisions)) == sorted(
        decided(straight(topics).redis.decisions)
    )
    assert [d.outcome for d in worker.redis.decisions if d.rule_id == "abandoned-cart"] == ["fired"]


# -- the property: any batching, restarts, lost units ----------------------------------------


def view(event_id: str, at: datetime, sku: str, customer: str) -> BrowseEvent:
    return BrowseEvent(event_id=event_id, customer_id=customer, ts=at, sku=sku)


KINDS = {"orders": paid, "cart": cart, "browse": view}

RECORDS = st.lists(
    st.tuples(
        st.sampled_from(TOPICS),
        st.integers(0, 240),  # minutes after noon: any order within a topic
        st.sampled_from(["c1", "c2", "c3"]),
        st.sampled_from(["s1", "s2"]),
    ),
    max_size=24,
)

#: what the worker does next: fetch n of a topic, sweep, restart, or lose the last k fetches
MOVES = st.lists(
    st.one_of(
        st.tuples(st.just("fetch"), st.sampled_from(TOPICS), st.integers(1, 5)),
        st.tuples(st.just("sweep"), st.just(""), st.just(0)),
        st.tuples(st.just("restart"), st.just(""), st.just(0)),
        st.tuples(st.just("lose"), st.just(""), st.integers(1, 4)),
    ),
    max_size=40,
)


def events_of(records: list[tuple[str, int, str, str]]) -> dict[str, list[Event]]:
    out = []
    for n, (topic, minute, cid, sku) in enumerate(records):
        at = NOON + minute * MIN
        make = KINDS[topic]
        event = (
            paid(f"e{n}", at, skus=[sku], customer=cid)
            if topic == "orders"
            else make(f"e{n}", at, sku, customer=cid)
        )
        out.append((topic, event))
    return topics_of(out)


def messy(topics: dict[str, list[Event]], moves: list[tuple[str, str, int]]) -> Worker:
    """The same topics through fetches of any size in any order, restarts at any unit, and
    units Redis lost (rolled back behind the watermark: the worker stops, restarts from
    Redis's watermark + 1 and decides them again), sweeps whenever; then read to the end."""
    worker = Worker(topics)
    worker.start()
    history: list[Redis] = [worker.redis]
    for what, topic, n in moves:
        if what == "fetch":
            worker.fetch(topic, n, sweep=False)
            history.append(worker.redis)
        elif what == "sweep":
            worker.sweep()
            history.append(worker.redis)
        elif what == "restart":
            worker.start()
        else:
            worker.redis = history[max(0, len(history) - 1 - n)]  # a failover lost them
            del history[len(history) - n :]
            history = history or [worker.redis]
            worker.start()
    for topic in TOPICS:
        worker.fetch(topic, 10_000)
    return worker


@settings(max_examples=300, deadline=None)
@given(RECORDS, MOVES)
def test_any_batching_restart_or_replay_decides_as_one_straight_run_and_the_backtest(
    records: list[tuple[str, int, str, str]], moves: list[tuple[str, str, int]]
) -> None:
    topics = events_of(records)
    one = straight(topics)
    expected = sorted(decided(one.redis.decisions))
    assert sorted(backtest(topics)) == expected
    other = messy(topics, moves)
    assert sorted(decided(other.redis.decisions)) == expected
    # what lost units relayed went out under the ids the replay decides again
    assert set(decided(other.sent)) <= set(expected)
