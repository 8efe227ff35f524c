"""A seller's Taobao export, imported into a running pipeline, becomes the same profiles a
batch computation over ClickHouse gives; importing it again changes nothing; and no
buyer name, phone, receiver or address is left in clear in Redis or ClickHouse."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from agents.profile.reads import read_profile
from ecrm.commands.imports import import_orders
from schemas.pii import customer_id_for
from streams import keyspace
from streams.clickhouse import ClickHouse
from streams.settings import Settings
from streams.sink import ClickHouseSink
from tests.fixtures.taobao_export import write_export
from tests.integration.conftest import consumed, stats, wait_for
from tests.integration.test_pipeline import sink_all

pytestmark = pytest.mark.integration

SECRET = "integration-secret-0123456789"
RFM_SQL = (Path(__file__).parent / "rfm_from_orders.sql").read_text(encoding="utf-8")


def test_an_imported_export_builds_profiles_that_batch_sql_agrees_with_and_reimporting_adds_nothing(
    settings: Settings, start_worker: Any, rds: redis.Redis, tmp_path: Path
) -> None:
    s = settings.model_copy(update={"pii_secret": SecretStr(SECRET)})
    path = tmp_path / "ExportOrderList202606.csv"
    truth = write_export(path, 4000, seed=11, encoding="gbk")
    worker = start_worker(s)

    report = import_orders(s, path)
    assert (report.rows, report.imported, report.rejected) == (
        truth.rows,
        truth.imported,
        truth.rejected,
    )
    assert report.skipped == truth.skipped and report.undelivered == 0
    assert report.events == truth.paid_events + truth.refund_events
    wait_for(lambda: consumed(rds) >= report.events, timeout=90, what=f"{report.events} events")
    applied = stats(rds)["events"]
    assert applied == report.events - truth.repeated
    assert stats(rds).get("dead_letters", 0) == 0

    ch = sink_all(s)
    live = profiles(s, rds)
    batch = batch_rfm(ch, s)
    assert len(live) > 1000
    assert set(batch) <= set(live)
    for cid, profile in live.items():
        assert (profile.frequency, profile.monetary) == batch.get(cid, (0, 0)), cid
    rows_before = ch.query("SELECT count() AS n FROM events")[0]["n"]
    assert rows_before == applied

    # the same file again, through the command a seller types: nothing changes
    second = subprocess.run(
        [sys.executable, "-m", "ecrm", "import", "orders", str(path), "--no-progress"],
        env={**os.environ, **s.as_env(), "ECRM_PII_SECRET": SECRET},
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"imported {truth.imported:>10,}" in second.stdout
    wait_for(lambda: consumed(rds) >= 2 * report.events, timeout=90, what="the second import")
    assert stats(rds)["events"] == applied
    drain(s, ch)
    assert ch.query("SELECT count() AS n FROM events")[0]["n"] == rows_before
    assert batch_rfm(ch, s) == batch
    assert {cid: (p.frequency, p.monetary) for cid, p in profiles(s, rds).items()} == {
        cid: (p.frequency, p.monetary) for cid, p in live.items()
    }

    # `ecrm profile --buyer` finds a buyer by the name the seller knows
    nick = max(truth.buyers, key=lambda n: batch.get(customer_id_for(n, SECRET.encode()), (0,)))
    shown = subprocess.run(
        [sys.executable, "-m", "ecrm", "profile", "--buyer", nick, "--json"],
        env={**os.environ, **s.as_env(), "ECRM_PII_SECRET": SECRET},
        capture_output=True,
        text=True,
        check=True,
    )
    view = json.loads(shown.stdout)
    assert view["customer_id"] == customer_id_for(nick, SECRET.encode())
    assert view["frequency"] == batch[view["customer_id"]][0] >= 2

    # personal data: nowhere in clear
    personal = truth.personal_values()
    stored = clickhouse_text(ch)
    assert "phone_masked" in stored and "buyer_masked" in stored  # the scan reads extra too
    assert not found_in(stored, personal)
    assert not found_in(redis_text(rds), personal)
    logs = worker.log_path.read_text(errors="replace") + second.stdout + second.stderr
    assert not found_in(logs + report.rejects_path.read_text(encoding="utf-8"), personal)
    ch.close()


def profiles(s: Settings, rds: redis.Redis) -> dict[str, Any]:
    now = datetime.now(UTC)
    ids = [
        keyspace.customer_of(k) for k in rds.scan_iter(match=keyspace.PROFILES_PATTERN, count=1000)
    ]
    return {cid: read_profile(s, cid, now) for cid in ids}


def batch_rfm(ch: ClickHouse, s: Settings) -> dict[str, tuple[int, Any]]:
    now = datetime.now(UTC)
    since = now - timedelta(days=s.rfm_window_days)
    rows = ch.query(RFM_SQL, {"since": since, "until": now + timedelta(days=1)})
    return {r["customer_id"]: (r["frequency"], r["monetary"]) for r in rows}


def drain(s: Settings, ch: ClickHouse) -> None:
    sink = ClickHouseSink.from_settings(s, ch, claim_idle_ms=1000)
    wait_for(lambda: (sink.drain_once(block_ms=100), sink.pending() == 0)[1], what="drained")


def redis_text(rds: redis.Redis) -> str:
    """Every key and every value in the database, as text."""
    out = io.StringIO()
    for key in rds.scan_iter(count=1000):
        out.write(key.decode(errors="replace") + "\n")
        kind = rds.type(key).decode()
        if kind == "string":
            values: Any = [rds.get(key)]
        elif kind == "hash":
            values = [x for kv in rds.hgetall(key).items() for x in kv]
        elif kind == "list":
            values = rds.lrange(key, 0, -1)
        elif kind == "set":
            values = list(rds.smembers(key))
        elif kind == "zset":
            values = [m for m, _ in rds.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [str(fields).encode() for _, fields in rds.xrange(key)]
        else:
            raise AssertionError(f"{key!r} is a {kind}: teach this scan to read it")
        for value in values:
            out.write((value or b"").decode(errors="replace") + "\n")
    return out.getvalue()


def clickhouse_text(ch: ClickHouse) -> str:
    """Every column of every table, as text."""
    tables = ch.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND engine NOT LIKE '%View'"
    )
    out = io.StringIO()
    for table in tables:
        for row in ch.query(f"SELECT * FROM {table['name']}"):  # noqa: S608 - system.tables
            out.write("\t".join(str(v) for v in row.values()) + "\n")
    assert "events" in {t["name"] for t in tables}
    return out.getvalue()


def found_in(text: str, values: set[str]) -> set[str]:
    """Which of `values` occur in `text` (phones by their digits, others by their start)."""
    hits = set(re.findall(r"(?=(\d{11}))", text)) & values
    by_head: dict[str, list[str]] = defaultdict(list)
    for value in values:
        if not value.isdigit():
            by_head[value[:2]].append(value)
    for head, candidates in by_head.items():
        at = text.find(head)
        while at != -1:
            hits.update(v for v in candidates if text.startswith(v, at))
            at = text.find(head, at + 1)
    return hits


def test_the_scan_finds_what_it_looks_for() -> None:
    text = "x 13812345678 y 王芳 z 小鱼儿_00064"
    assert found_in(text, {"13812345678", "王芳", "小鱼儿_00064", "李娜"}) == {
        "13812345678",
        "王芳",
        "小鱼儿_00064",
    }
