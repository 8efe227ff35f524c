"""Assembles the stream worker: the Faust app, the profile agent, the sweep, the relays."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from faust.types import TP

from agents.membership.book import ProgrammeBook
from agents.profile.keeper import Incoming, ProfileKeeper, decode
from agents.rules.book import RulesBook
from streams.app import EcrmApp, create_app
from streams.batches import subscribe_batches
from streams.outages import REDIS_AWAY
from streams.relay import KafkaRelay
from streams.relay_tail import TopicTail
from streams.settings import Settings

log = logging.getLogger(__name__)


def build_worker(settings: Settings) -> tuple[EcrmApp, ProfileKeeper]:
    """The Faust app with ecrm's agent, timer and relay registered on it."""
    ctx = create_app(settings)
    app = ctx.app
    keeper = ProfileKeeper(
        ctx,
        rules=RulesBook(settings.rules_file),
        membership=ProgrammeBook(settings.membership_file),
    )

    def highwater(topic: str, partition: int) -> int | None:
        try:
            end: int | None = app.consumer.highwater(TP(topic, partition))
        except Exception:  # noqa: BLE001 - not assigned here, or not fetched yet: unknown
            return None
        return end

    keeper.highwater = highwater

    async def end_offsets(sources: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        ends = await app.consumer.highwaters(*(TP(t, p) for t, p in sources))
        return {(tp.topic, tp.partition): end for tp, end in ends.items() if end is not None}

    keeper.end_offsets = end_offsets
    prefix = len(settings.topic_prefix)

    batches = subscribe_batches(app, ctx.inputs)

    def acknowledge(items: list[Incoming]) -> None:
        batches.ack_offsets(item.source for item in items)

    async def assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        keeper.rebalanced()  # the consumer reads again from the committed offsets

    app.on_partitions_assigned.connect(assigned)  # type: ignore[arg-type]  # mode's stub wants signal=

    # `keeper.apply` dead-letters an event that makes its batch raise and waits out outages,
    # so what still escapes it is a bug in ecrm's own shell: the task's exception crashes the
    # app and stops the worker before the batch is acked, so it is read again after a restart
    # instead of a later batch moving the offset past it
    @app.task
    async def profiles() -> None:
        async for batch in batches:
            window = settings.time_window(datetime.now(UTC))
            items = []
            for r, offsets in batch.offsets():
                item = decode(
                    r.topic, r.topic[prefix:], r.partition, r.offset, r.key, r.value, window
                )
                item.source = offsets
                items.append(item)
            # events the partition's event-time clock has not reached are held, unacked
            acknowledge(await keeper.apply(items))
            batches.finished(batch)

    @app.timer(settings.sweep_interval_s, name="ecrm.sweep")
    async def sweep() -> None:
        try:
            acknowledge(await keeper.release_held())
            await keeper.sweep(sorted(ctx.owned_partitions()))
        except REDIS_AWAY as exc:
            log.warning("sweep skipped, Redis unavailable: %s", exc)  # the next tick retries

    @app.timer(settings.rules_reload_s, name="ecrm.rules-reload")
    async def reload_rules() -> None:
        assert keeper.rules is not None and keeper.membership is not None
        keeper.rules.reload_if_changed()
        keeper.membership.reload_if_changed()

    async def send(topic: str, key: bytes | None, value: bytes) -> Any:
        return await app.producer.send(topic, key, value, None, None, None)

    relay = KafkaRelay(
        ctx.store.client,
        send,
        tail=TopicTail(settings.kafka_bootstrap),
        max_message_bytes=settings.relay_max_message_bytes,
        heartbeat_ttl_s=settings.relay_heartbeat_ttl_s,
        retry_max_s=settings.relay_retry_max_s,
    )

    @app.task
    async def kafka_relay() -> None:
        # logs and retries every error itself: only cancellation (the worker stopping) ends it
        await relay.run(lambda: bool(app.should_stop), block_ms=100)

    return ctx, keeper


def run_worker(settings: Settings, loglevel: str = "warning") -> int:
    """Runs until interrupted (Ctrl-C or SIGTERM)."""
    import faust

    from streams.topics import contract_topics, ensure_topics

    ensure_topics(
        settings.kafka_bootstrap, list(contract_topics(settings).values()), settings.partitions
    )
    ctx, _ = build_worker(settings)
    ctx.store.cluster_id = kafka_cluster_id(settings.kafka_bootstrap)
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


def drain_clickhouse_while(settings: Settings, stop: threading.Event) -> None:
    """For the process that owns an embedded chdb: drain the outbox into it until `stop`."""
    start_sink_thread(settings, stop).join()


def kafka_cluster_id(bootstrap: str) -> str:
    """The broker cluster's id, so offsets of a recreated broker are not confused with old ones."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    try:
        return str(admin.describe_cluster()["cluster_id"])
    finally:
        admin.close()


def start_sink_thread(settings: Settings, stop: threading.Event) -> threading.Thread:
    """Drains the ClickHouse outbox into `settings.clickhouse_url` until `stop` is set."""
    from streams.clickhouse import connect, migrate
    from streams.sink import ClickHouseSink

    ch = connect(settings.clickhouse_url)
    migrate(ch)
    sink = ClickHouseSink(settings.redis_url, ch)

    def run() -> None:
        try:
            sink.run(stop)
        finally:
            ch.close()

    thread = threading.Thread(target=run, name="clickhouse-sink", daemon=True)
    thread.start()
    return thread
