"""Outbox JSON values become the typed values a native insert sends, per column type."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.clickhouse import rows_json
from streams.clickhouse_columns import BadValue, Column, block, converter

COLUMNS = {
    c.name: c
    for c in (
        Column("event_id", "String"),
        Column("ts", "DateTime64(3, 'UTC')"),
        Column("amount", "Decimal(18, 2)"),
        Column("qty", "UInt32"),
        Column("items", "String"),
        Column("shop_id", "LowCardinality(String)"),
        Column("last_order_at", "Nullable(DateTime64(3, 'UTC'))"),
        Column("tags", "Array(String)"),
        Column("written_at", "DateTime64(3, 'UTC')", has_default=True),
    )
}


def by_row(columns: list[list[object]]) -> list[list[object]]:
    return [list(row) for row in zip(*columns, strict=True)]


def test_an_outbox_row_comes_back_typed_in_table_column_order() -> None:
    shanghai = timezone(timedelta(hours=8))
    row = {
        "tags": ["vip"],
        "event_id": "e1",
        "ts": datetime(2024, 5, 1, 8, 0, tzinfo=shanghai),
        "amount": Decimal("19.90"),
        "items": [{"sku": "tea", "qty": 1}],
        "last_order_at": None,
        "qty": 2,
    }
    [stored] = orjson.loads(rows_json([row]))  # what the sink reads back from Redis
    names, _, columns = block([stored], COLUMNS, "events")
    assert names == ["event_id", "ts", "amount", "qty", "items", "last_order_at", "tags"]
    assert by_row(columns) == [
        [
            "e1",
            datetime(2024, 5, 1, 0, 0, tzinfo=UTC),
            Decimal("19.90"),
            2,
            '[{"sku":"tea","qty":1}]',
            None,
            ["vip"],
        ]
    ]


def test_a_column_the_table_lacks_is_refused_by_name() -> None:
    with pytest.raises(BadValue, match="no column 'colour'"):
        block([{"event_id": "e1", "colour": "red"}], COLUMNS, "events")


def test_a_value_the_column_cannot_hold_names_the_column_and_the_value() -> None:
    rows = [{"qty": 1}, {"qty": 2**32}, {"qty": 3}]
    with pytest.raises(BadValue, match=r"events\.qty = 4294967296: .*out of range for UInt32"):
        block(rows, COLUMNS, "events")


def test_a_value_the_column_cannot_parse_names_the_column() -> None:
    with pytest.raises(BadValue, match=r"events\.amount = 'lots'"):
        block([{"amount": "lots"}], COLUMNS, "events")
    with pytest.raises(BadValue, match=r"events\.ts"):
        block([{"ts": "yesterday"}], COLUMNS, "events")


def test_null_in_a_column_that_is_not_nullable_is_the_type_default_as_json_input_was() -> None:
    names, _, columns = block([{"qty": None, "event_id": None, "tags": None}], COLUMNS, "events")
    assert by_row(columns) == [["", 0, []]]
    assert names == ["event_id", "qty", "tags"]


def test_a_column_some_rows_lack_gets_its_default_expression_or_its_zero_value() -> None:
    rows = [{"event_id": "e1", "qty": 3, "written_at": "2024-01-01T00:00:00Z"}, {"event_id": "e2"}]
    names, types, columns = block(rows, COLUMNS, "events")
    assert names == ["event_id", "qty", "written_at"]
    # written_at has a DEFAULT: NULL in a Nullable column makes ClickHouse compute it
    assert types == ["String", "UInt32", "Nullable(DateTime64(3, 'UTC'))"]
    assert by_row(columns) == [["e1", 3, datetime(2024, 1, 1, tzinfo=UTC)], ["e2", 0, None]]


def test_a_time_without_an_offset_is_utc_and_dates_parse() -> None:
    assert converter("DateTime64(3, 'UTC')")("2024-01-02 03:04:05") == datetime(
        2024, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    assert converter("Date")("2024-01-02T10:00:00Z") == date(2024, 1, 2)


@given(st.decimals(min_value=-(10**15), max_value=10**15, places=2, allow_nan=False))
def test_money_round_trips_through_the_outbox_exactly(amount: Decimal) -> None:
    [stored] = orjson.loads(rows_json([{"amount": amount}]))
    assert converter("Decimal(18, 2)")(stored["amount"]) == amount


@given(st.datetimes(datetime(1900, 1, 1), datetime(2299, 1, 1), timezones=st.just(UTC)))
def test_times_round_trip_through_the_outbox_exactly(moment: datetime) -> None:
    [stored] = orjson.loads(rows_json([{"ts": moment}]))
    assert converter("DateTime64(3, 'UTC')")(stored["ts"]) == moment


@pytest.mark.parametrize(
    ("type_name", "value"),
    [
        ("UInt32", 2**32),
        ("UInt32", -1),
        ("Int8", 128),
        ("Decimal(18, 2)", "10000000000000000"),
        ("Nullable(Decimal(18, 2))", "-1e17"),
        ("Date", "1969-12-31"),
        ("DateTime64(3, 'UTC')", "1899-12-31T23:59:59+00:00"),
        ("Array(UInt8)", [1, 256]),
    ],
)
def test_a_value_past_its_column_range_is_refused_before_anything_is_sent(
    type_name: str, value: object
) -> None:
    with pytest.raises(ValueError, match="out of range"):
        converter(type_name)(value)


def test_the_largest_values_a_column_holds_pass() -> None:
    assert converter("UInt32")(2**32 - 1) == 2**32 - 1
    assert converter("Decimal(18, 2)")("9999999999999999.99") == Decimal("9999999999999999.99")
    assert converter("Decimal64(4)")("-99999999999999.9999") == Decimal("-99999999999999.9999")
