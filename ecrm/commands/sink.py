"""`ecrm sink rejects` / `ecrm sink retry [ID ...]`: the rows ClickHouse refused, each with
its reason, and their replay after a fix — idempotent, so running it twice or after a crash
lands each row once (docs/operations.md, "A bad day": rejects to replay)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from ecrm.output import render
from schemas.errors import ClickHouseError
from streams.analysis import held_by_another_process
from streams.clickhouse import connect, migrate
from streams.counters import clickhouse_outboxes
from streams.settings import Settings
from streams.sink_rejects import list_rejects, retry


def add_parser(sub: argparse._SubParsersAction) -> None:
    sink = sub.add_parser("sink", help="the ClickHouse sink: rows refused, and their replay")
    sink_sub = sink.add_subparsers(dest="sink_command", required=True)
    rejects = sink_sub.add_parser("rejects", help="rows ClickHouse refused, oldest first")
    rejects.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    rejects.add_argument("--format", default="table", choices=("table", "csv", "json"))
    replay = sink_sub.add_parser("retry", help="insert rejected rows again, after a fix")
    replay.add_argument("ids", nargs="*", metavar="ID", help="reject ids (default: all)")


def run(args: argparse.Namespace, settings: Settings, out: TextIO = sys.stdout) -> int:
    client = settings.redis()
    outboxes = clickhouse_outboxes(settings.partitions)
    try:
        if args.sink_command == "rejects":
            found = list_rejects(client, outboxes, count=max(args.limit, 0))
            out.write(render([r.as_dict() for r in found], args.format))
            return 0
        return _retry(client, settings, args.ids or None, out)
    finally:
        client.close()


def _retry(client: Any, settings: Settings, ids: list[str] | None, out: TextIO) -> int:
    url = settings.clickhouse_url
    folder = Path(url.removeprefix("chdb://"))
    if url.startswith("chdb://") and held_by_another_process(folder):
        raise ClickHouseError(
            f"the embedded ClickHouse at {str(folder)!r} is in use by another process (`ecrm up` "
            "or `ecrm demo`; chdb allows one process per folder): stop it, run `ecrm sink "
            "retry`, and start it again"
        )
    ch = connect(url)
    try:
        # a fix is often a migration: bring the schema up to date first
        migrate(ch, ttl_days=settings.clickhouse_ttl_days)
        result = retry(client, ch, clickhouse_outboxes(settings.partitions), ids=ids)
    finally:
        ch.close()
    out.write(f"replayed {len(result.replayed)} rejects ({result.replayed_rows} rows)\n")
    for reject_id, reason in result.still_refused.items():
        out.write(f"still refused {reject_id}: {reason}\n")
    return 1 if result.still_refused else 0
