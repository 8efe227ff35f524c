"""`ecrm sql NAME [--param k=v ...] [--format table|csv|json]`: an analysts' named query
(clickhouse/queries/NAME.sql) against ECRM_CLICKHOUSE_URL, embedded chdb or a server.

Embedded ClickHouse allows one process per folder: while `ecrm up` (or `ecrm demo`) runs it
owns the folder, so `ecrm sql` on it is refused with what to do instead.
"""

from __future__ import annotations

import fcntl
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from ecrm.sql_output import Format, render
from schemas.errors import ClickHouseError
from streams.clickhouse import ClickHouse, connect, migrate
from streams.clickhouse_readonly import connect_read_only
from streams.named_queries import NamedQueryError, named_queries, named_query
from streams.settings import Settings


def parse_params(pairs: Sequence[str]) -> dict[str, str]:
    """``["since=2024-05-01", "limit=10"]`` -> ``{"since": "2024-05-01", "limit": "10"}``."""
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise NamedQueryError(f"--param {pair!r}: write NAME=VALUE, e.g. since=2024-05-01")
        if name in params:
            raise NamedQueryError(f"--param {name} given twice")
        params[name] = value
    return params


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
    finally:
        ch.close()
    out.write(render(rows, fmt))
    return 0


def open_for_analysis(url: str) -> ClickHouse:
    """ClickHouse at url. A server is opened read-only (no DDL: analysts may not run any).
    Embedded: the folder must exist and no other process may hold it; its schema is brought
    up to date, so the analysts' views exist even in a folder an older ecrm made."""
    if not url.startswith("chdb://"):
        return connect_read_only(url)
    path = Path(url.removeprefix("chdb://"))
    if not path.is_dir():
        raise ClickHouseError(
            f"no embedded ClickHouse at {str(path)!r} (ECRM_CLICKHOUSE_URL={url}); "
            "`ecrm up` and `ecrm demo` create it, or point ECRM_CLICKHOUSE_URL elsewhere"
        )
    if held_by_another_process(path):
        raise ClickHouseError(
            f"the embedded ClickHouse at {str(path)!r} is in use by another process: "
            "`ecrm up` and `ecrm demo` hold it while they run, and chdb allows one process "
            "per folder. Stop that process and run `ecrm sql` again, or run ClickHouse as a "
            "server (docker compose) and set ECRM_CLICKHOUSE_URL=http://analyst:...@host:8123/ecrm"
        )
    ch = connect(url)
    migrate(ch)
    return ch


def held_by_another_process(path: Path) -> bool:
    """Whether a running ClickHouse (chdb in `ecrm up`, or a server) holds the data folder:
    it keeps an exclusive flock on the folder's `status` file while it runs."""
    status = path / "status"
    if not status.is_file():
        return False
    with status.open("rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False
