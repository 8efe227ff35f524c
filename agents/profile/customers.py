"""The one way a unit reads and writes its customers: `keys` says what the unit must read for
them, `read` gives back a `Customer` (profile, rule state, member state) as the unit has it,
`write` keeps a customer step (and `write_stub` a linked id's redirect). Nothing else in the
keeper touches a customer's keys.

    keys = Customers.keys(ids, partitions, rules=True, members=False)   # before the unit
    customers = Customers(unit, partitions, rules=True, members=False)
    customer = customers.read("c1")
    customers.write(step, partition)         # profile, rule state, member state, wake time
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from agents.customer_step import Customer, Step
from agents.membership.state import member_from_json, member_json, member_kept
from agents.rules.state import CustomerRuleState, state_from_json, state_json
from schemas.profile import Profile, empty_profile, from_stored, stored
from streams import keyspace
from streams.redis_store import Unit


@dataclass
class Customers:
    """A unit's customers. `rules`: rule states are kept (a rules file is in force);
    `members`: member states are kept (a membership programme is in force)."""

    unit: Unit
    partitions: int
    rules: bool
    members: bool

    @staticmethod
    def keys(customers: Iterable[str], partitions: int, *, rules: bool, members: bool) -> list[str]:
        """The Redis keys a unit reads for these customers."""
        ids = list(customers)
        keys = [keyspace.profile(c, partitions) for c in ids]
        if rules:
            keys += [keyspace.rule_state(c, partitions) for c in ids]
        if members:
            keys += [keyspace.member(c, partitions) for c in ids]
        return keys

    def profile(self, customer_id: str) -> Profile:
        """The customer's profile as the unit has it (a new one if none is stored)."""
        raw = self.unit.get(keyspace.profile(customer_id, self.partitions))
        return from_stored(raw) if raw else empty_profile(customer_id)

    def read(self, customer_id: str) -> Customer:
        """The customer as the unit has it: as read, or as a step of this unit left them."""
        n = self.partitions
        rules = CustomerRuleState(customer_id=customer_id)
        if self.rules:
            raw = self.unit.get(keyspace.rule_state(customer_id, n))
            if raw:
                rules = state_from_json(raw)
        member = None
        if self.members:
            raw = self.unit.get(keyspace.member(customer_id, n))
            member = member_from_json(raw) if raw else None
        return Customer(self.profile(customer_id), rules, member)

    def write(self, step: Step, partition: int) -> None:
        """Keep what a step left: the profile, the rule state if it changed, the member state
        if it holds anything, and the customer's wake time in `partition`'s wake set."""
        customer = step.customer
        cid, n, unit = customer.customer_id, self.partitions, self.unit
        unit.put(keyspace.profile(cid, n), stored(customer.profile))
        if self.rules and step.rules_changed:
            unit.put(keyspace.rule_state(cid, n), state_json(customer.rules))
        member = customer.member
        if self.members and member is not None and not member.is_empty():
            key = keyspace.member(cid, n)
            read = unit.get(key)
            # a member state the step never handed out is as read: not encoded again
            value = (
                member_json(member)
                if step.member_touched or not read
                else member_kept(read, member)
            )
            if value != read:
                unit.put(key, value)
        self.wake(cid, partition, step.wake)

    def write_stub(self, cid: str, stub: Profile) -> None:
        """A linked id: its profile a redirect to `stub.merged_into`, no rule state, no wake
        time (out of its home partition's wake set)."""
        n = self.partitions
        self.unit.put(keyspace.profile(cid, n), stored(stub))
        if self.rules:
            empty = CustomerRuleState(customer_id=cid)
            self.unit.put(keyspace.rule_state(cid, n), state_json(empty))
        self.wake(cid, keyspace.home(cid, n), None)

    def wake(self, customer_id: str, partition: int, at: datetime | None) -> None:
        """The customer's wake time in `partition`'s wake set (None: out of it)."""
        wakes = keyspace.wakes(partition)
        if at is None:
            self.unit.zrem(wakes, customer_id)
        else:
            self.unit.zadd(wakes, customer_id, ms(at))


def ms(moment: datetime) -> int:
    """A moment as a sorted set's score (milliseconds since the epoch)."""
    return int(moment.timestamp() * 1000)
