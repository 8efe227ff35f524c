"""`ecrm demo`: the whole product on one laptop in under a minute.

Starts the embedded stack, runs real worker processes, drives synthetic storefront traffic
through Kafka, drains history into embedded ClickHouse and prints what happened.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
import yaml
from kafka import KafkaProducer

from agents.profile.keeper import messages_handled
from ecrm.commands.member import show_member
from ecrm.commands.profile import show_profile
from ecrm.dev.processes import spawn_worker, stop_process
from ecrm.dev.traffic import StoreEvent, synthetic_traffic
from schemas.membership import load_programme
from schemas.outputs import SEGMENTS
from schemas.profile import Profile, from_stored
from streams import counters, keyspace
from streams.clickhouse import ClickHouse, connect, load_query, migrate
from streams.embedded import embedded_stack
from streams.redis_client import mget
from streams.settings import Settings
from streams.sink import ClickHouseSink
from streams.topics import contract_topics, ensure_topics

SEGMENT_ORDER = [*SEGMENTS[1:], SEGMENTS[0]]  # the eight of PRODUCT.md, then prospects
#: the span of generated history the demo replays as if live
HISTORY = timedelta(days=120)
#: the rules' max_event_age in the demo: the whole history, and a month for the run itself
DEMO_MAX_EVENT_AGE = HISTORY + timedelta(days=30)


def say(text: str = "", end: str = "\n") -> None:
    print(text, end=end, flush=True)


def run_demo(
    settings: Settings, *, customers: int, sessions: int, workers: int = 1, serve: bool = False
) -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="ecrm-demo-"))
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # the client's chatter is not news here
    # SIGTERM stops the demo like Ctrl-C does: through the `finally` that stops everything
    signal.signal(signal.SIGTERM, _interrupt)
    say(
        "ecrm demo — a real-time CRM engine on embedded Kafka (Tansu), Redis (Valkey) and ClickHouse (chdb)"
    )
    say(f"[1/5] starting the embedded stack under {data_dir} ...")
    started = time.monotonic()
    with embedded_stack(data_dir, partitions=settings.partitions) as stack:
        rules = _demo_rules(settings.rules_file, data_dir)
        s = stack.settings(settings).model_copy(
            update={"app_id": "ecrm-demo", "sink": "no", "rules_file": rules}
        )
        ensure_topics(s.kafka_bootstrap, list(contract_topics(s).values()), s.partitions)
        say(
            f"      broker {s.kafka_bootstrap}, redis {s.redis_url}, clickhouse {s.clickhouse_url} "
            f"({time.monotonic() - started:.1f}s)"
        )
        # chdb lives in this process (one process per folder): the demo drains the outbox
        ch = connect(s.clickhouse_url)
        migrate(ch, ttl_days=s.clickhouse_ttl_days)
        stop = threading.Event()
        sink = threading.Thread(
            target=ClickHouseSink.from_settings(s, ch).run, args=(stop,), name="sink", daemon=True
        )
        sink.start()
        procs = [spawn_worker(s, data_dir / f"worker-{i + 1}.log") for i in range(workers)]
        try:
            code = _drive(s, ch, procs, customers, sessions)
            if serve and code == 0:
                _serve(s, ch, procs)
            return code
        finally:
            for proc in procs:
                stop_process(proc)
            stop.set()
            sink.join(timeout=15)
            ch.close()


def _serve(s: Settings, ch: ClickHouse, procs: list[subprocess.Popen[bytes]]) -> None:
    """`--serve`: the API and dashboard on the demo's stack, until Ctrl-C (the worker keeps
    running, so events sent to the API show up live). The demo owns the embedded ClickHouse,
    so the API reads it through this process's connection."""
    import secrets

    import uvicorn

    from ecrm.api.app import create_app
    from ecrm.api.keys import ApiKey, key_hash
    from streams.embedded import port_is_free

    write, read = secrets.token_hex(32), secrets.token_hex(32)
    keys = [
        ApiKey(name="demo-shop", kind="write", sha256=key_hash(write)),
        ApiKey(name="demo-reader", kind="read", sha256=key_hash(read)),
    ]
    port = s.api_port if port_is_free(s.api_port) else 0
    config = uvicorn.Config(
        create_app(s, clickhouse=ch, keys=keys), host=s.api_host, port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    sockets = [config.bind_socket()]
    where = sockets[0].getsockname()
    url = f"http://{where[0]}:{where[1]}"
    say("  serving the API and the dashboard (Ctrl-C stops it all):")
    say(f"    dashboard   {url}/   (user: the read key, no password)")
    say(f"    read key    {read}")
    say(f"    write key   {write}")
    say(f"    API docs    {url}/docs")
    say(
        f"    try         curl -u {write}: {url}/v1/track -H 'content-type: application/json' "
        """-d '{"userId":"c-1","event":"Order Completed","properties":{"order_id":"o-1","total":99}}'"""
    )
    say(f"                curl -u {read}: {url}/v1/profiles/c-1")
    server.run(sockets=sockets)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _drive(
    s: Settings, ch: ClickHouse, procs: list[subprocess.Popen[bytes]], customers: int, sessions: int
) -> int:
    client = s.redis()
    now = datetime.now(UTC)
    say(
        f"[2/5] started {len(procs)} worker process(es); generating traffic for {customers:,} "
        f"customers, {sessions:,} sessions over the last {HISTORY.days} days ..."
    )
    events = list(synthetic_traffic(customers, sessions, start=now - HISTORY, span=HISTORY))
    producer = KafkaProducer(
        bootstrap_servers=s.kafka_bootstrap, linger_ms=20, batch_size=256 * 1024
    )
    say(
        f"[3/5] producing {len(events):,} events to {s.topic_prefix}orders/cart/favorites/browse ..."
    )
    t0 = time.monotonic()
    for i, ev in enumerate(events, 1):
        raw = _payload(ev)
        producer.send(s.topic(ev.topic), key=ev.key.encode(), value=raw)
        if i % 20000 == 0:
            say(f"      produced {i:,}", end="\r")
    producer.flush()
    say(f"      produced {len(events):,} in {time.monotonic() - t0:.1f}s")

    say("[4/5] the worker folds them into live profiles in Redis ...")
    first_seen: float | None = None
    deadline = time.monotonic() + 300
    while True:
        done = messages_handled(client, s.partitions)
        if done and first_seen is None:
            first_seen = time.monotonic()
        say(f"      processed {done:,} / {len(events):,}", end="\r")
        if done >= len(events):
            break
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"a worker exited with code {proc.returncode}; see its log")
        if time.monotonic() > deadline:
            raise SystemExit("the worker did not catch up within 5 minutes")
        time.sleep(0.2)
    elapsed = max(time.monotonic() - (first_seen or t0), 1e-3)
    say(
        f"      processed {len(events):,} in {elapsed:.1f}s = {len(events) / elapsed:,.0f} events/s"
    )
    _wait_drained(client, s.partitions)
    say("[5/5] summary")
    _summary(s, ch, client, len(events), elapsed)
    client.close()
    return 0


def _summary(
    s: Settings, ch: ClickHouse, client: redis.Redis, produced: int, elapsed: float
) -> None:
    stats = counters.stats(client, s.partitions)
    say()
    say(f"  events produced      {produced:>10,}")
    say(f"  events applied       {stats.get('events', 0):>10,}")
    say(
        f"  duplicates ignored   {stats.get('duplicates', 0):>10,}   (producer retries, same event_id)"
    )
    say(
        f"  dead-lettered        {stats.get('dead_letters', 0):>10,}   (invalid, with reason, on {s.topic('dead-letter')})"
    )
    say(
        f"  segment changes      {stats.get('segment_changes', 0):>10,}   (on {s.topic('segment-changes')})"
    )
    say(
        f"  member changes       {stats.get('member_changes', 0):>10,}   (points, levels, tags, on {s.topic('member-changes')})"
    )
    say(f"  throughput           {produced / elapsed:>10,.0f}   events/s")
    profiles = _profiles(client)
    counts = Counter(p.segment for p in profiles)
    say()
    say(f"  customers per RFM segment ({len(profiles):,} profiles in Redis)")
    for seg in SEGMENT_ORDER:
        if counts.get(seg):
            say(
                f"    {seg:<20} {counts[seg]:>7,}  {'#' * max(1, 50 * counts[seg] // max(counts.values()))}"
            )
    if profiles:
        top = max(profiles, key=lambda p: p.monetary)
        say()
        say(f"  a sample profile (the top spender), as `ecrm profile {top.customer_id}` prints it:")
        show_profile(s, top.customer_id, as_json=False)
    _rules_table(client, s.partitions)
    _membership(s, ch, profiles)
    say()
    say("  ClickHouse: GMV by current segment (clickhouse/queries/gmv_by_segment.sql)")
    _gmv_table(ch)
    say()
    say(
        "  ClickHouse: rule performance, last-touch attribution within 72 h (ecrm sql rule_performance)"
    )
    _rule_performance(ch)
    say()


def _demo_rules(path: Path, data_dir: Path) -> Path:
    """The rules file without quiet hours, so the demo shows actions at any time of day
    (with them, a demo run at night would show every action deferred to the morning), and
    with a `max_event_age` wider than the generated history: the demo plays months of history
    as if they were happening now, and the rules would otherwise hold all of it back."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    policy = data["policy"] = data.get("policy") or {}
    quiet = policy.pop("quiet_hours", None) is not None
    policy["max_event_age"] = f"{DEMO_MAX_EVENT_AGE.days}d"
    say(
        f"      rules: {path} ({'quiet hours switched off, ' if quiet else ''}"
        f"events up to {DEMO_MAX_EVENT_AGE.days} days old marketed as live, for the demo)"
    )
    out = data_dir / "demo-rules.yaml"
    out.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return out


def _rules_table(client: redis.Redis, partitions: int) -> None:
    per_rule: dict[str, Counter[str]] = {}
    for field, n in counters.rule_stats(client, partitions).items():
        rule_id, outcome = field.split("|", 1)
        per_rule.setdefault(rule_id, Counter())[outcome] += int(n)
    say()
    say("  marketing rules (rules/example.yaml): decisions per rule")
    say(f"    {'rule':<24} {'fired':>7} {'held out':>9} {'deferred':>9}  suppressed (why)")
    for rule_id, c in sorted(per_rule.items()):
        why = ", ".join(
            f"{k.split(':', 1)[1]} {v:,}"
            for k, v in sorted(c.items())
            if k.startswith("suppressed")
        )
        say(
            f"    {rule_id:<24} {c['fired']:>7,} {c['held_out']:>9,} {c['deferred']:>9,}  {why or '-'}"
        )
    if not per_rule:
        say("    (no rule fired)")


def _membership(s: Settings, ch: ClickHouse, profiles: list[Profile]) -> None:
    """Members per level, points outstanding and lapsing, top tags; a sample member view."""
    if s.membership_file is None:
        return  # no programme: nothing to show
    programme = load_programme(s.membership_file)
    levels = Counter(p.level for p in profiles if p.level)
    say()
    say(f"  membership ({s.membership_file.name}): members per level")
    for level in programme.levels.ladder:
        n = levels.get(level.id, 0)
        bar = "#" * (max(1, 50 * n // max(levels.values())) if n else 0)
        say(f"    {level.id:<10} {level.name or '':<6} {n:>7,}  {bar}")
    say(
        f"  points outstanding   {sum(p.points for p in profiles):>10,}   spendable "
        f"(+{sum(p.points_pending for p in profiles):,} pending in return windows)"
    )
    today = datetime.now(programme.zone).date().replace(day=1)
    next_month = (today + timedelta(days=32)).replace(day=1)
    liability = ch.query(load_query("points_liability"), {"timezone": programme.timezone})
    lapsing = sum(r["points"] for r in liability if r["expiry_month"] == next_month)
    say(f"  lapsing next month   {lapsing:>10,}   ({next_month:%Y-%m}; ecrm sql points_liability)")
    for row in liability[:3]:
        month = f"{row['expiry_month']:%Y-%m}" if row["expiry_month"] else "never"
        say(f"    lapse {month:<8} {row['points']:>10,} points  {row['members']:>6,} members")
    tags = Counter(t for p in profiles for t in p.tags)
    say(f"  top tags             {', '.join(f'{t} {n:,}' for t, n in tags.most_common(5)) or '-'}")
    members = [p for p in profiles if p.level]
    if members:
        top = max(members, key=lambda p: (programme.levels.rank(p.level), p.points))
        say()
        say(f"  a sample member, as `ecrm member show {top.customer_id}` prints it:")
        show_member(s, top.customer_id, as_json=False)


def _gmv_table(ch: ClickHouse) -> None:
    now = datetime.now(UTC)
    rows = ch.query(
        load_query("gmv_by_segment"),
        {"since": now - timedelta(days=365), "until": now + timedelta(days=1)},
    )
    say(f"    {'segment':<20} {'customers':>9} {'orders':>7} {'GMV':>12} {'AOV':>9}")
    for row in rows:
        say(
            f"    {row['segment']:<20} {row['customers']:>9,} {row['orders']:>7,} "
            f"{row['gmv']:>12,.2f} {row['aov']:>9,.2f}"
        )


def _payload(ev: StoreEvent) -> bytes:
    try:
        return ev.payload()
    except TypeError:  # a deliberately absurd number orjson will not write; json will
        return json.dumps(ev.value).encode()


def _rule_performance(ch: ClickHouse) -> None:
    now = datetime.now(UTC)
    rows = ch.query(
        load_query("rule_performance"),
        {"since": now - timedelta(days=365), "until": now + timedelta(days=1), "window_hours": 72},
    )
    say(
        f"    {'rule':<22} {'decided':>8} {'sent':>6} {'held out':>8} {'converted':>9} "
        f"{'treated':>8} {'held-out':>8} {'uplift (95% CI)':>24} {'coupon cost':>11}"
    )
    for r in rows:

        def pct(x: object) -> str:
            return "-" if x is None else f"{float(x):.1%}"  # type: ignore[arg-type]

        ci = (
            "-"
            if r["uplift"] is None
            else f"{float(r['uplift']):+.1%} [{float(r['uplift_ci_low']):+.1%}, {float(r['uplift_ci_high']):+.1%}]"
        )
        say(
            f"    {r['rule_id']:<22} {r['decided']:>8,} {r['sent']:>6,} {r['held_out']:>8,} "
            f"{r['converted']:>9,} {pct(r['treated_rate']):>8} {pct(r['held_out_rate']):>8} {ci:>24} "
            f"{float(r['coupon_cost'] or 0):>11,.2f}"
        )
    if not rows:
        say("    (no decisions yet)")


def _profiles(client: redis.Redis) -> list[Profile]:
    keys = list(client.scan_iter(match=keyspace.PROFILES_PATTERN, count=2000))
    out: list[Profile] = []
    for i in range(0, len(keys), 1000):
        out.extend(from_stored(v) for v in mget(client, keys[i : i + 1000]) if v)
    return out


def _wait_drained(client: redis.Redis, partitions: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    outboxes = counters.clickhouse_outboxes(partitions)
    while (left := counters.stream_lengths(client, outboxes)) and time.monotonic() < deadline:
        say(f"      history to ClickHouse: {left} batches left", end="\r")
        time.sleep(0.2)
    say(" " * 60, end="\r")


def add_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="embedded stack + worker + synthetic traffic + summary")
    demo.add_argument("--customers", type=int, default=3000)
    demo.add_argument("--sessions", type=int, default=12000)
    demo.add_argument("--workers", type=int, default=1)
    demo.add_argument(
        "--serve",
        action="store_true",
        help="after the summary, keep everything running and serve the API and dashboard",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    return run_demo(
        settings,
        customers=args.customers,
        sessions=args.sessions,
        workers=args.workers,
        serve=args.serve,
    )
