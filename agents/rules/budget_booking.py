"""A rule's daily budget, shared by every partition, booked by one script on its own key.

A unit's keys are one partition's (streams/keyspace.py), but a rule's budget is the shop's:
on a Redis Cluster its key lives in another slot, so it cannot be WATCHed with the unit. The
budget is therefore *booked*, not written:

1. Before a unit, its worker reads the budgets it may book (`read_spent`): the engine decides
   against that snapshot, as it always did (agents/rules/contact_policy.py).
2. Just before the unit's MULTI, `book` runs one Lua script per budget key with every move the
   unit's decisions make (`Booking`: the action id, +1 or -1, the coupon value). The script
   adds all of them, or — if the spending ones would take the day past its count or value
   cap — none, and says so. Each move is recorded in the hash under its booking id, so a move
   booked twice (a unit redone after a crash, a replay) counts once.
3. Refused: the unit is not committed and is redone on a fresh read, in which the other
   partitions' spending is seen and the engine suppresses what no longer fits (`budget`).
   Booked but the unit then fails (a conflict, Redis away): the moves this attempt added are
   taken back (`unbook`) before it is redone.

**Exactness.** The caps are never exceeded: the script checks and adds in one step on the
key's own master, whatever the partitions do concurrently. What can be lost is the other way:
a worker killed between the booking and its EXEC leaves moves booked for decisions that were
never committed. Its partition is then read again from the watermark, the same events make
the same decisions (the same action ids), and the booking finds them booked — no double
count. Only when the replayed decisions differ (a rule changed in between, or the wall clock
moved a decision past a quiet-hours edge) do those moves stay: the day under-spends by them,
never over-spends. On one Redis server the same code runs; the key is then simply another
key of the same server.

Values are booked in ten-thousandths (`SCALE`), as integers: Lua has no decimals.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from agents.rules.contact_policy import Spend
from agents.rules.state import Decision
from schemas.rules import RuleSet
from streams import keyspace

SCALE = keyspace.BUDGET_VALUE_SCALE

#: KEYS[1] the budget hash; ARGV: max count (-1: none), max value (scaled; -1: none), TTL in
#: ms, then (booking id, count, value) triples. Returns {1, fresh ids...} or {0}.
BOOK = """
local count = tonumber(redis.call('HGET', KEYS[1], 'count') or '0')
local value = tonumber(redis.call('HGET', KEYS[1], 'value') or '0')
local add_count, add_value, fresh = 0, 0, {}
for i = 4, #ARGV, 3 do
  if redis.call('HEXISTS', KEYS[1], 'b:' .. ARGV[i]) == 0 then
    add_count = add_count + tonumber(ARGV[i + 1])
    add_value = add_value + tonumber(ARGV[i + 2])
    table.insert(fresh, i)
  end
end
local max_count, max_value = tonumber(ARGV[1]), tonumber(ARGV[2])
if add_count > 0 and max_count >= 0 and count + add_count > max_count then return {0} end
if add_value > 0 and max_value >= 0 and value + add_value > max_value then return {0} end
local booked = {1}
for _, i in ipairs(fresh) do
  redis.call('HSET', KEYS[1], 'b:' .. ARGV[i], ARGV[i + 1] .. '|' .. ARGV[i + 2])
  table.insert(booked, ARGV[i])
end
if #fresh > 0 then
  redis.call('HINCRBY', KEYS[1], 'count', add_count)
  redis.call('HINCRBY', KEYS[1], 'value', add_value)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return booked
"""

#: KEYS[1] the budget hash; ARGV: booking ids this attempt added. Takes them back.
UNBOOK = """
for i = 1, #ARGV do
  local move = redis.call('HGET', KEYS[1], 'b:' .. ARGV[i])
  if move then
    local sep = string.find(move, '|', 1, true)
    redis.call('HINCRBY', KEYS[1], 'count', -tonumber(string.sub(move, 1, sep - 1)))
    redis.call('HINCRBY', KEYS[1], 'value', -tonumber(string.sub(move, sep + 1)))
    redis.call('HDEL', KEYS[1], 'b:' .. ARGV[i])
  end
end
return 1
"""


class BudgetRefused(Exception):  # noqa: N818 - a signal to redo the unit, caught by the keeper
    """Another partition spent the budget first: redo the unit on a fresh read."""


@dataclass(frozen=True)
class Booking:
    """One decision's move of its rule's budget on one day."""

    booking_id: str
    count: int
    value: Decimal


def bookings(decisions: Iterable[Decision]) -> dict[tuple[str, date], list[Booking]]:
    """(rule id, day) -> the moves these decisions make (see `budget_spend`)."""
    out: dict[tuple[str, date], list[Booking]] = defaultdict(list)
    for d in decisions:
        if d.budget_delta and d.budget_day is not None:
            value = (d.coupon_value or Decimal(0)) * d.budget_delta
            out[(d.rule_id, d.budget_day)].append(
                Booking(f"{d.action_id}:{d.budget_delta}", d.budget_delta, value)
            )
    return out


async def read_spent(
    client: Any, rules: RuleSet, days: Iterable[date]
) -> dict[tuple[str, date], Spend]:
    """What the budgeted rules have booked on these days (single-key reads, pipelined: on a
    cluster the client sends each to its slot's node)."""
    wanted = [(r.id, day) for day in days for r in rules.rules if r.budget is not None]
    if not wanted:
        return {}
    async with client.pipeline(transaction=False) as pipe:  # one round trip (per node)
        for rule_id, day in wanted:
            pipe.hmget(keyspace.budget(rule_id, day), ["count", "value"])
        found = await pipe.execute()
    spent: dict[tuple[str, date], Spend] = {}
    for key, (count, value) in zip(wanted, found, strict=True):
        if count is not None or value is not None:
            spent[key] = Spend(int(count or 0), Decimal(int(value or 0)) / SCALE)
    return spent


class BudgetBooker:
    """Books one unit's budget moves (before its MULTI) and takes them back if it aborts."""

    def __init__(
        self, client: Any, rules: RuleSet, moves: dict[tuple[str, date], list[Booking]], ttl_s: int
    ) -> None:
        self.client = client
        self.rules = {r.id: r for r in rules.rules}
        self.moves = moves
        self.ttl_ms = ttl_s * 1000
        self.booked: dict[str, list[bytes]] = {}

    async def book(self) -> None:
        for (rule_id, day), moves in self.moves.items():
            key = keyspace.budget(rule_id, day)
            rule = self.rules.get(rule_id)
            budget = rule.budget if rule is not None else None
            max_count = budget.per_day if budget is not None and budget.per_day is not None else -1
            max_value = (
                _scaled(budget.value_per_day)
                if budget is not None and budget.value_per_day is not None
                else -1
            )
            args: list[Any] = [max_count, max_value, self.ttl_ms]
            for move in moves:
                args += [move.booking_id, move.count, _scaled(move.value)]
            reply = await self.client.eval(BOOK, 1, key, *args)
            if int(reply[0]) != 1:
                await self.unbook()
                raise BudgetRefused(
                    f"{rule_id} on {day}: the budget was spent by another partition"
                )
            self.booked[key] = list(reply[1:])

    async def unbook(self) -> None:
        booked, self.booked = self.booked, {}
        for key, ids in booked.items():
            if ids:
                await self.client.eval(UNBOOK, 1, key, *ids)


def _scaled(value: Decimal) -> int:
    return int((value * SCALE).to_integral_value())
