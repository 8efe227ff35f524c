"""`ecrm audience export`: the customers a where-clause over their profiles, or a named query,
selects (圈选), written as CSV — for a look, a spreadsheet, or `ecrm campaign send --audience`.

A where-clause runs against `profiles_latest` (clickhouse/audience/profiles.sql) only after
schemas/audience_where.py has checked it token by token, and the statement runs with
`readonly = 1`; a named query (clickhouse/queries/NAME.sql) must return a `customer_id` column.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from ecrm.sql_cmd import open_for_analysis, parse_params
from ecrm.sql_output import cell_text
from schemas.audience_where import PROFILE_COLUMNS, checked_where
from schemas.errors import AudienceError
from streams.clickhouse import SQL_DIR, ClickHouse
from streams.named_queries import named_query
from streams.settings import Settings

AUDIENCE_SQL = SQL_DIR / "audience" / "profiles.sql"
_MARKER = "(WHERE_CLAUSE)"


@dataclass(frozen=True)
class Audience:
    """The customers selected, one row each (first occurrence kept), and how they were."""

    rows: list[dict[str, Any]]
    how: str
    columns: tuple[str, ...] = PROFILE_COLUMNS


def where_sql(clause: str) -> str:
    """The audience statement with the checked clause in place (AudienceError if refused)."""
    sql = AUDIENCE_SQL.read_text(encoding="utf-8")
    assert sql.count(_MARKER) == 1, f"{AUDIENCE_SQL} must hold {_MARKER} once"
    return sql.replace(_MARKER, f"({checked_where(clause)})")


def select_audience(
    ch: ClickHouse,
    *,
    where: str | None = None,
    query: str | None = None,
    params: Sequence[str] = (),
    now: datetime | None = None,
) -> Audience:
    """Run the where-clause over the profiles, or the named query with its parameters."""
    now = now or datetime.now(UTC)
    if (where is None) == (query is None):
        raise AudienceError("select customers with --where CONDITION or --query NAME (one)")
    if where is not None:
        if params:
            raise AudienceError("--param goes with --query, not --where")
        rows = ch.query(where_sql(where), {"now": now})
        return Audience(unique_customers(rows), f"--where {where}", PROFILE_COLUMNS)
    assert query is not None
    named = named_query(query)
    rows = ch.query(named.sql, named.bind(parse_params(params), now=now))
    if rows and "customer_id" not in rows[0]:
        raise AudienceError(
            f"query {query} returns no customer_id column (it returns {', '.join(rows[0])}); "
            "an audience query returns one row per customer with its customer_id"
        )
    shown = " ".join([f"--query {query}", *(f"--param {p}" for p in params)])
    columns = tuple(rows[0]) if rows else ("customer_id",)
    return Audience(unique_customers(rows), shown, columns)


def unique_customers(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each customer once, at their first row; a row without a customer id is refused."""
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for row in rows:
        customer = row.get("customer_id")
        if customer is None or str(customer) == "":
            raise AudienceError(f"a selected row has no customer_id: {dict(row)}")
        if str(customer) not in seen:
            seen.add(str(customer))
            out.append(dict(row))
    return out


def write_csv(audience: Audience, out: TextIO) -> int:
    """The audience as CSV: a header, then one line per customer (NULL as an empty cell,
    times in UTC and tags as a JSON list, as `ecrm sql --format csv` writes them)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(audience.columns)
    for row in audience.rows:
        writer.writerow([cell_text(row.get(c), null="") for c in audience.columns])
    return len(audience.rows)


def run_audience_export(
    settings: Settings,
    *,
    where: str | None,
    query: str | None,
    params: Sequence[str],
    out_path: Path | None,
    report: TextIO = sys.stderr,
) -> int:
    """`ecrm audience export`: the CSV to `out_path` (stdout without one), a summary line to
    `report`."""
    if where is not None:
        checked_where(where)  # a bad clause is refused before ClickHouse is opened
    ch = open_for_analysis(settings.clickhouse_url)
    try:
        audience = select_audience(ch, where=where, query=query, params=params)
    finally:
        ch.close()
    if out_path is None:
        write_csv(audience, sys.stdout)
    else:
        with out_path.open("w", encoding="utf-8", newline="") as handle:
            write_csv(audience, handle)
    where_to = "stdout" if out_path is None else str(out_path)
    report.write(f"{len(audience.rows)} customers selected ({audience.how}) -> {where_to}\n")
    return 0
