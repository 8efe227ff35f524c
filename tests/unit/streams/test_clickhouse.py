"""The pure parts of the ClickHouse adapter: SQL files, parameter escaping, outbox entries."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from schemas.errors import ClickHouseError
from streams.clickhouse import (
    SQL_DIR,
    first_line,
    load_query,
    migration_files,
    rows_json,
    split_statements,
    sql_string,
)
from streams.outbox import MalformedEntry, entry_token, outbox_entry, parse_entry


def test_statements_split_on_semicolons_outside_quotes_and_comments() -> None:
    # a statement keeps the comments before it; a chunk of nothing but comments is dropped
    sql = """
    -- a comment; not a split
    CREATE TABLE a (s String DEFAULT 'x;y') ENGINE = Memory;
    /* block; comment */
    INSERT INTO a VALUES ('it\\'s; fine'), ('a '' quote;');
    SELECT "col;umn", `odd;name` FROM a ;
    -- trailing comment only;
    """
    assert split_statements(sql) == [
        "-- a comment; not a split\n    CREATE TABLE a (s String DEFAULT 'x;y') ENGINE = Memory",
        "/* block; comment */\n    INSERT INTO a VALUES ('it\\'s; fine'), ('a '' quote;')",
        'SELECT "col;umn", `odd;name` FROM a',
    ]


def test_a_statement_without_a_final_semicolon_is_kept() -> None:
    assert split_statements("SELECT 1;\nSELECT 2\n") == ["SELECT 1", "SELECT 2"]


def test_an_unterminated_string_is_an_error() -> None:
    with pytest.raises(ClickHouseError, match="unterminated"):
        split_statements("SELECT 'oops")


def test_every_shipped_migration_is_one_idempotent_statement() -> None:
    files = migration_files(SQL_DIR)
    assert [path.name for _, path in files][:2] == ["001_events.sql", "002_segment_changes.sql"]
    for _, path in files:
        statements = split_statements(path.read_text())
        assert len(statements) == 1, path.name
        assert "IF NOT EXISTS" in statements[0] or "IF EXISTS" in statements[0]


def test_migrations_are_ordered_by_version_and_a_shared_version_is_refused(tmp_path: Path) -> None:
    for name in ["010_late.sql", "002_b.sql", "001_a.sql", "notes.sql"]:
        (tmp_path / name).write_text("SELECT 1")
    assert [(v, p.name) for v, p in migration_files(tmp_path)] == [
        (1, "001_a.sql"),
        (2, "002_b.sql"),
        (10, "010_late.sql"),
    ]
    (tmp_path / "002_c.sql").write_text("SELECT 2")
    with pytest.raises(ClickHouseError, match="share a version"):
        migration_files(tmp_path)


def test_named_query_loads_and_documents_its_parameters() -> None:
    sql = load_query("gmv_by_segment")
    header = sql.split("WITH", 1)[0]
    assert "{since:DateTime64(3, 'UTC')}" in header and "{until:" in header
    assert "'prospect'" in sql


def test_an_unknown_or_odd_query_name_is_refused_with_the_known_names() -> None:
    with pytest.raises(ClickHouseError, match="gmv_by_segment"):
        load_query("no_such_query")
    with pytest.raises(ClickHouseError, match="bad query name"):
        load_query("../001_events")


def test_sql_string_escapes_quotes_and_backslashes() -> None:
    assert sql_string("it's a\\b") == "'it\\'s a\\\\b'"


def test_error_messages_name_the_first_line_that_is_not_a_comment() -> None:
    assert first_line("-- why\n\n  CREATE TABLE x\n(a UInt8)") == "CREATE TABLE x"


def test_rows_serialize_money_as_strings_and_time_with_its_offset() -> None:
    row = {
        "amount": Decimal("19.90"),
        "ts": datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        "items": [{"sku": "a", "qty": 1}],
    }
    assert orjson.loads(rows_json([row])) == [
        {
            "amount": "19.90",
            "ts": "2024-01-02T03:04:05.678000+00:00",
            "items": [{"sku": "a", "qty": 1}],
        }
    ]


def test_an_outbox_entry_round_trips() -> None:
    fields = outbox_entry("events", [{"event_id": "e1", "amount": Decimal("1.00")}])
    assert parse_entry({k.encode(): v for k, v in fields.items()}) == (
        "events",
        [{"event_id": "e1", "amount": "1.00"}],
    )


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({b"rows": b"[]"}, "lack"),
        ({b"table": b"events", b"rows": b"{not json"}, "not JSON"),
        ({b"table": b"events", b"rows": b'{"a": 1}'}, "array of objects"),
        ({b"table": b"events", b"rows": b"[1, 2]"}, "array of objects"),
    ],
)
def test_a_malformed_outbox_entry_says_what_is_wrong(
    fields: dict[bytes, bytes], reason: str
) -> None:
    with pytest.raises(MalformedEntry, match=reason):
        parse_entry(fields)


def test_the_insert_token_is_the_stream_and_entry_id() -> None:
    assert entry_token("ecrm:outbox", "1700000000000-3") == "ecrm:outbox/1700000000000-3"
