"""What one unit (a batch of events, or a sweep of a partition's waking customers) collects,
and what it commits: each customer step kept (profile, rule state, member state, next wake),
the messages forwarded or dead-lettered, then, at `finish`, the rules' actions, the
ClickHouse rows, the Kafka messages and the counters, all queued on the one Redis unit."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import orjson

from agents.customer_step import Customer, Step, StepContext
from agents.membership.rows import rows_by_table
from agents.membership.state import Movement
from agents.profile.customers import Customers
from agents.profile.incoming import Incoming
from agents.profile.rows import profile_row, segment_change_row
from agents.rules.contact_policy import BudgetBook
from agents.rules.shell import MarketingStep
from schemas.membership import Programme
from schemas.outputs import DeadLetter, SegmentChange, bounded_key
from schemas.pii import looks_personal, scrub
from streams.outbox import clickhouse_entry, kafka_message
from streams.redis_store import Unit

if TYPE_CHECKING:
    from agents.profile.keeper import ProfileKeeper


@dataclass
class Batch:
    """What one unit (a batch of events or a sweep) collects for its commit."""

    keeper: ProfileKeeper
    unit: Unit
    marketing: MarketingStep | None
    #: the wall clock, against which history is judged (agents/rules/engine.py)
    wall: datetime
    #: orders this unit's snapshots after earlier ones as of the same event time
    written_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    stats: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    event_rows: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    changes: list[SegmentChange] = field(default_factory=list)
    #: identity links applied in this unit: old id -> the customer it is now
    linked: dict[str, str] = field(default_factory=dict)
    #: rows for ClickHouse `identity_merges`
    merges: list[dict[str, Any]] = field(default_factory=list)
    movements: list[Movement] = field(default_factory=list)

    @cached_property
    def programme(self) -> Programme | None:
        """Read once per unit: a reload takes effect at the next unit."""
        return self.keeper.programme

    @cached_property
    def customers(self) -> Customers:
        """The unit's customers, read and written one way (agents/profile/customers.py)."""
        return Customers(
            self.unit,
            self.keeper.partitions,
            rules=self.marketing is not None,
            members=self.programme is not None,
        )

    @cached_property
    def ctx(self) -> StepContext:
        m = self.marketing
        return StepContext(
            self.keeper.policy,
            m.rules if m else None,
            m.budget if m else BudgetBook(),
            self.wall,
            consent_default=self.keeper.app.settings.consent_granted,
            programme=self.programme,
        )

    def customer(self, customer_id: str) -> Customer:
        """The customer as this unit has them."""
        return self.customers.read(customer_id)

    def took(self, step: Step, partition: int) -> None:
        """Keep what a customer step did: the customer (profile, rule state, member state,
        wake time, agents/profile/customers.py) and its outputs for `finish`: decisions,
        segment changes, member movements, the profile's snapshot, counts."""
        self.customers.write(step, partition)
        self.stats["duplicates"] += len(step.duplicates)
        self.stats["events"] += len(step.applied)
        self.changes.extend(step.changes)
        if self.marketing is not None:
            self.marketing.decided(step.decisions)
        self.movements.extend(step.movements)
        self.snapshots.append(profile_row(step.customer.profile, self.written_at))

    def forward(self, item: Incoming, customer_id: str, message: bytes, now: datetime) -> None:
        """On a cluster: a message for a customer whose keys live in another partition's slot
        (the storefront keyed it otherwise; a linked id's event, now the customer's; a step
        of a link across slots) goes to the same topic keyed by that customer, so Kafka's
        partitioner puts it on their home partition, whose worker applies it (once: the
        event id). A message keyed so already cannot be sent home: the topic's partitions
        are not ECRM_PARTITIONS."""
        if item.key == customer_id.encode() and message == item.value:
            self.dead_letter(
                item,
                now,
                error=(
                    f"partitions: the topic has not ECRM_PARTITIONS="
                    f"{self.keeper.partitions} partitions, so this customer's home partition "
                    "cannot be reached (set ECRM_PARTITIONS to the input topics' count)"
                ),
            )
            return
        self.unit.add(kafka_message(item.topic, customer_id, message))
        self.stats["forwarded"] += 1

    def dead_letter(self, item: Incoming, now: datetime, error: str | None = None) -> None:
        letter = DeadLetter.of(
            topic=item.topic,
            partition=item.partition,
            offset=item.offset,
            key=item.key,
            value=item.value,
            error=error or item.error or "invalid",
            at=now,
        )
        topic = self.keeper.app.settings.topic("dead-letter")
        key = bounded_key(item.key)
        if key is not None and looks_personal(key.decode("utf-8", "replace")):
            key = scrub(key.decode("utf-8", "replace")).encode()  # as the letter shows it
        self.unit.add(kafka_message(topic, key, letter.model_dump_json().encode()))
        self.stats["dead_letters"] += 1

    def withhold(self, item: Incoming, now: datetime, reason: str) -> None:
        """A dead letter that says where the message was and why it was refused, but keeps
        nothing of it (an erased customer's event): no key, no bytes, only its size."""
        letter = DeadLetter.withheld(
            topic=item.topic,
            partition=item.partition,
            offset=item.offset,
            size=len(item.value),
            error=reason,
            at=now,
        )
        topic = self.keeper.app.settings.topic("dead-letter")
        self.unit.add(kafka_message(topic, None, letter.model_dump_json().encode()))
        self.stats["dead_letters"] += 1
        self.stats[reason] += 1

    def finish(self) -> None:
        """Queue the rules' effects, the ClickHouse rows, the Kafka messages and counters."""
        settings = self.keeper.app.settings
        unit = self.unit
        if self.marketing is not None:
            self.marketing.finish(settings.topic("actions"), self.keeper.privacy_key)
        if self.snapshots:
            unit.add(clickhouse_entry("profile_snapshots", self.snapshots))
        if self.event_rows:
            unit.add(clickhouse_entry("events", self.event_rows))
        if self.merges:
            unit.add(clickhouse_entry("identity_merges", self.merges))
        if self.changes:
            unit.add(
                clickhouse_entry("segment_changes", [segment_change_row(c) for c in self.changes])
            )
            topic = settings.topic("segment-changes")
            for change in self.changes:
                unit.add(kafka_message(topic, change.customer_id, change.to_json()))
            self.stats["segment_changes"] = len(self.changes)
        if self.movements:
            for table, rows in rows_by_table(self.movements).items():
                unit.add(clickhouse_entry(table, rows))
            topic = settings.topic("member-changes")
            for move in self.movements:
                message = orjson.dumps(move.as_message())
                unit.add(kafka_message(topic, move.customer_id, message))
            self.stats["member_changes"] = len(self.movements)
        for name, n in self.stats.items():
            if n:
                unit.count(name, n)
