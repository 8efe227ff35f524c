"""`ecrm sql NAME [--param k=v ...] [--format table|csv|json]`: an analysts' named query
(clickhouse/queries/NAME.sql) against ECRM_CLICKHOUSE_URL, embedded chdb or a server.

Embedded ClickHouse allows one process per folder: while `ecrm up` (or `ecrm demo`) runs it
owns the folder, so `ecrm sql` on it is refused with what to do instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

from ecrm.output import Format, render
from streams.analysis import open_for_analysis, parse_params
from streams.named_queries import NamedQueryError, named_queries, named_query
from streams.settings import Settings


def list_text() -> str:
    """Every named query with the one line saying what it answers."""
    queries = named_queries()
    width = max(len(q.name) for q in queries)
    return "".join(f"{q.name.ljust(width)}  {q.summary}\n" for q in queries)


def run_sql(
    settings: Settings,
    name: str | None,
    param_pairs: Sequence[str],
    fmt: Format,
    *,
    out: TextIO = sys.stdout,
) -> int:
    """Print the named query's result in the format."""
    if not name:
        raise NamedQueryError("name a query (ecrm sql NAME), or list them: ecrm sql --list")
    query = named_query(name)
    params = query.bind(parse_params(param_pairs), now=datetime.now(UTC))
    ch = open_for_analysis(settings.clickhouse_url)
    try:
        rows = ch.query(query.sql, params)
        latest = ch.query(LATEST_EVENT)
    finally:
        ch.close()
    out.write(render(rows, fmt))
    print(as_of_line(datetime.now(UTC), latest[0]["at"] if latest else None), file=sys.stderr)
    return 0


#: how far the history reaches in event time: the latest event stored
LATEST_EVENT = "SELECT if(count() = 0, NULL, max(ts)) AS at FROM events"


def as_of_line(read_at: datetime, latest: datetime | None) -> str:
    """What a result is as of (on stderr, so the rows stay clean for a pipe): when it was
    read, and the event time the data reaches."""
    reach = "no events yet" if latest is None else f"data up to {_utc(latest)} (latest event time)"
    return f"as of {_utc(read_at)}; {reach}"


def _utc(at: datetime) -> str:
    aware = at if at.tzinfo else at.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def add_parser(sub: argparse._SubParsersAction) -> None:
    sql = sub.add_parser("sql", help="run an analysts' named query (docs/clickhouse.md)")
    sql.add_argument("name", nargs="?", help="the query: clickhouse/queries/NAME.sql")
    sql.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="a query parameter"
    )
    sql.add_argument("--format", default="table", choices=("table", "csv", "json"))
    sql.add_argument("--list", action="store_true", help="list the queries and what they answer")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.list:
        print(list_text(), end="")
        return 0
    return run_sql(settings, args.name, args.param, args.format)
