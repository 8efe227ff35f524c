"""Audience selection (圈选): the customers a checked where-clause over their profiles, or a
named query, selects — shared by `ecrm audience export`, `ecrm campaign send` and the API.

A where-clause runs against `profiles_latest` (clickhouse/audience/profiles.sql) only after
schemas/audience_where.py has checked it token by token, and the statement runs with
`readonly = 1`; a named query (clickhouse/queries/NAME.sql) must return a `customer_id` column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.audience_where import PROFILE_COLUMNS, checked_where
from schemas.errors import AudienceError
from streams.analysis import parse_params
from streams.clickhouse import SQL_DIR, ClickHouse
from streams.named_queries import named_query

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
