"""A backtest run: a rules file replayed over ClickHouse history through the live engine's
code (agents/backtest/replay.py) with a simulated clock, tallied (report.py) beside the
measured uplift of the live decisions (uplift.py). `ecrm rules backtest` and the dashboard's
rules editor both run it here.

History is read per source topic-partition in offset order, in pages (clickhouse/backtest/
events_page.sql), and merged in the keeper's order of decision (docs/operations.md), so memory
holds a page of events plus the customers' profiles and rule states. Profiles start empty at the
start of the replay; a warm-up replays that much earlier history first, without reporting its
decisions, so F, M, segments, cooldowns and caps are already warm (docs/rules.md, "Backtest").
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from agents.backtest.history import in_decision_order
from agents.backtest.replay import Replay, ReplayStats
from agents.backtest.report import BacktestReport, Tally
from agents.backtest.uplift import Uplift, measured_uplift
from agents.profile.fold import RfmPolicy
from schemas.events import Event
from schemas.membership import Programme
from schemas.rules import RuleSet
from streams.app import INPUT_TOPICS
from streams.clickhouse import SQL_DIR, ClickHouse

PAGE_SQL = SQL_DIR / "backtest" / "events_page.sql"
SOURCES_SQL = SQL_DIR / "backtest" / "event_sources.sql"
#: the input topics in the keeper's order, under the default ECRM_TOPIC_PREFIX
DEFAULT_TOPICS = tuple(f"ecrm.{name}" for name in INPUT_TOPICS)
PAGE_ROWS = 50_000


def history(
    ch: ClickHouse,
    since: datetime,
    until: datetime,
    *,
    page_rows: int = PAGE_ROWS,
    topics: Sequence[str] | None = None,
) -> Iterator[tuple[Event, datetime | None]]:
    """Every stored event with since <= ts < until as (event, mark), in the order the live
    worker decided them (docs/operations.md, "Decision order"), a page at a time per source
    topic-partition. `topics`: the input topics in the keeper's order (default prefix)."""
    window = {"since": since, "until": until}
    sources = ch.query(SOURCES_SQL.read_text(encoding="utf-8"), window)
    per_source = max(1, page_rows // max(1, len(sources)))
    runs = {
        (s["source_topic"], int(s["source_partition"])): _source_rows(
            ch, window, s["source_topic"], int(s["source_partition"]), per_source
        )
        for s in sources
    }
    return in_decision_order(runs, topics or DEFAULT_TOPICS)


def _source_rows(
    ch: ClickHouse, window: dict[str, datetime], topic: str, partition: int, page_rows: int
) -> Iterator[dict[str, Any]]:
    sql = PAGE_SQL.read_text(encoding="utf-8")
    after = -1
    while True:
        rows = ch.query(
            sql,
            {**window, "topic": topic, "partition": partition, "after_offset": after}
            | {"rows": page_rows},
        )
        yield from rows
        if len(rows) < page_rows:
            return
        after = int(rows[-1]["source_offset"])
        # a row stored twice whose twin falls past the page's edge is not read again: the
        # fold would count it once anyway


@dataclass(frozen=True)
class BacktestRun:
    """A finished backtest: the window, the totals, the measured uplift and how fast it went."""

    source: str
    since: datetime
    until: datetime
    warm_from: datetime
    zone: ZoneInfo
    report: BacktestReport
    stats: ReplayStats
    customers: int
    uplift: list[Uplift]
    seconds: float

    @property
    def events_per_s(self) -> float:
        read = self.stats.events + self.stats.duplicates
        return read / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "rules_file": self.source,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "warm_up_from": self.warm_from.isoformat(),
            "events": self.stats.events,
            "duplicates": self.stats.duplicates,
            "customers": self.customers,
            "segment_changes": self.stats.segment_changes,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events_per_s),
            **self.report.as_json(),
            "uplift": [u.as_json() for u in self.uplift],
        }


def run_backtest(
    ch: ClickHouse,
    rules: RuleSet,
    policy: RfmPolicy,
    *,
    since: datetime,
    until: datetime,
    warm_up: timedelta | None = None,
    source: str = "",
    page_rows: int = PAGE_ROWS,
    keep_decisions: bool = False,
    consent_default: bool = True,
    programme: Programme | None = None,
    topics: Sequence[str] | None = None,
) -> tuple[BacktestRun, Replay]:
    """Replay [since - warm_up, until) and run the clock to `until`; decisions from `since` on
    are tallied (and kept in `Replay.decisions` with `keep_decisions`)."""
    warm_from = since - (warm_up or timedelta(0))
    window = rules.policy.attribution_window  # measured first: a missing view fails fast
    uplift = measured_uplift(ch, [r.id for r in rules.rules], since, until, window)
    started = time.perf_counter()
    tally = Tally(rules)
    replay = Replay(
        rules,
        policy,
        report_from=since,
        tally=tally,
        keep_decisions=keep_decisions,
        consent_default=consent_default,
        programme=programme,
    )
    replay.feed_decided(history(ch, warm_from, until, page_rows=page_rows, topics=topics))
    replay.advance(until)
    seconds = time.perf_counter() - started
    run = BacktestRun(
        source=source,
        since=since,
        until=until,
        warm_from=warm_from,
        zone=rules.policy.zone,
        report=tally.report(),
        stats=replay.stats,
        customers=len(replay.profiles),
        uplift=uplift,
        seconds=seconds,
    )
    return run, replay
