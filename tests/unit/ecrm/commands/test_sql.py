"""`ecrm sql` without ClickHouse: named-query headers, typed parameters, output formats."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

from ecrm.commands.sql import list_text
from ecrm.output import cell_text, render
from schemas.errors import ClickHouseError
from streams.analysis import parse_params
from streams.clickhouse_readonly import server_params
from streams.named_queries import (
    NamedQueryError,
    QueryParam,
    named_queries,
    parse_named_query,
    typed_value,
)

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)

SQL = """-- top_things: which things are on top.
--
-- Parameters
--   {since:DateTime64(3, 'UTC')}  from this instant
--   {limit:UInt32}                how many (default 20)
SELECT thing FROM things
WHERE ts >= {since:DateTime64(3, 'UTC')} AND tag = {tag:String}  -- {ignored:UInt8} in a comment
LIMIT {limit:UInt32}
"""


def test_a_query_header_gives_its_summary_and_documented_parameters() -> None:
    query = parse_named_query("top_things", SQL)
    assert query.summary == "which things are on top."
    assert [(p.name, p.type, p.default) for p in query.params] == [
        ("since", "DateTime64(3, 'UTC')", None),
        ("tag", "String", None),
        ("limit", "UInt32", "20"),
    ]
    assert query.params[0].description == "from this instant"
    assert query.params[2].description == "how many"


def test_a_parameter_used_with_two_types_is_refused() -> None:
    with pytest.raises(NamedQueryError, match="both"):
        parse_named_query("x", "SELECT {a:UInt8}, {a:String}")


def test_binding_types_the_text_and_fills_defaults() -> None:
    query = parse_named_query("top_things", SQL)
    assert query.bind({"since": "2024-05-01", "tag": "tea"}, NOW) == {
        "since": datetime(2024, 5, 1, tzinfo=UTC),
        "tag": "tea",
        "limit": 20,
    }


def test_a_missing_parameter_names_it_and_lists_every_parameter() -> None:
    query = parse_named_query("top_things", SQL)
    with pytest.raises(NamedQueryError) as caught:
        query.bind({"since": "2024-05-01"}, NOW)
    message = str(caught.value)
    assert "top_things needs --param tag=..." in message
    assert "{since:DateTime64(3, 'UTC')}" in message and "from this instant" in message
    assert "{limit:UInt32}, default 20" in message


def test_an_unknown_parameter_is_refused_rather_than_ignored() -> None:
    query = parse_named_query("top_things", SQL)
    with pytest.raises(NamedQueryError, match="has no parameter colour"):
        query.bind({"since": "2024-05-01", "tag": "t", "colour": "red"}, NOW)


@pytest.mark.parametrize(
    ("ch_type", "text", "value"),
    [
        ("DateTime64(3, 'UTC')", "2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("DateTime64(3, 'UTC')", "2024-05-01 08:30", datetime(2024, 5, 1, 8, 30, tzinfo=UTC)),
        (
            "DateTime",
            "2024-05-01T08:00:00+08:00",
            datetime(2024, 5, 1, 8, tzinfo=timezone(timedelta(hours=8))),
        ),
        ("DateTime64(3, 'UTC')", "now", NOW),
        ("DateTime64(3, 'UTC')", "-30d", NOW - timedelta(days=30)),
        ("DateTime64(3, 'UTC')", "-12h", NOW - timedelta(hours=12)),
        ("Date", "2024-02-29", date(2024, 2, 29)),
        ("Date", "today", date(2024, 5, 10)),
        ("Date", "-1w", date(2024, 5, 3)),
        ("UInt32", "72", 72),
        ("Int64", "-5", -5),
        ("Float64", "0.25", 0.25),
        ("Decimal(18, 2)", "99.90", Decimal("99.90")),
        ("Bool", "true", True),
        ("String", " tea ", "tea"),
        ("LowCardinality(String)", "sms", "sms"),
        ("Nullable(UInt8)", "NULL", None),
        ("Array(String)", "a,b", ["a", "b"]),
        ("Array(UInt8)", "1, 2", [1, 2]),
    ],
)
def test_parameters_are_typed_from_their_clickhouse_type(
    ch_type: str, text: str, value: object
) -> None:
    assert typed_value(QueryParam("p", ch_type), text, NOW) == value


@pytest.mark.parametrize(
    ("ch_type", "text", "hint"),
    [
        ("DateTime64(3, 'UTC')", "yesterday", "2024-05-01"),
        ("Date", "2024-13-01", "today"),
        ("UInt32", "-1", "0 or more"),
        ("UInt32", "ten", "whole number"),
        ("Decimal(18, 2)", "NaN", "Decimal"),
        ("Bool", "maybe", "Bool"),
    ],
)
def test_a_malformed_value_says_which_parameter_and_what_it_should_be(
    ch_type: str, text: str, hint: str
) -> None:
    with pytest.raises(NamedQueryError, match=f"--param p={text!r}") as caught:
        typed_value(QueryParam("p", ch_type), text, NOW)
    assert hint in str(caught.value)


def test_params_are_name_equals_value_split_at_the_first_equals() -> None:
    assert parse_params(["since=2024-05-01", "where=a=b", "empty="]) == {
        "since": "2024-05-01",
        "where": "a=b",
        "empty": "",
    }
    with pytest.raises(NamedQueryError, match="NAME=VALUE"):
        parse_params(["since"])
    with pytest.raises(NamedQueryError, match="given twice"):
        parse_params(["a=1", "a=2"])


def test_every_shipped_query_says_what_it_answers_and_documents_each_parameter() -> None:
    queries = {q.name: q for q in named_queries()}
    assert {
        "rfm_distribution",
        "segment_migration",
        "gmv_by_segment",
        "repurchase_interval",
        "cohort_retention",
        "rule_performance",
        "top_abandoned_products",
    } <= set(queries)
    for query in queries.values():
        assert query.summary, query.name
        for param in query.params:
            assert param.description, f"{query.name}: {param.name} is not documented"
            if param.default is not None:
                typed_value(param, param.default, NOW)  # a default must be valid
    assert queries["rule_performance"].params[-1].default == "72"


def test_the_list_has_one_line_per_query_with_its_summary() -> None:
    lines = list_text().splitlines()
    assert len(lines) == len(named_queries())
    assert any(line.startswith("rule_performance ") and "uplift" in line for line in lines)


ROWS = [
    {
        "segment": "important_value",
        "customers": 12,
        "share": 0.123456789,
        "gmv": Decimal("1234.50"),
        "first": datetime(2024, 5, 1, 8, 0, 0, 120000, tzinfo=UTC),
        "cohort": date(2024, 5, 1),
        "uplift": None,
        "tags": ["vip", "茶"],
    },
    {
        "segment": "prospect",
        "customers": 3,
        "share": 0.5,
        "gmv": Decimal("0.00"),
        "first": datetime(2024, 5, 2, tzinfo=timezone(timedelta(hours=8))),
        "cohort": date(2024, 6, 1),
        "uplift": -0.02,
        "tags": [],
    },
]


def test_the_table_aligns_numbers_right_and_prints_null_and_a_row_count() -> None:
    text = render(ROWS, "table")
    lines = text.splitlines()
    assert lines[0].split() == list(ROWS[0])
    assert "1234.50" in lines[2] and "0.1235" in lines[2] and "NULL" in lines[2]
    assert "2024-05-01 16:00:00.000" in lines[3]  # UTC, whatever the offset given
    gmv_end = lines[0].index("gmv") + len("gmv")
    assert lines[2][:gmv_end].endswith("1234.50") and lines[3][:gmv_end].endswith("0.00")
    assert lines[-1] == "(2 rows)"


def test_an_empty_result_is_a_row_count_an_empty_csv_and_an_empty_json_array() -> None:
    assert render([], "table") == "(0 rows)\n"
    assert render([], "csv") == ""
    assert orjson.loads(render([], "json")) == []


def test_csv_keeps_full_precision_and_leaves_null_empty() -> None:
    parsed = list(csv.DictReader(io.StringIO(render(ROWS, "csv"))))
    assert parsed[0]["share"] == "0.123456789"
    assert parsed[0]["gmv"] == "1234.50"
    assert parsed[0]["uplift"] == ""
    assert parsed[0]["first"] == "2024-05-01 08:00:00.120"
    assert orjson.loads(parsed[0]["tags"]) == ["vip", "茶"]


def test_json_keeps_money_exact_as_strings_and_times_with_their_offset() -> None:
    parsed = orjson.loads(render(ROWS, "json"))
    assert parsed[0] == {
        "segment": "important_value",
        "customers": 12,
        "share": 0.123456789,
        "gmv": "1234.50",
        "first": "2024-05-01T08:00:00.120+00:00",
        "cohort": "2024-05-01",
        "uplift": None,
        "tags": ["vip", "茶"],
    }
    assert parsed[1]["first"] == "2024-05-02T00:00:00.000+08:00"


def test_cell_text_of_odd_values() -> None:
    assert cell_text(float("nan"), float_digits=4) == "nan"
    assert cell_text(True) == "true"


def test_a_server_url_gives_the_analysts_client_arguments() -> None:
    assert server_params("https://analyst:p%40ss@ch.example:9443/ecrm") == {
        "host": "ch.example",
        "port": 9443,
        "username": "analyst",
        "password": "p@ss",
        "secure": True,
        "database": "ecrm",
    }
    assert server_params("http://localhost")["port"] == 8123
    assert server_params("http://localhost")["database"] == "default"
    with pytest.raises(ClickHouseError, match="bad database name"):
        server_params("http://localhost/ecrm;DROP")
    with pytest.raises(ClickHouseError, match="not an http"):
        server_params("chdb:///tmp/x")
