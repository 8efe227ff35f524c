"""`ecrm bench`: throughput, timer lateness, freshness, sink rate, memory and scale-out,
each next to a peer measured in the same run on the same data (these machines are noisy).

Every phase uses its own topic prefix and Redis database on one embedded stack (or on the
configured services with --no-embedded), so phases do not see each other's data.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import redis
import yaml
from kafka import KafkaConsumer, KafkaProducer

from agents.profile.rows import event_row
from ecrm.dev.processes import cpu_seconds, rss_bytes, spawn_worker, stop_process
from ecrm.dev.traffic import StoreEvent, synthetic_traffic
from schemas.events import EVENT_BY_TOPIC
from schemas.profile import from_stored
from streams import counters, keyspace
from streams.batches import MAX_PARTITION_FETCH_BYTES
from streams.clickhouse import connect, migrate
from streams.counters import messages_handled
from streams.embedded import embedded_stack
from streams.outbox import clickhouse_entry
from streams.redis_client import mget
from streams.settings import Settings
from streams.sink import ClickHouseSink
from streams.topics import contract_topics, ensure_topics

LATENCY_RULES = """\
rules:
  - id: bench-abandoned-cart
    when:
      event: cart
      not_followed_by: {event: orders, where: {status: paid}}
      within: 2s
    action: {kind: coupon, channel: sms, params: {value: 10, threshold: 99, valid_for: 48h}}
"""
#: the span of synthetic history the phases replay as if it were happening now
HISTORY = timedelta(days=60)


@dataclass
class Bench:
    base: Settings
    work: Path
    quick: bool
    load: int = 5000
    only: str | None = None
    #: where py-spy writes the flame graph of the worker with the shipped files (--py-spy)
    py_spy: Path | None = None
    #: the rules file the operator named (the phases run a copy: `history_as_live`)
    rules_name: str = "example.yaml"
    results: dict[str, Any] = field(default_factory=dict)
    _phase: int = 0

    def phase(self, name: str, **update: Any) -> Settings:
        """Settings for one phase: fresh topics, consumer group and Redis database."""
        self._phase += 1
        n = self._phase
        redis_url = self.base.redis_url.rsplit("/", 1)[0] + f"/{n}"
        s = self.base.model_copy(
            update={
                "topic_prefix": f"bench{n}.",
                "app_id": f"ecrm-bench-{n}",
                "redis_url": redis_url,
                "sink": "no",
                **update,
            }
        )
        s.redis().flushdb()
        ensure_topics(s.kafka_bootstrap, list(contract_topics(s).values()), s.partitions)
        say(f"\n== {name} ==")
        return s

    def consumer(self, s: Settings, **update: Any) -> Settings:
        """`s` read again from the start by a new consumer: the same topics, its own group
        and Redis database."""
        self._phase += 1
        n = self._phase
        again = s.model_copy(
            update={
                "app_id": f"ecrm-bench-{n}",
                "redis_url": self.base.redis_url.rsplit("/", 1)[0] + f"/{n}",
                **update,
            }
        )
        again.redis().flushdb()
        return again


def say(text: str) -> None:
    print(text, flush=True)


def traffic(customers: int, sessions: int) -> list[StoreEvent]:
    now = datetime.now(UTC)
    events = synthetic_traffic(customers, sessions, start=now - HISTORY, span=HISTORY)
    return [e for e in events if e.raw is None and e.defect is None]


def produce_all(s: Settings, events: list[StoreEvent]) -> None:
    producer = KafkaProducer(
        bootstrap_servers=s.kafka_bootstrap, linger_ms=50, batch_size=512 * 1024, acks=1
    )
    for ev in events:
        producer.send(s.topic(ev.topic), key=ev.key.encode(), value=ev.payload())
    producer.flush()
    producer.close()


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.05)


def run_pipeline(
    s: Settings,
    n: int,
    workers: int,
    log_dir: Path,
    second_after: float | None = None,
    extra_env: dict[str, str] | None = None,
    py_spy: Path | None = None,
) -> tuple[float, list[int], float]:
    """Events/s of the whole pipeline over a pre-filled topic, the workers' RSS and the CPU
    seconds (per event) they used meanwhile; optionally a second worker joins (a rebalance)
    after `second_after` of the events are done, or py-spy records the first worker's flame
    graph into `py_spy` from its first event to its last."""
    client = s.redis()
    procs = [spawn_worker(s, log_dir / f"{s.app_id}-{i}.log", extra_env) for i in range(workers)]
    spy: subprocess.Popen[bytes] | None = None
    try:
        wait_until(lambda: messages_handled(client, s.partitions) > 0, 120, "the worker to start")
        if py_spy is not None:
            spy = record_flame_graph(procs[0].pid, py_spy, log_dir / "py-spy.log")
        t0 = time.monotonic()
        start_count = messages_handled(client, s.partitions)
        cpu = -sum(cpu_seconds(p.pid) for p in procs)
        if second_after is not None:
            wait_until(
                lambda: messages_handled(client, s.partitions) >= n * second_after,
                300,
                "the first part",
            )
            procs.append(spawn_worker(s, log_dir / f"{s.app_id}-late.log"))
        wait_until(lambda: messages_handled(client, s.partitions) >= n, 1800, "all events")
        elapsed = time.monotonic() - t0
        cpu += sum(cpu_seconds(p.pid) for p in procs)
        rss = [rss_bytes(p.pid) for p in procs]
        return (n - start_count) / elapsed, rss, cpu / (n - start_count)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
            spy.wait(timeout=120)
        for p in procs:
            stop_process(p)
        client.close()


def record_flame_graph(pid: int, out: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """py-spy (on PATH, e.g. `pip install py-spy`) sampling `pid` 100 times a second into an
    SVG flame graph, until it is sent SIGINT."""
    binary = shutil.which("py-spy")
    if binary is None:
        raise SystemExit("bench: --py-spy needs py-spy on PATH (pip install py-spy)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen(  # noqa: S603 - py-spy, argv built here
            [binary, "record", "--pid", str(pid), "-r", "100", "--nonblocking", "-o", str(out)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def raw_loop(s: Settings, n: int) -> tuple[float, float]:
    """The peer: a bare aiokafka getmany loop that decodes and validates, nothing else,
    fetching like the worker does (same records per fetch, same partition fetch size).
    Returns events/s and CPU seconds per event."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
    )
    await consumer.start()
    try:
        kinds = {s.topic(k): EVENT_BY_TOPIC[k] for k in EVENT_BY_TOPIC}
        tps = [TopicPartition(t, p) for t in kinds for p in range(s.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen, t0, cpu0 = 0, time.monotonic(), time.process_time()
        while seen < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=s.batch_max)
            for tp, records in batch.items():
                model = kinds[tp.topic]
                for r in records:
                    model.model_validate_json(r.value)
                seen += len(records)
        return n / (time.monotonic() - t0), (time.process_time() - cpu0) / n
    finally:
        await consumer.stop()


#: The bench's shop: tens of thousands of customers, Pareto-active, sessions over two months
#: of history (views, carts, favourites, orders, refunds, retries; ecrm/dev/traffic.py).
SHOP = (40_000, 60_000)
QUICK_SHOP = (10_000, 4_000)
#: The programme file ecrm accepts with the least in it (one level, no tags), for the run
#: "without membership" while the file cannot be left out.
SMALLEST_PROGRAMME = "levels:\n  ladder:\n    - {id: member, upgrade: 0}\n"


@dataclass(frozen=True)
class Consumer:
    """One consumer's figures in the throughput phase."""

    label: str
    events_per_s: float
    cpu_s_per_event: float
    note: str = ""

    def row(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "events_per_s": round(self.events_per_s),
            "cpu_us_per_event": round(self.cpu_s_per_event * 1e6, 2),
            **({"note": self.note} if self.note else {}),
        }


def throughput(b: Bench) -> tuple[Settings, int]:
    """The same topic contents read, in turn, each alone and from the start with its own
    group, by: the raw aiokafka + pydantic loop, the quixstreams peer (exactly-once off and
    on), `ecrm worker` without rules or membership, and `ecrm worker` with the shipped
    rules/example.yaml + rules/membership.yaml. Events/s, and CPU per event of the consuming
    process (its own, all threads: Redis's and the broker's are not counted)."""
    customers, sessions = QUICK_SHOP if b.quick else SHOP
    s = b.phase(
        f"throughput: the same topics read by each consumer in turn ({customers:,} customers)"
    )
    events = traffic(customers, sessions)
    produce_all(s, events)
    n = len(events)
    say(
        f"  {n:,} events from {len({e.key for e in events}):,} customers on {s.partitions} partitions"
    )
    consumers: dict[str, Consumer] = {}

    def report(key: str, c: Consumer) -> None:
        consumers[key] = c
        say(
            f"  {c.label:<58} {c.events_per_s:>9,.0f} events/s {c.cpu_s_per_event * 1e6:>8,.1f} µs CPU/event"
            + (f"  ({c.note})" if c.note else "")
        )

    raw, raw_cpu = asyncio.run(raw_loop(s, n))
    report("raw", Consumer("raw aiokafka getmany + pydantic decode", raw, raw_cpu))
    for key, c in quix_peer(b, s, n).items():
        report(key, c)

    bare_update, bare_env, membership = without_membership(b.work)
    no_rules = b.work / "bench-no-rules.yaml"
    no_rules.write_text("rules: []\n")
    bare = b.consumer(s, rules_file=no_rules, **bare_update)
    rate, _, cpu = run_pipeline(bare, n, 1, b.work, extra_env=bare_env)
    report("ecrm_bare", Consumer(f"ecrm worker, no rules, {membership}", rate, cpu))

    shipped = b.consumer(s)
    rate, rss, cpu = run_pipeline(shipped, n, 1, b.work, py_spy=b.py_spy)
    label = f"ecrm worker, {b.rules_name} + {shipped.membership_file.name}"
    report("ecrm", Consumer(label, rate, cpu))

    ecrm = consumers["ecrm"]
    result: dict[str, Any] = {
        "events": n,
        "customers": customers,
        "sessions": sessions,
        "consumers": {key: c.row() for key, c in consumers.items()},
        # the figures of the raw loop and the worker with the shipped files, as before
        "raw_events_per_s": round(raw),
        "ecrm_events_per_s": round(ecrm.events_per_s),
        "ratio": round(ecrm.events_per_s / raw, 4),
        "raw_cpu_us_per_event": round(raw_cpu * 1e6, 2),
        "ecrm_cpu_us_per_event": round(ecrm.cpu_s_per_event * 1e6, 2),
        "cpu_ratio": round(raw_cpu / ecrm.cpu_s_per_event, 5),
        "worker_rss_bytes": rss[0],
    }
    quix = consumers.get("quixstreams")
    if quix is not None:
        # the issue's yardstick: ecrm's CPU per event as a multiple of quixstreams' (lower is better)
        result["cpu_vs_quixstreams"] = {
            key: round(consumers[key].cpu_s_per_event / quix.cpu_s_per_event, 2)
            for key in ("ecrm_bare", "ecrm")
        }
        say(
            "  CPU per event vs quixstreams: "
            + ", ".join(f"{k} {v}x" for k, v in result["cpu_vs_quixstreams"].items())
        )
    else:
        result["quixstreams_skipped"] = b.results.get("quixstreams_skipped", "")
    b.results["throughput"] = result
    say(f"  worker RSS (shipped files)                   {rss[0] / 2**20:>9,.0f} MiB")
    return shipped, n


def quix_peer(b: Bench, s: Settings, n: int) -> dict[str, Consumer]:
    """The quixstreams peer over the phase's topics, exactly-once off and on (--quick: off
    only, and only when its venv is already cached: building it takes minutes on a busy
    machine)."""
    from ecrm.dev import quix_bench

    if b.quick and not quix_bench.cached():
        why = (
            f"quixstreams peer skipped: --quick does not build its venv and none is cached in "
            f"{quix_bench.venv_dir()} (a full `ecrm bench` builds it once)"
        )
        b.results["quixstreams_skipped"] = why
        say(f"  {why}")
        return {}
    python = quix_bench.ensure_venv(say)
    topics = [s.topic(kind) for kind in quix_bench.PEER_KINDS]
    runs: dict[str, Consumer] = {}
    modes = (("quixstreams", False),) + (() if b.quick else (("quixstreams_eos", True),))
    for key, exactly_once in modes:
        group = b.consumer(s).app_id  # a group (and Redis database) of its own, unused
        run = quix_bench.run_peer(
            python,
            bootstrap=s.kafka_bootstrap,
            topics=topics,
            group=group,
            events=n,
            state_dir=b.work / f"{group}-state",
            exactly_once=exactly_once,
            log_path=b.work / f"{group}.log",
        )
        label = f"quixstreams 3.28 fold in RocksDB, exactly-once {'on' if exactly_once else 'off'}"
        runs[key] = Consumer(label, run.events_per_s, run.cpu_s_per_event)
    return runs


def without_membership(work: Path) -> tuple[dict[str, Any], dict[str, str], str]:
    """Settings, worker environment and a label for a worker without a membership programme:
    none at all when the settings accept none (ECRM_MEMBERSHIP_FILE empty), else the smallest
    programme the worker accepts."""
    from pydantic import ValidationError

    try:
        Settings(membership_file=None)
    except ValidationError:
        smallest = work / "bench-smallest-programme.yaml"
        smallest.write_text(SMALLEST_PROGRAMME)
        return {"membership_file": smallest}, {}, "smallest programme (one level)"
    return {"membership_file": None}, {"ECRM_MEMBERSHIP_FILE": ""}, "no membership"


def memory(b: Bench, s: Settings) -> None:
    client = s.redis()
    keys = [
        k
        for _, k in zip(
            range(2000), client.scan_iter(match=keyspace.PROFILES_PATTERN, count=1000), strict=False
        )
    ]
    sizes = [client.memory_usage(k, samples=0) or 0 for k in keys]
    lengths = [client.strlen(k) for k in keys]
    profiles = sum(1 for _ in client.scan_iter(match=keyspace.PROFILES_PATTERN, count=5000))
    b.results["memory"] = {
        "profiles": profiles,
        "redis_bytes_per_profile_mean": round(statistics.mean(sizes)),
        "redis_bytes_per_profile_median": round(statistics.median(sizes)),
        "json_bytes_median": round(statistics.median(lengths)),
    }
    say(
        f"  Redis per profile: median {statistics.median(sizes):,.0f} B, mean {statistics.mean(sizes):,.0f} B"
        f" over {len(keys):,} sampled of {profiles:,} profiles (JSON median {statistics.median(lengths):,.0f} B)"
    )
    client.close()


def lateness_and_freshness(b: Bench) -> None:
    rules = b.work / "bench-rules.yaml"
    rules.write_text(LATENCY_RULES)
    s = b.phase(f"timer lateness and freshness at {b.load:,} events/s background", rules_file=rules)
    seconds, probes_per_s = (20, 10) if b.quick else (60, 20)
    rate = b.load
    background = traffic(20_000, 200_000 if not b.quick else 60_000)
    client = s.redis()
    proc = spawn_worker(s, b.work / "lateness-worker.log")
    actions = KafkaConsumer(
        s.topic("actions"),
        bootstrap_servers=s.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=200,
    )
    deadlines: dict[str, float] = {}
    produced_at: dict[str, float] = {}
    late: list[float] = []
    fresh: list[float] = []
    stop = threading.Event()
    try:
        producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, linger_ms=5)
        producer.send(
            s.topic("browse"),
            key=b"warmup",
            value=orjson.dumps(
                {
                    "event_id": "warmup",
                    "customer_id": "warmup",
                    "ts": int(time.time() * 1000),
                    "sku": "x",
                }
            ),
        )
        producer.flush()
        wait_until(lambda: messages_handled(client, s.partitions) > 0, 120, "the worker to start")

        def load() -> None:
            i, t0 = 0, time.monotonic()
            while not stop.is_set() and i < len(background):
                ev = background[i]
                value = dict(ev.value, ts=int(time.time() * 1000), event_id=f"bg{i}")
                producer.send(s.topic(ev.topic), key=ev.key.encode(), value=orjson.dumps(value))
                i += 1
                ahead = i / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        t_end = time.monotonic() + seconds
        k = 0
        while time.monotonic() < t_end:
            k += 1
            now_ms = int(time.time() * 1000)
            cid = f"probe{k}"
            producer.send(
                s.topic("cart"),
                key=cid.encode(),
                value=orjson.dumps(
                    {
                        "event_id": f"p{k}",
                        "customer_id": cid,
                        "ts": now_ms,
                        "sku": "s",
                        "qty": 1,
                        "price": 5,
                    }
                ),
            )
            deadlines[cid] = now_ms / 1000 + 2.0
            produced_at[cid] = time.time()
            _collect(actions, deadlines, late)
            _fresh(client, s.partitions, produced_at, fresh)
            time.sleep(1 / probes_per_s)
        stop.set()
        loader.join()
        # a worker that fell behind still owes every probe: wait for stragglers, do not drop them
        wait_deadline = time.monotonic() + 120
        while (deadlines or produced_at) and time.monotonic() < wait_deadline:
            _collect(actions, deadlines, late)
            _fresh(client, s.partitions, produced_at, fresh)
        producer.close()
    finally:
        stop.set()
        actions.close()
        stop_process(proc)
        client.close()
    b.results["background_events_per_s"] = rate
    b.results["timer_lateness_s"] = _pcts(late) | {"missing": len(deadlines)}
    b.results["freshness_s"] = _pcts(fresh) | {"missing": len(produced_at)}
    say(f"  abandoned-cart lateness after deadline: {_fmt(late)}  ({len(deadlines)} missing)")
    say(f"  freshness produce -> profile in Redis:  {_fmt(fresh)}  ({len(produced_at)} missing)")


def _collect(consumer: KafkaConsumer, deadlines: dict[str, float], late: list[float]) -> None:
    for message in consumer.poll(timeout_ms=20).values():
        for m in message:
            cid = orjson.loads(m.value)["customer_id"]
            if cid in deadlines:
                late.append(time.time() - deadlines.pop(cid))


def _fresh(
    client: redis.Redis, partitions: int, produced_at: dict[str, float], fresh: list[float]
) -> None:
    if not produced_at:
        return
    ids = list(produced_at)
    found = client.mget([keyspace.profile(c, partitions) for c in ids])
    now = time.time()
    for cid, value in zip(ids, found, strict=True):
        if value is not None:
            fresh.append(now - produced_at.pop(cid))


def _pcts(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"n": 0}
    xs = sorted(xs)
    return {
        "n": len(xs),
        "p50": round(xs[len(xs) // 2], 4),
        "p99": round(xs[min(len(xs) - 1, int(len(xs) * 0.99))], 4),
        "max": round(xs[-1], 4),
    }


def _fmt(xs: list[float]) -> str:
    p = _pcts(xs)
    if not p.get("n"):
        return "no samples"
    return f"p50 {p['p50'] * 1000:,.0f} ms, p99 {p['p99'] * 1000:,.0f} ms, max {p['max'] * 1000:,.0f} ms (n={p['n']})"


def sink(b: Bench) -> None:
    s = b.phase("ClickHouse sink: through the outbox vs a raw insert")
    n = 50_000 if b.quick else 200_000
    events = traffic(5_000, n // 6)
    now = datetime.now(UTC)
    rows = [
        event_row(
            EVENT_BY_TOPIC[e.topic].model_validate(e.value),
            topic=e.topic,
            partition=0,
            offset=i,
            now=now,
        )
        for i, e in enumerate(events)
    ]
    chunk = 2000
    ch = connect(f"chdb://{b.work / 'bench-clickhouse'}")
    migrate(ch)
    t0 = time.monotonic()
    for i in range(0, len(rows), chunk):
        ch.insert("events", rows[i : i + chunk], token=f"raw-{i}")
    raw = len(rows) / (time.monotonic() - t0)
    client = s.redis()
    for i in range(0, len(rows), chunk):  # spread over the partitions, as workers write
        entry = clickhouse_entry("events", rows[i : i + chunk])
        client.xadd(entry.stream(i // chunk % s.partitions), entry.fields)
    drainer = ClickHouseSink.from_settings(s, ch)
    t0 = time.monotonic()
    while drainer.pending():
        drainer.drain_once(block_ms=10)
    ours = len(rows) / (time.monotonic() - t0)
    ch.close()
    b.results["sink"] = {
        "rows": len(rows),
        "raw_rows_per_s": round(raw),
        "ecrm_rows_per_s": round(ours),
        "ratio": round(ours / raw, 4),
    }
    say(f"  raw chdb insert ({chunk}-row chunks)   {raw:>10,.0f} rows/s")
    say(f"  ecrm outbox -> sink -> chdb           {ours:>10,.0f} rows/s   ratio {ours / raw:.1%}")


#: Partitions of the scale-out phase: room for four workers with two partitions each.
SCALE_OUT_PARTITIONS = 8
#: The scale-out run on a Redis Cluster (3 masters, a replica each; streams/embedded.py).
CLUSTER_RUN = "two workers, Redis Cluster"


@contextmanager
def _redis_for(b: Bench, on_cluster: bool) -> Iterator[str | None]:
    """A Redis Cluster of its own for a run that wants one (its URL), else None."""
    if not on_cluster:
        yield None
        return
    from streams.valkey_cluster import start_valkey_cluster

    with start_valkey_cluster(b.work / "valkey-cluster") as cluster:
        yield cluster.url


def scale_out(b: Bench) -> None:
    """One, two and four workers in one group on 8 partitions, and one joined by another at
    30 % (a rebalance mid-run), over the same traffic: events/s, and events per second of
    worker CPU (per busy core: on a machine with fewer cores than workers the workers share
    them with Redis, the broker and the producer, so events/s alone cannot grow). Two
    workers run again on a Redis Cluster (three masters with a replica each, every unit
    waiting for its replica), beside the same two on one Redis. Profiles are compared field
    by field across the runs."""
    customers, sessions = (10_000, 5_000) if b.quick else (50_000, 30_000)
    events = traffic(customers, sessions)
    results: dict[str, Any] = {"events": len(events), "partitions": SCALE_OUT_PARTITIONS}
    profiles: dict[str, dict[bytes, bytes]] = {}
    runs: tuple[tuple[str, int, float | None, bool], ...] = (
        ("one worker", 1, None, False),
        ("two workers", 2, None, False),
        ("four workers", 4, None, False),
        (CLUSTER_RUN, 2, None, True),
    )
    if not b.quick:
        runs += (("one + one joining at 30%", 1, 0.3, False),)
    for label, workers, late, on_cluster in runs:
        with _redis_for(b, on_cluster) as redis_url:
            update: dict[str, Any] = {"partitions": SCALE_OUT_PARTITIONS}
            if redis_url is not None:
                update["redis_url"] = redis_url
            s = b.phase(f"scale-out: {label} on {SCALE_OUT_PARTITIONS} partitions", **update)
            produce_all(s, events)
            rate, _, cpu = run_pipeline(s, len(events), workers, b.work, second_after=late)
            client = s.redis()
            keys = list(client.scan_iter(match=keyspace.PROFILES_PATTERN, count=5000))
            snapshot = {}
            for i in range(0, len(keys), 2000):
                part = keys[i : i + 2000]
                for k, v in zip(part, mget(client, part), strict=True):
                    p = from_stored(v)
                    snapshot[k] = orjson.dumps(
                        [p.frequency, str(p.monetary), p.events_seen, p.last_order_at]
                    )
            applied = counters.stats(client, s.partitions)["events"]
            client.close()
        profiles[label] = snapshot
        per_core = 1 / cpu if cpu > 0 else 0.0
        results[label] = {
            "workers": workers,
            "events_per_s": round(rate),
            "events_per_cpu_s": round(per_core),
            "applied": applied,
        }
        say(
            f"  {label:<26} {rate:>10,.0f} events/s   {per_core:>8,.0f} per busy core   "
            f"applied {applied:,}"
        )
    one = results["one worker"]["events_per_s"]
    for label in ("two workers", "four workers", CLUSTER_RUN):
        results[label]["vs_one"] = round(results[label]["events_per_s"] / one, 2) if one else 0
    two = results["two workers"]["events_per_s"]
    on_cluster_rate = results[CLUSTER_RUN]["events_per_s"]
    results[CLUSTER_RUN]["vs_one_redis"] = round(on_cluster_rate / two, 2) if two else 0
    snapshots = list(profiles.values())
    same = all(snap == snapshots[0] for snap in snapshots[1:])
    results["profiles_identical"] = same
    b.results["scale_out"] = results
    say(
        f"  two workers {results['two workers']['vs_one']}x one, four "
        f"{results['four workers']['vs_one']}x (on {os.cpu_count()} cores)"
    )
    say(
        f"  two workers on a Redis Cluster: {results[CLUSTER_RUN]['vs_one_redis']}x the same "
        "two on one Redis"
    )
    say(f"  profiles identical in all runs: {same}")


def run_bench(
    settings: Settings,
    *,
    quick: bool,
    out: Path,
    load: int = 5000,
    only: str | None = None,
    py_spy: Path | None = None,
) -> int:
    logging.getLogger("kafka").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="ecrm-bench-"))
    say(f"ecrm bench{' --quick' if quick else ''}: results in {out}, logs in {work}")
    with embedded_stack(work / "stack", partitions=settings.partitions) as stack:
        live = {"rules_file": history_as_live(settings.rules_file, work)}
        b = Bench(stack.settings(settings).model_copy(update=live), work, quick, load, only)
        b.rules_name = settings.rules_file.name
        b.py_spy = py_spy
        b.results["machine"] = _machine()
        if only in (None, "throughput"):
            s, _ = throughput(b)
            memory(b, s)
        if only in (None, "lateness"):
            lateness_and_freshness(b)
        if only in (None, "sink"):
            sink(b)
        if only in (None, "scale-out"):
            scale_out(b)
        if only in (None, "ingest"):
            ingest_phase(b)
    out.write_text(json.dumps(b.results, indent=2, default=str))
    say(f"\nwrote {out}")
    return 0


def ingest_phase(b: Bench) -> None:
    """HTTP ingestion (`ecrm api`, /v1/batch of 100) beside direct Kafka produce."""
    from ecrm.dev.ingest_bench import ingest

    s = b.phase("ingest: `ecrm api` /v1/batch (100 a request) vs producing straight to Kafka")
    r = b.results["ingest"] = ingest(s, b.work, b.quick)
    say(
        f"  through ecrm api /v1/batch    {r['api_events_per_s']:>10,} events/s   ratio {r['ratio']:.1%}"
    )
    say(f"  straight to Kafka (acks=all)  {r['kafka_events_per_s']:>10,} events/s")
    say(
        f"  request latency p50 {r['api_request_p50_ms']} ms, p99 {r['api_request_p99_ms']} ms"
        f" (Kafka batch p50 {r['kafka_batch_p50_ms']} ms, p99 {r['kafka_batch_p99_ms']} ms)"
    )


def history_as_live(path: Path, work: Path) -> Path:
    """The rules file with a `max_event_age` wider than the synthetic history, which the bench
    replays as if live: otherwise the rules would hold all of it back as history, and the
    pipeline measured would queue no action at all."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    policy = data["policy"] = data.get("policy") or {}
    policy["max_event_age"] = f"{(HISTORY + timedelta(days=30)).days}d"
    out = work / "bench-rules-history-as-live.yaml"
    out.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return out


def _machine() -> dict[str, Any]:
    import os
    import platform

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def add_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="measure throughput, lateness, freshness, sink, memory")
    bench.add_argument("--quick", action="store_true", help="a smoke run on small traffic (CI)")
    bench.add_argument("--out", type=Path, default=Path("bench.json"))
    bench.add_argument(
        "--load", type=int, default=5000, help="background events/s while timing lateness"
    )
    bench.add_argument(
        "--only",
        choices=("throughput", "lateness", "sink", "scale-out", "ingest"),
        help="one phase",
    )
    bench.add_argument(
        "--py-spy",
        type=Path,
        metavar="SVG",
        help="record a py-spy flame graph of the worker with the shipped files (throughput)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    return run_bench(
        settings, quick=args.quick, out=args.out, load=args.load, only=args.only, py_spy=args.py_spy
    )
