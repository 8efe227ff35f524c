"""The delivery record of each action in Redis, its retry queue and the shared rate limits: the
Redis shell of `ecrm deliver` (the decisions are agents/delivery/retry.py's).

Exactly once, step by step (docs/delivery.md, "Exactly once"):

1. `claim` (one script): a record that says sent or failed ends it (a replay, a duplicate);
   a lease held by another process ends it too; otherwise this process takes a lease, counts
   the attempt, and puts the action id on its partition's retry queue scored by the lease's
   end — so an action whose sender dies (SIGKILL) mid-send comes back when the lease ends,
   whatever Kafka's committed offset says.
2. the provider is called, with the action id as idempotency key where it takes one;
3. `finish` (one MULTI): the record says sent / failed / retry-at, the queue forgets or
   reschedules it, and the receipt goes to the ClickHouse outbox (the sink inserts it once)
   and to the deliveries outbox (relayed once to `ecrm.deliveries`).

The window left: a provider that accepted between 2 and 3 and takes no idempotency key
(SMTP, SMS, WeChat) can receive the action twice after a crash in that window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import orjson

from schemas.delivery import DeliveryFailure, Receipt
from streams import keyspace
from streams.outbox import QUEUED_ENTRIES, QUEUED_ROWS, kafka_entry, outbox_entry
from streams.redis_client import AsyncRedis

_CLAIM = """
local st = redis.call('HGET', KEYS[1], 'status') or 'new'
if st == 'sent' or st == 'failed' then return {'done', 0, '0', ''} end
local now = tonumber(ARGV[1])
local lease = tonumber(redis.call('HGET', KEYS[1], 'lease') or '0')
if lease > now then return {'busy', 0, '0', ''} end
local nt = tonumber(redis.call('HGET', KEYS[1], 'next_try') or '0')
if ARGV[3] == '0' and st == 'retry' and nt > now then return {'later', 0, '0', ''} end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'sending', 'lease', now + tonumber(ARGV[2]))
redis.call('HSETNX', KEYS[1], 'action', ARGV[4])
redis.call('HSETNX', KEYS[1], 'first_try', ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[5])
return {'send', attempts, redis.call('HGET', KEYS[1], 'first_try'),
        redis.call('HGET', KEYS[1], 'coupon_code') or ''}
"""

# A token bucket: `rate` tokens a second up to `burst`; returns 0 when a token was taken, else
# the milliseconds until one will be there.
_BUCKET = """
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 60000)
return wait
"""


@dataclass(frozen=True)
class Claimed:
    verdict: str  # send | done | busy | later
    attempts: int = 0
    first_try_ms: int = 0
    coupon_code: str = ""


class DeliveryRecords:
    """The records, queues and outboxes of every partition (one client; on a cluster each
    call touches one slot)."""

    def __init__(self, client: AsyncRedis, partitions: int, topic_prefix: str) -> None:
        self.client = client
        self.partitions = partitions
        self.deliveries_topic = f"{topic_prefix}deliveries"
        self.failures_topic = f"{topic_prefix}delivery-failures"
        self._claim = client.register_script(_CLAIM)
        self._take = client.register_script(_BUCKET)

    def partition(self, action_id: str) -> int:
        return keyspace.home(action_id, self.partitions)

    def key(self, action_id: str) -> str:
        return keyspace.delivery(action_id, self.partitions)

    async def claim(
        self, action_id: str, action_json: bytes, now_ms: int, lease_ms: int, retry: bool
    ) -> Claimed:
        p = self.partition(action_id)
        verdict, attempts, first, code = await self._claim(
            keys=[self.key(action_id), keyspace.delivery_retries(p)],
            args=[
                now_ms,
                lease_ms,
                int(retry),
                action_json,
                action_id,
                keyspace.DELIVERY_RECORD_TTL_S,
            ],
        )
        return Claimed(_s(verdict), int(attempts), int(first), _s(code))

    async def remember_coupon(self, action_id: str, code: str) -> None:
        """The minted code, so a retry of the message carries the same one."""
        await self.client.hset(self.key(action_id), "coupon_code", code)

    async def record(self, action_id: str) -> dict[str, str]:
        raw = await self.client.hgetall(self.key(action_id))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def action_json(self, action_id: str) -> bytes | None:
        found = await self.client.hget(self.key(action_id), "action")
        return found.encode() if isinstance(found, str) else found

    async def due(self, partition: int, now_ms: int, count: int = 100) -> list[str]:
        ids = await self.client.zrangebyscore(
            keyspace.delivery_retries(partition), "-inf", now_ms, start=0, num=count
        )
        return [_s(i) for i in ids]

    async def finish(
        self,
        receipt: Receipt,
        *,
        retry_at_ms: int | None = None,
        failure: DeliveryFailure | None = None,
    ) -> None:
        """Write the outcome of an attempt (module docstring, step 3): a retry when
        `retry_at_ms`, else the receipt's status (sent or failed)."""
        action_id = receipt.action_id
        p = self.partition(action_id)
        key, queue = self.key(action_id), keyspace.delivery_retries(p)
        async with self.client.pipeline(transaction=True) as tx:
            if retry_at_ms is not None:
                tx.hset(
                    key,
                    mapping={
                        "status": "retry",
                        "next_try": retry_at_ms,
                        "lease": 0,
                        "reason": receipt.reason,
                    },
                )
                tx.zadd(queue, {action_id: retry_at_ms})
            else:
                tx.hset(
                    key,
                    mapping={
                        "status": receipt.status,
                        "lease": 0,
                        "provider_id": receipt.provider_id,
                        "reason": receipt.reason,
                    },
                )
                tx.zrem(queue, action_id)
                if not receipt.customer_id:  # erased: keep nothing that names them
                    tx.hdel(key, "action", "coupon_code")
                row = receipt.row()
                tx.xadd(keyspace.clickhouse_outbox(p), _fields(outbox_entry("deliveries", [row])))
                tx.hincrby(keyspace.stats(p), QUEUED_ENTRIES, 1)
                tx.hincrby(keyspace.stats(p), QUEUED_ROWS, 1)
                tx.xadd(
                    keyspace.delivery_outbox(p),
                    _fields(
                        kafka_entry(
                            self.deliveries_topic, receipt.customer_id, receipt_json(receipt)
                        )
                    ),
                )
                if failure is not None:
                    tx.xadd(
                        keyspace.delivery_outbox(p),
                        _fields(
                            kafka_entry(
                                self.failures_topic,
                                failure.customer_id,
                                failure.model_dump_json().encode(),
                            )
                        ),
                    )
            tx.expire(key, keyspace.DELIVERY_RECORD_TTL_S)
            await tx.execute()
        if receipt.status == "sent" and receipt.provider_id and receipt.provider:
            # another slot than the record's: a lost one only leaves a receipt unmatched
            await self.client.set(
                keyspace.delivery_by_provider_id(receipt.provider, receipt.provider_id),
                action_id,
                ex=keyspace.DELIVERY_RECORD_TTL_S,
            )

    async def action_for(self, provider: str, provider_id: str) -> str | None:
        """The action a provider's message id was sent for, while its record lives."""
        found = await self.client.get(keyspace.delivery_by_provider_id(provider, provider_id))
        return None if found is None else _s(found)

    async def receipt(self, receipt: Receipt) -> None:
        """A later step reported by a provider or a click (delivered, bounced, opened,
        clicked): to ClickHouse and `ecrm.deliveries`; the record notes the latest."""
        p = self.partition(receipt.action_id)
        async with self.client.pipeline(transaction=True) as tx:
            tx.xadd(
                keyspace.clickhouse_outbox(p), _fields(outbox_entry("deliveries", [receipt.row()]))
            )
            tx.hincrby(keyspace.stats(p), QUEUED_ENTRIES, 1)
            tx.hincrby(keyspace.stats(p), QUEUED_ROWS, 1)
            tx.xadd(
                keyspace.delivery_outbox(p),
                _fields(
                    kafka_entry(self.deliveries_topic, receipt.customer_id, receipt_json(receipt))
                ),
            )
            await tx.execute()

    async def take_token(self, provider: str, per_second: float, burst: int, now_ms: int) -> int:
        """0 when the provider's shared bucket gave a token, else ms to wait for one."""
        wait = await self._take(
            keys=[keyspace.delivery_rate(provider)], args=[per_second, burst, now_ms]
        )
        return int(wait)


def receipt_json(receipt: Receipt) -> bytes:
    return orjson.dumps(receipt.model_dump(mode="json"))


def _fields(entry: dict[str, bytes]) -> dict[Any, Any]:
    """An outbox entry as XADD's fields (its typing wants a wider dict)."""
    return cast(dict[Any, Any], entry)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def action_of(raw: bytes) -> dict[str, Any]:
    return dict(json.loads(raw))
