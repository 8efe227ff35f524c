"""One customer's rows in ClickHouse: listed for an access request, deleted for an erasure.

Which tables hold customers is read from ClickHouse itself (every table, not view, with a
`customer_id` column), so a table added by a later migration is covered without a change
here. Deletion is ClickHouse's lightweight `DELETE` (rows are masked at once and dropped at
the next merge); views over these tables follow by themselves. The audit row written after
it (`erasures`, clickhouse/017) names no customer: the erasure id, when, by whom, how many rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from streams.clickhouse import ClickHouse, sql_string

_CUSTOMER_TABLES = """
SELECT c.table AS name
FROM system.columns AS c
INNER JOIN system.tables AS t ON t.database = c.database AND t.name = c.table
WHERE c.database = currentDatabase() AND c.name = 'customer_id' AND t.engine LIKE '%MergeTree'
ORDER BY name
"""


def customer_tables(ch: ClickHouse) -> list[str]:
    """Every table (not view) of ecrm's database with a `customer_id` column."""
    return [row["name"] for row in ch.query(_CUSTOMER_TABLES)]


def customer_rows(ch: ClickHouse, customer_id: str) -> dict[str, list[dict[str, Any]]]:
    """table -> the customer's rows in it (an access request, `ecrm customer export`)."""
    return {
        table: ch.query(
            f"SELECT * FROM {table} WHERE customer_id = {{cid:String}}",  # noqa: S608 - a name ClickHouse listed
            {"cid": customer_id},
        )
        for table in customer_tables(ch)
    }


def delete_customer(ch: ClickHouse, customer_id: str) -> dict[str, int]:
    """Delete the customer's rows from every customer table; table -> rows deleted."""
    deleted: dict[str, int] = {}
    where = f"customer_id = {sql_string(customer_id)}"
    for table in customer_tables(ch):
        count = f"SELECT count() AS n FROM {table} WHERE {where}"  # noqa: S608 - quoted above
        n = int(ch.query(count)[0]["n"])
        if n:
            ch.execute(f"DELETE FROM {table} WHERE {where}")  # noqa: S608 - quoted above
        deleted[table] = n
    return deleted


def audit_row(
    erasure_id: str, requested_at: datetime, done_at: datetime, operator: str, rows: dict[str, int]
) -> dict[str, Any]:
    """The `erasures` row of one erasure: nothing in it identifies the customer."""
    return {
        "erasure_id": erasure_id,
        "requested_at": requested_at,
        "done_at": done_at,
        "operator": operator,
        "rows_deleted": sum(rows.values()),
        "tables": rows,
    }
