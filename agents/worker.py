"""Assembles the stream worker (`Worker`): the Faust app, the profiles task, the sweep, the
relays, each a method of one small class whose parts are passed in."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any, cast

import redis.asyncio as aioredis
from faust.types import TP

from agents.membership.book import ProgrammeBook
from agents.profile.incoming import Incoming, decode
from agents.profile.keeper import ProfileKeeper
from agents.profile.positions import BrokerView
from agents.rules.book import RulesBook
from streams import keyspace
from streams.app import INPUT_TOPICS, OUTPUT_TOPICS, EcrmApp, create_app
from streams.backpressure import MEMORY_WARN_SHARE, OutboxGate, memory_use, outbox_depth
from streams.batches import BatchChannel, BatchConsumer, subscribe_batches
from streams.kafka_auth import PLAINTEXT, KafkaAuth
from streams.outages import REDIS_AWAY, Backoff
from streams.relay import KafkaRelay, run_relays
from streams.relay_tail import TopicTail
from streams.settings import Settings
from streams.worker_metrics import WorkerMetrics, dead_letter_reason

log = logging.getLogger(__name__)


def broker_view(app: Any) -> BrokerView:
    """What the keeper may ask of the broker, answered by the Faust app's consumer."""

    def highwater(topic: str, partition: int) -> int | None:
        try:
            end: int | None = app.consumer.highwater(TP(topic, partition))
        except Exception:  # noqa: BLE001 - not assigned here, or not fetched yet: unknown
            return None
        return end

    async def end_offsets(sources: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        ends = await app.consumer.highwaters(*(TP(t, p) for t, p in sources))
        return {(tp.topic, tp.partition): end for tp, end in ends.items() if end is not None}

    async def start_offsets(sources: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        starts = await app.consumer.earliest_offsets(*(TP(t, p) for t, p in sources))
        return {(tp.topic, tp.partition): start for tp, start in starts.items()}

    return BrokerView(highwater, end_offsets, start_offsets)


class Worker:
    """The stream worker: the Faust app with ecrm's tasks and timers on it. `profiles` reads
    batches into the keeper (the way in for events), `sweep` wakes customers on the clock
    (the way in for time); `backpressure`, `reload_rules` and `kafka_relay` keep it running.

    Everything is passed in; `Worker.build(settings)` assembles the real ones."""

    def __init__(
        self,
        settings: Settings,
        ctx: EcrmApp,
        keeper: ProfileKeeper,
        batches: BatchChannel,
        metrics: WorkerMetrics,
    ) -> None:
        self.settings = settings
        self.ctx = ctx
        self.app = ctx.app
        self.keeper = keeper
        self.batches = batches
        self.metrics = metrics
        self.gate = OutboxGate(settings.clickhouse_outbox_max_rows)
        self.prefix = len(settings.topic_prefix)

    @classmethod
    def build(cls, settings: Settings) -> Worker:
        """The worker of `settings`, its tasks and timers registered on its Faust app."""
        ctx = create_app(settings)
        metrics = WorkerMetrics(settings.redis_url, settings.partitions, settings.redis_cluster)
        keeper = ProfileKeeper(
            ctx,
            rules=RulesBook(settings.rules_file),
            membership=ProgrammeBook(settings.membership_file)
            if settings.membership_file
            else None,
            broker=broker_view(ctx.app),
            on_slice=metrics.swept,
        )
        batches = subscribe_batches(ctx.app, ctx.inputs)
        worker = cls(settings, ctx, keeper, batches, metrics)
        worker.register()
        return worker

    def register(self) -> None:
        """Put the tasks and timers on the Faust app (and serve the metrics, if asked)."""
        app, settings = self.app, self.settings
        app.on_partitions_assigned.connect(self.assigned)  # type: ignore[arg-type]  # mode's stub wants signal=
        app.task(self.profiles)
        app.task(self.sweep)
        app.timer(settings.backpressure_check_s, name="ecrm.backpressure")(self.backpressure)
        app.timer(settings.rules_reload_s, name="ecrm.rules-reload")(self.reload_rules)
        app.task(self.kafka_relay)
        if settings.metrics_port is not None:
            self.metrics.serve(settings.metrics_port)

    def acknowledge(self, items: list[Incoming]) -> None:
        self.batches.ack_offsets(item.source for item in items)

    async def assigned(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        self.keeper.rebalanced()  # the consumer reads again from the committed offsets

    # `keeper.apply` dead-letters an event that makes its batch raise and waits out outages,
    # so what still escapes it is a bug in ecrm's own shell: the task's exception crashes the
    # app and stops the worker before the batch is acked, so it is read again after a restart
    # instead of a later batch moving the offset past it
    async def profiles(self) -> None:
        """The way in for events: each batch decoded, applied, acknowledged."""
        keeper, settings, prefix = self.keeper, self.settings, self.prefix
        async for batch in self.batches:
            window = settings.time_window(datetime.now(UTC))
            items = []
            for r, offsets in batch.offsets():
                item = decode(
                    r.topic,
                    r.topic[prefix:],
                    r.partition,
                    r.offset,
                    r.key,
                    r.value,
                    window,
                    keeper.guard,
                )
                item.source = offsets
                items.append(item)
            started = time.perf_counter()
            # events the partition's event-time clock has not reached are held, unacked
            self.acknowledge(await keeper.apply(items))
            self.batches.finished(batch)
            self.measured(items, time.perf_counter() - started)

    def measured(self, items: list[Incoming], seconds: float) -> None:
        """The batch in this worker's metrics (streams/worker_metrics.py)."""
        metrics, prefix = self.metrics, self.prefix
        metrics.batch_seconds.observe(seconds)
        last: dict[tuple[str, int], int] = {}
        for item in items:
            metrics.messages.labels(topic=item.topic[prefix:]).inc()
            if item.error is not None:
                metrics.dead_letters.labels(reason=dead_letter_reason(item.error)).inc()
            last[(item.topic, item.partition)] = max(
                item.offset, last.get((item.topic, item.partition), -1)
            )
        broker = self.keeper.broker
        for (topic, partition), offset in last.items():
            end = broker.highwater(topic, partition) if broker is not None else None
            if end is not None:
                metrics.lag.labels(topic=topic[prefix:], partition=str(partition)).set(
                    max(end - offset - 1, 0)
                )

    # a loop rather than a Faust timer: a round interleaves its slices with event batches, so
    # it may last longer than the interval without stalling anything (a timer would log
    # "overlapping" for it); it starts every ECRM_SWEEP_INTERVAL_S, or at once after a long one
    async def sweep(self) -> None:
        """The way in for the clock: every `sweep_interval_s`, a round of `sweep_once`."""
        interval = self.settings.sweep_interval_s
        while not self.app.should_stop:
            started = time.monotonic()
            await self.sweep_once()
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def sweep_once(self) -> None:
        """Held events the clocks reached, then the customers whose wake time has come, on
        each partition this worker owns (in slices: agents/profile/sweep.py)."""
        try:
            self.acknowledge(await self.keeper.release_held())
            await self.keeper.sweep(sorted(self.ctx.owned_partitions()))
        except REDIS_AWAY as exc:
            log.warning("sweep skipped, Redis unavailable: %s", exc)  # the next round retries

    async def backpressure(self) -> None:
        """Fetch nothing while the ClickHouse outbox is over its limit (streams/backpressure.py)."""
        ctx, gate = self.ctx, self.gate
        try:
            depth = await outbox_depth(ctx.store.client, self.settings.partitions)
            share = await memory_use(ctx.store.client)
        except REDIS_AWAY:
            return  # the batches wait Redis out anyway
        if share is not None and share >= MEMORY_WARN_SHARE:
            log.warning(
                "Redis uses %.0f %% of its maxmemory: at 100 %% it refuses writes and the "
                "worker stops (docs/operations.md)",
                share * 100,
            )
        change = gate.update(depth)
        if change == "hold":
            log.warning(
                "ClickHouse outbox holds ~%d rows (limit %d): fetching input paused until the "
                "sink drains it below half (is ClickHouse down?)",
                depth,
                gate.max_rows,
            )
        elif change == "release":
            log.warning("ClickHouse outbox down to ~%d rows: fetching input again", depth)
        if change is not None or gate.holding:  # again each tick: a rebalance unpauses
            await cast(BatchConsumer, self.app.consumer).hold_inputs(gate.holding)
            await ctx.store.client.hset(
                keyspace.worker_stats(os.getpid()), "held_for_outbox", int(gate.holding)
            )

    async def reload_rules(self) -> None:
        """The rules and the membership programme, read again if their files changed."""
        keeper = self.keeper
        if keeper.rules is not None:
            keeper.rules.reload_if_changed()
        if keeper.membership is not None:  # None: ECRM_MEMBERSHIP_FILE is empty, no programme
            keeper.membership.reload_if_changed()

    async def send(self, topic: str, key: bytes | None, value: bytes) -> Any:
        return await self.app.producer.send(topic, key, value, None, None, None)

    async def relay_of(self, partition: int) -> KafkaRelay:
        """The relay of one partition's Kafka outbox, on the Redis node serving its slot."""
        ctx, settings = self.ctx, self.settings

        async def reconnect() -> aioredis.Redis:
            ctx.store.partition_clients.forget()
            return await ctx.store.for_partition(partition)

        return KafkaRelay(
            await ctx.store.for_partition(partition),
            self.send,
            stream=keyspace.kafka_outbox(partition),
            tail=TopicTail(settings.kafka_bootstrap, auth=KafkaAuth.of(settings)),
            max_message_bytes=settings.relay_max_message_bytes,
            heartbeat_ttl_s=settings.relay_heartbeat_ttl_s,
            retry_max_s=settings.relay_retry_max_s,
            # on a cluster, events are forwarded to their customer's partition on the topic
            # they came on (agents/profile/effects.py `Batch.forward`): the input topics too
            topics=frozenset(settings.topic(name) for name in relayed_topics(settings)),
            privacy_key=self.keeper.privacy_key,
            partitions=settings.partitions,
            lookup=ctx.store.client,
            reconnect=reconnect if settings.redis_is_cluster else None,
        )

    async def kafka_relay(self) -> None:
        """Every partition's outbox, each with its own relay; they log and retry every error
        themselves: only cancellation (the worker stopping) ends them."""
        app, partitions = self.app, self.settings.partitions
        relays: list[KafkaRelay] = []
        while len(relays) < partitions and not app.should_stop:
            try:
                relays.append(await self.relay_of(len(relays)))
            except REDIS_AWAY as exc:  # a cluster that cannot say where a slot is yet
                log.warning("Kafka relay waits for Redis: %s", exc)
                await asyncio.sleep(1.0)
        await run_relays(relays, lambda: bool(app.should_stop), block_ms=100)


def run_worker(settings: Settings, loglevel: str = "warning") -> int:
    """Runs until interrupted (Ctrl-C or SIGTERM)."""
    import faust

    settings.privacy_key()  # no worker without it: erasures would not hold (docs/privacy.md)

    from streams.topics import contract_topics, ensure_topics

    auth = KafkaAuth.of(settings)
    ensure_topics(
        settings.kafka_bootstrap,
        list(contract_topics(settings).values()),
        settings.partitions,
        auth=auth,
    )
    if not settings.redis_is_cluster:
        upgrade_layout(settings)
    ctx = Worker.build(settings).ctx
    ctx.store.cluster_id = kafka_cluster_id(settings.kafka_bootstrap, auth)
    stop = threading.Event()
    sink_thread = None
    if settings.sink_in_worker:
        sink_thread = start_sink_thread(settings, stop)
    worker = faust.Worker(ctx.app, loglevel=loglevel, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        stop.set()
        if sink_thread is not None:
            sink_thread.join(timeout=10)
    return 0


def relayed_topics(settings: Settings) -> tuple[str, ...]:
    """The topics the relay may send to: ecrm's outputs; on a Redis Cluster also the inputs,
    where events for another partition's slot are forwarded."""
    return OUTPUT_TOPICS + (INPUT_TOPICS if settings.redis_is_cluster else ())


def upgrade_layout(settings: Settings) -> None:
    """Keys of an ecrm from before the partition tags move to today's names (streams/rekey.py),
    before anything reads them; Redis is waited for, as every batch would."""
    from streams.rekey import upgrade

    backoff = Backoff()
    while True:
        client = settings.redis()
        try:
            upgrade(client, settings.partitions)
            return
        except REDIS_AWAY as exc:
            wait = backoff.next()
            log.warning("waiting for Redis to check its key layout (%s); again in %.1fs", exc, wait)
            time.sleep(wait)
        finally:
            client.close()


def drain_clickhouse_while(settings: Settings, stop: threading.Event) -> None:
    """For the process that owns an embedded chdb: drain the outbox into it until `stop`."""
    start_sink_thread(settings, stop).join()


def kafka_cluster_id(bootstrap: str, auth: KafkaAuth = PLAINTEXT) -> str:
    """The broker cluster's id, so offsets of a recreated broker are not confused with old ones."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), **auth.kafka_python())
    try:
        return str(admin.describe_cluster()["cluster_id"])
    finally:
        admin.close()


def start_sink_thread(settings: Settings, stop: threading.Event) -> threading.Thread:
    """Drains the ClickHouse outbox into `settings.clickhouse_url` until `stop` is set. The
    worker does not wait for ClickHouse: while it cannot be reached (or migrated) the thread
    retries with backoff and the outbox keeps the rows (bounded by back-pressure)."""
    from schemas.errors import ClickHouseError
    from streams.clickhouse import ClickHouse, connect, migrate
    from streams.sink import ClickHouseSink

    def connected() -> ClickHouse | None:
        backoff = 0.5
        while not stop.is_set():
            try:
                ch = connect(settings.clickhouse_url)
                migrate(ch, ttl_days=settings.clickhouse_ttl_days)
                return ch
            except ClickHouseError as exc:
                log.warning("ClickHouse unavailable, retrying in %.0f s: %s", backoff, exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
        return None

    def run() -> None:
        ch = connected()
        if ch is None:
            return
        try:
            ClickHouseSink.from_settings(settings, ch).run(stop)
        finally:
            ch.close()

    thread = threading.Thread(target=run, name="clickhouse-sink", daemon=True)
    thread.start()
    return thread
