"""`ecrm demo`: the whole product on one laptop in under a minute.

Starts the embedded stack, runs real worker processes, drives synthetic storefront traffic
through Kafka, drains history into embedded ClickHouse and prints what happened.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
import yaml
from kafka import KafkaProducer

from ecrm.dev.processes import spawn_worker, stop_process
from ecrm.dev.summary import say, summary
from ecrm.dev.traffic import CouponResponse, StoreEvent, synthetic_traffic
from schemas.rules import load_rules
from streams import counters
from streams.clickhouse import ClickHouse, connect, migrate
from streams.counters import messages_handled
from streams.embedded import embedded_stack
from streams.settings import Settings
from streams.sink import ClickHouseSink
from streams.topics import contract_topics, ensure_topics

#: the span of generated history the demo replays as if live
HISTORY = timedelta(days=120)
#: the rules' max_event_age in the demo: the whole history, and a month for the run itself
DEMO_MAX_EVENT_AGE = HISTORY + timedelta(days=30)
#: the rule whose coupon the synthetic shoppers answer (ecrm/dev/traffic.py CouponResponse)
RESPONDING_RULE = "abandoned-cart"
#: the response model's defaults: the chance a shopper comes back for an abandoned cart on
#: their own, and what the coupon adds to it
COMEBACK = 0.10
COUPON_LIFT = 0.20


def run_demo(
    settings: Settings,
    *,
    customers: int,
    sessions: int,
    workers: int = 1,
    serve: bool = False,
    comeback: float = COMEBACK,
    lift: float = COUPON_LIFT,
    keep: bool = False,
) -> int:
    """Run the demo in a temporary folder, removed afterwards unless `keep` (then `ecrm sql`
    run here reads its ClickHouse: ecrm/running.py)."""
    data_dir = Path(tempfile.mkdtemp(prefix="ecrm-demo-"))
    try:
        return _run_demo(settings, data_dir, customers, sessions, workers, serve, comeback, lift)
    finally:
        _leave(settings.data_dir, data_dir, keep)


def _run_demo(
    settings: Settings,
    data_dir: Path,
    customers: int,
    sessions: int,
    workers: int,
    serve: bool,
    comeback: float,
    lift: float,
) -> int:
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
            response = _response(rules, comeback, lift)
            code = _drive(s, ch, procs, customers, sessions, response)
            if code == 0:  # the actions fired, sent through local receivers (issue 23)
                from ecrm.dev.delivery_demo import deliver_demo

                deliver_demo(s, data_dir, say)
            if serve and code == 0:
                _serve(s, ch, procs, home=settings.data_dir)
            return code
        finally:
            for proc in procs:
                stop_process(proc)
            stop.set()
            sink.join(timeout=15)
            ch.close()


def _serve(
    s: Settings, ch: ClickHouse, procs: list[subprocess.Popen[bytes]], *, home: Path
) -> None:
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
    sockets[0].listen(config.backlog)  # callers queue from now on, not refused until it runs
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
    with _reachable(s, home):
        server.run(sockets=sockets)


@contextmanager
def _reachable(s: Settings, home: Path) -> Iterator[None]:
    """While serving, the other ecrm commands reach the demo: its chdb answers their queries
    (streams/clickhouse_served.py) and HOME/ecrm.env names its services (ecrm/running.py),
    unless a stack of HOME (`ecrm up`) runs there; the ECRM_* lines reach it from anywhere."""
    from ecrm.running import owned_by_another, remove_running, write_running
    from streams.clickhouse_served import serve_queries

    env = s.as_env()
    with serve_queries(s.clickhouse_url):
        say("  the other ecrm commands (ecrm sql, ecrm profile, ecrm rules backtest …) reach it")
        if owned_by_another(home):
            say(f"  with these settings (`ecrm up` runs on {home}, so export them first):")
        else:
            written = write_running(home, env, "ecrm demo --serve")
            say(f"  from this directory as they are ({written}; `ecrm env` prints all);")
            say("  from elsewhere with these:")
        for name in _REACH:
            say(f"    {name}={env[name]}")
        try:
            yield
        finally:
            remove_running(home)


#: The settings another shell needs to reach the demo's stack (`ecrm env` prints them all).
_REACH = (
    "ECRM_KAFKA_BOOTSTRAP",
    "ECRM_REDIS_URL",
    "ECRM_CLICKHOUSE_URL",
    "ECRM_DATA_DIR",
    "ECRM_APP_ID",
    "ECRM_RULES_FILE",
    "ECRM_PARTITIONS",
)


def _leave(home: Path, data_dir: Path, keep: bool) -> None:
    """Remove the demo's folder, or keep it and point HOME/ecrm.env at its ClickHouse."""
    from ecrm.running import owned_by_another, write_kept

    if not keep:
        shutil.rmtree(data_dir, ignore_errors=True)
        return
    url = f"chdb://{data_dir / 'clickhouse'}"
    say(f"kept {data_dir} (--keep); remove it when done")
    if owned_by_another(home):
        say(f"  query it with ECRM_CLICKHOUSE_URL={url} ecrm sql …")
    else:
        kept = write_kept(home, {"ECRM_CLICKHOUSE_URL": url}, f"ecrm demo --keep kept {data_dir}")
        say(f"  `ecrm sql` run here reads its ClickHouse ({kept} says so; delete it to stop)")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _response(rules_file: Path, comeback: float, lift: float) -> CouponResponse | None:
    """The shoppers' answer to the abandoned-cart coupon, from that rule of the rules file."""
    ruleset = load_rules(rules_file)
    rule = next((r for r in ruleset.rules if r.id == RESPONDING_RULE and r.enabled), None)
    if rule is None:
        return None
    return CouponResponse.for_rule(rule, ruleset.policy, base=comeback, lift=lift)


def _drive(
    s: Settings,
    ch: ClickHouse,
    procs: list[subprocess.Popen[bytes]],
    customers: int,
    sessions: int,
    response: CouponResponse | None = None,
) -> int:
    client = s.redis()
    now = datetime.now(UTC)
    say(
        f"[2/5] started {len(procs)} worker process(es); generating traffic for {customers:,} "
        f"customers, {sessions:,} sessions over the last {HISTORY.days} days ..."
    )
    if response is not None:
        say(f"      response model: {response.describe()}")
        if not response.lift:
            say("      (--no-effect: the coupon changes nothing, so its measured uplift is noise)")
    events = list(
        synthetic_traffic(customers, sessions, start=now - HISTORY, span=HISTORY, response=response)
    )
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
    summary(s, ch, client, len(events), elapsed, HISTORY)
    client.close()
    return 0


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


def _payload(ev: StoreEvent) -> bytes:
    try:
        return ev.payload()
    except TypeError:  # a deliberately absurd number orjson will not write; json will
        return json.dumps(ev.value).encode()


def _wait_drained(client: redis.Redis, partitions: int, timeout: float = 180) -> None:
    """Until ClickHouse has caught up with the worker: its outboxes stay empty for a second
    (the worker still decides as the clock passes deadlines; the figures say as of when)."""
    deadline = time.monotonic() + timeout
    outboxes = counters.clickhouse_outboxes(partitions)
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        left = counters.stream_lengths(client, outboxes)
        if left:
            quiet_since = None
            say(f"      history to ClickHouse: {left} batches left", end="\r")
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= 1.0:
            say(" " * 60, end="\r")
            return
        time.sleep(0.2)
    left = counters.stream_lengths(client, outboxes)
    say(f"      ClickHouse is still {left} batches behind the worker; the figures below lag it")


def _chance(text: str) -> float:
    """A probability from the command line: 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 0.2)") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="embedded stack + worker + synthetic traffic + summary")
    demo.add_argument("--customers", type=int, default=3000)
    demo.add_argument("--sessions", type=int, default=12000)
    demo.add_argument("--workers", type=int, default=1)
    demo.add_argument(
        "--comeback",
        type=_chance,
        default=COMEBACK,
        help=f"chance a shopper buys an abandoned cart later without a coupon (default {COMEBACK})",
    )
    demo.add_argument(
        "--coupon-lift",
        type=_chance,
        default=COUPON_LIFT,
        help="what the abandoned-cart coupon adds to that chance "
        f"(default {COUPON_LIFT}: {COUPON_LIFT * 100:.0f} percentage points more)",
    )
    demo.add_argument(
        "--no-effect",
        action="store_true",
        help="shoppers ignore coupons (--coupon-lift 0): the measured uplift is the honest null",
    )
    demo.add_argument(
        "--serve",
        action="store_true",
        help="after the summary, keep everything running and serve the API and dashboard",
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the demo's temporary folder (its ClickHouse: `ecrm sql` here reads it)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    lift = 0.0 if args.no_effect else args.coupon_lift
    if args.comeback + lift > 1:
        raise SystemExit(f"ecrm demo: --comeback {args.comeback} + --coupon-lift {lift} exceeds 1")
    return run_demo(
        settings,
        customers=args.customers,
        sessions=args.sessions,
        workers=args.workers,
        serve=args.serve,
        comeback=args.comeback,
        lift=lift,
        keep=args.keep,
    )
