"""The golden replay: one fixed, generated shop history through the customer step, and a
digest of everything that comes out of it, so that a change meant only to make the hot path
faster can prove it changed nothing a user sees.

    outcome = golden_run(with_rules=True)        # categories -> lines of canonical JSON
    digests(outcome)                             # category -> sha256 of its lines

The history is `synthetic_traffic` with a fixed seed (views, carts, orders, refunds, retries,
broken messages), plus a few member updates, points and tag requests and campaign sends, so
that every kind of event the worker folds is in it. Every message goes through the worker's
own decoder (`agents.profile.keeper.decode`); every valid event through the step the worker
and the backtest share (`agents.customer_step`), customer by customer, with the clock
stepping every customer at the instant time matters to them (as the worker's sweep does).
Between two steps a customer's state lives only in its stored form (the profile as
`schemas.profile.stored` writes it, the rule and member states as their JSON), so the way the
worker reads state back from Redis is in the path too.

What is compared (tests/unit/ecrm/dev/test_golden_replay.py, tests/fixtures/golden_replay.json):
the final profiles, rule states and member states; every decision (its ClickHouse row) and
every action sent (its `ecrm.actions` message, so its action id); the member movements
(their `ecrm.member-changes` messages and ClickHouse rows); the ClickHouse rows of events,
segment changes and profile snapshots; and the reasons messages were refused.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from agents.backtest.replay import WakeQueue
from agents.customer_step import Customer, Step, StepContext, on_clock, on_event
from agents.membership.rows import rows_by_table
from agents.membership.state import MemberState, member_from_json, member_json, member_kept
from agents.profile.fold import RfmPolicy
from agents.profile.keeper import decode
from agents.profile.rows import event_row, profile_row, segment_change_row
from agents.rules.contact_policy import BudgetBook
from agents.rules.shell import decision_row
from agents.rules.state import CustomerRuleState, state_from_json, state_json
from ecrm.dev.traffic import StoreEvent, synthetic_traffic
from schemas.events import Event
from schemas.membership import Programme, load_programme
from schemas.profile import Profile, empty_profile, from_stored, stored
from schemas.rules import RuleSet, load_rules

REPO = Path(__file__).resolve().parents[2]
START = datetime(2026, 3, 2, tzinfo=UTC)
SPAN = timedelta(days=45)
#: the clock runs on past the last event, so R ageing, waits and lapsing points happen
TAIL = timedelta(days=60)
CUSTOMERS = 150
SESSIONS = 600
SEED = 20
#: a fixed wall clock for the rows that carry one (ingested_at, written_at)
WALL = datetime(2026, 9, 1, tzinfo=UTC)


def history(
    customers: int = CUSTOMERS, sessions: int = SESSIONS, seed: int = SEED
) -> list[StoreEvent]:
    """The shop's messages in arrival order: generated traffic, and the shop's own messages
    (member updates, points and tag requests, campaign sends) spread through it."""
    traffic = list(
        synthetic_traffic(customers, sessions, seed=seed, start=START, span=SPAN, sku_count=200)
    )
    rng = random.Random(seed + 1)  # noqa: S311 - reproducible make-believe
    out: list[StoreEvent] = []
    for n, message in enumerate(traffic):
        out.append(message)
        if n % 40 == 7 and message.raw is None and "ts" in message.value:
            out.append(_shop_message(rng, n, message))
    return out


def _shop_message(rng: random.Random, n: int, near: StoreEvent) -> StoreEvent:
    """A message of the shop's, at the time of a customer's message `near`."""
    cid, ts = near.key, near.value["ts"]
    base = {"event_id": f"shop-{n}", "customer_id": cid, "ts": ts}
    pick = n // 40 % 5
    if pick == 0:
        month, day = rng.randrange(1, 13), rng.randrange(1, 29)
        consent = {"sms": rng.random() < 0.8, "wechat": rng.random() < 0.5}
        value = {**base, "birthday": f"{month:02d}-{day:02d}", "consent": consent}
        return StoreEvent("customers", cid, value)
    if pick == 1:
        return StoreEvent(
            "points", cid, {**base, "kind": "adjust", "points": rng.randrange(50, 900)}
        )
    if pick == 2:
        return StoreEvent(
            "points", cid, {**base, "kind": "redeem", "points": rng.randrange(10, 300)}
        )
    if pick == 3:
        value = {**base, "tag": rng.choice(("wholesale", "staff")), "op": "add"}
        return StoreEvent("tags", cid, value)
    campaign = rng.choice(("spring", "618"))
    value = {**base, "event_id": f"campaign:{campaign}:{cid}", "campaign": campaign}
    return StoreEvent("campaigns", cid, value)


@dataclass
class GoldenRun:
    """Customers kept in their stored form, stepped by events and by the clock."""

    ctx: StepContext
    profiles: dict[str, bytes] = field(default_factory=dict)
    rule_states: dict[str, bytes] = field(default_factory=dict)
    members: dict[str, bytes] = field(default_factory=dict)
    lines: dict[str, list[Any]] = field(default_factory=dict)
    clock: datetime | None = None
    _wakes: WakeQueue = field(default_factory=WakeQueue)

    def out(self, category: str, value: Any) -> None:
        self.lines.setdefault(category, []).append(value)

    def feed(self, message: StoreEvent, offset: int) -> None:
        item = decode(
            message.topic, message.topic, 0, offset, message.key.encode(), message.payload()
        )
        if item.event is None:
            self.out("refused", [message.topic, offset, item.error])
            return
        event = item.event
        self._run_due(event.ts, inclusive=False)
        self.clock = event.ts if self.clock is None else max(self.clock, event.ts)
        step = on_event(self._read(event.customer_id), [event], self.ctx)
        for applied in step.applied:
            self.out(
                "event_rows",
                event_row(applied, topic=message.topic, partition=0, offset=offset, now=WALL),
            )
        self._keep(step)

    def advance(self, until: datetime) -> None:
        self._run_due(until, inclusive=True)

    def finish(self) -> dict[str, list[str]]:
        """Every category as sorted-as-produced lines of canonical JSON, plus final states."""
        for cid in sorted(self.profiles):
            profile = Profile.model_validate_json(self.profiles[cid])  # decoded, not remembered
            self.out("profiles", profile.model_dump(mode="json"))
            self.out("stored_profiles", self.profiles[cid].decode())
        for cid in sorted(self.rule_states):
            state = CustomerRuleState.model_validate_json(self.rule_states[cid])
            self.out("rule_states", state.model_dump(mode="json"))
        for cid in sorted(self.members):
            member = MemberState.model_validate_json(self.members[cid])
            self.out("members", member.model_dump(mode="json"))
        return {k: [_canonical(v) for v in values] for k, values in sorted(self.lines.items())}

    def _read(self, cid: str) -> Customer:
        raw = self.profiles.get(cid)
        profile = from_stored(raw) if raw else empty_profile(cid)
        raw_rules = self.rule_states.get(cid)
        rules = state_from_json(raw_rules) if raw_rules else CustomerRuleState(customer_id=cid)
        raw_member = self.members.get(cid) if self.ctx.programme is not None else None
        member = member_from_json(raw_member) if raw_member else None
        return Customer(profile, rules, member)

    def _keep(self, step: Step) -> None:
        customer = step.customer
        cid = customer.customer_id
        self.profiles[cid] = stored(customer.profile)
        if step.rules_changed:
            self.rule_states[cid] = state_json(customer.rules)
        member = customer.member
        if self.ctx.programme is not None and member is not None and not member.is_empty():
            read = self.members.get(cid)  # as agents/profile/keeper.py _Batch.took
            if read is not None and not step.member_touched:
                self.members[cid] = member_kept(read, member)
            else:
                self.members[cid] = member_json(member)
        for d in step.decisions:
            self.out("decisions", decision_row(d))
            if d.outcome == "fired":
                self.out("actions", d.to_action().model_dump(mode="json"))
        for change in step.changes:
            self.out("segment_changes", segment_change_row(change))
        for move in step.movements:
            self.out("movements", move.as_message())
        for table, rows in rows_by_table(step.movements).items():
            for row in rows:
                self.out(f"rows_{table}", row)
        self.out("profile_snapshots", profile_row(customer.profile, WALL))
        self.out("wakes", [cid, step.wake])
        self._wakes.set(cid, step.wake)

    def _run_due(self, until: datetime, *, inclusive: bool) -> None:
        for cid, wake in self._wakes.due(until, inclusive=inclusive):
            self.clock = wake if self.clock is None else max(self.clock, wake)
            self._keep(on_clock(self._read(cid), wake, self.ctx))


def _canonical(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS).decode()


def shipped() -> tuple[RuleSet, Programme]:
    """The shipped rules and membership programme (rules/example.yaml, rules/membership.yaml)."""
    return load_rules(REPO / "rules" / "example.yaml"), load_programme(
        REPO / "rules" / "membership.yaml"
    )


def golden_run(
    *, with_rules: bool, messages: list[StoreEvent] | None = None
) -> dict[str, list[str]]:
    """The history through the step: with the shipped rules and programme, or with neither."""
    rules, programme = shipped() if with_rules else (None, None)
    ctx = StepContext(RfmPolicy(), rules, BudgetBook(), programme=programme)
    run = GoldenRun(ctx)
    for offset, message in enumerate(history() if messages is None else messages):
        run.feed(message, offset)
    if run.clock is not None:
        run.advance(run.clock + TAIL)
    return run.finish()


def digests(outcome: dict[str, list[str]]) -> dict[str, str]:
    """category -> sha256 of its lines, with how many there are."""
    out = {}
    for category, lines in outcome.items():
        h = hashlib.sha256()
        for line in lines:
            h.update(line.encode())
            h.update(b"\n")
        out[category] = f"{len(lines)}:{h.hexdigest()}"
    return out


def events_of(messages: list[StoreEvent]) -> Iterator[Event]:
    """The valid events among `messages`, decoded as the worker decodes them."""
    for offset, message in enumerate(messages):
        item = decode(
            message.topic, message.topic, 0, offset, message.key.encode(), message.payload()
        )
        if item.event is not None:
            yield item.event


FIXTURE = REPO / "tests" / "fixtures" / "golden_replay.json"
#: categories shown in full in the fixture (their first lines), for a reader
SAMPLED = ("decisions", "actions", "movements", "segment_changes", "refused")


def fixture() -> dict[str, Any]:
    """What the fixture holds: per configuration, the digests and a readable sample."""
    messages = history()
    out: dict[str, Any] = {}
    for name, with_rules in (("no_rules", False), ("shipped", True)):
        outcome = golden_run(with_rules=with_rules, messages=messages)
        sample = {
            c: [orjson.loads(line) for line in outcome[c][:2]] for c in SAMPLED if c in outcome
        }
        out[name] = {"digests": digests(outcome), "sample": sample}
    return out


def main() -> None:
    """`python -m ecrm.dev.golden`: write the fixture again (only when a change of what users
    see is intended, and said so in the commit)."""
    FIXTURE.write_bytes(
        orjson.dumps(fixture(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    main()


__all__ = ["FIXTURE", "GoldenRun", "digests", "events_of", "golden_run", "history", "shipped"]
