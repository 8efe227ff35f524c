"""Cells of an order export read the way a person reads them: text guards, money, dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from agents.order_import.values import clean, local_time, money, order_number, zone_named

SHANGHAI = zone_named("Asia/Shanghai")


@pytest.mark.parametrize(
    ("cell", "text"),
    [
        ('="3100000000000000000"', "3100000000000000000"),
        (' ="3100000000000000000"\t', "3100000000000000000"),
        ('="3100000000000000000\t"', "3100000000000000000"),
        ("'13812345678", "13812345678"),
        ("\t交易成功 ", "交易成功"),
        ("\u3000小鱼儿\u3000", "小鱼儿"),
        ("\ufeff订单编号", "订单编号"),
        ('\u200b="3100000000000000000" ', "3100000000000000000"),
        ("'not a number", "'not a number"),
        ('=""', ""),
        ("", ""),
    ],
)
def test_a_cell_loses_padding_and_spreadsheet_text_guards(cell: str, text: str) -> None:
    assert clean(cell) == text


def test_an_order_number_rounded_by_a_spreadsheet_is_refused_with_advice() -> None:
    assert order_number('="3100000000000007919"') == "3100000000000007919"
    with pytest.raises(ValueError, match="rounded by a spreadsheet"):
        order_number("3.10000E+18")
    with pytest.raises(ValueError, match="invisible characters"):
        order_number("31000\x0000")
    with pytest.raises(ValueError, match="no order number"):
        order_number(' ="" ')


@pytest.mark.parametrize(
    ("cell", "amount"),
    [
        ("128.00", Decimal("128.00")),
        (" 128.5\t", Decimal("128.50")),
        ("¥1,280.00", Decimal("1280.00")),
        ("￥ 99", Decimal("99.00")),
        ("12元", Decimal("12.00")),
        ("0", Decimal("0.00")),
        ("", None),
        ("--", None),
    ],
)
def test_money_is_read_in_major_units_with_two_decimals(cell: str, amount: Decimal | None) -> None:
    assert money(cell, "买家实际支付金额") == amount


@pytest.mark.parametrize(
    ("cell", "why"),
    [
        ("12.345", "more than two decimals"),
        ("-5.00", "negative"),
        ("abc", "not an amount"),
        ("1e5", "not an amount"),
        ("NaN", "not an amount"),
        ("²", "not an amount"),
        ("99999999999999999", "too large"),
    ],
)
def test_money_that_is_not_an_amount_is_refused_naming_the_column(cell: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as caught:
        money(cell, "退款金额")
    assert "退款金额" in str(caught.value)


@pytest.mark.parametrize(
    "cell",
    [
        "2026-03-01 12:00:00",
        "2026/3/1 12:00",
        "2026-3-1 12:00:00",
        "2026年3月1日 12:00",
        "2026.03.01 12:00",
    ],
)
def test_the_date_formats_of_one_export_all_mean_shanghai_local_time(cell: str) -> None:
    at = local_time(cell, SHANGHAI, "订单付款时间")
    assert at == datetime(2026, 3, 1, 4, 0, tzinfo=UTC)


def test_a_date_alone_is_midnight_and_an_explicit_offset_wins() -> None:
    assert local_time("2026-03-01", SHANGHAI, "t") == datetime(2026, 2, 28, 16, 0, tzinfo=UTC)
    assert local_time("2026-03-01T12:00:00Z", SHANGHAI, "t") == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert local_time("2026-03-01 12:00+09:00", SHANGHAI, "t") == datetime(
        2026, 3, 1, 3, tzinfo=UTC
    )
    assert local_time(" ", SHANGHAI, "t") is None


@pytest.mark.parametrize("cell", ["2026-13-45 10:00:00", "yesterday", "2026-02-30", "01/03/2026"])
def test_an_impossible_date_is_refused_naming_the_column(cell: str) -> None:
    with pytest.raises(ValueError, match="订单创建时间 .* is not a date"):
        local_time(cell, SHANGHAI, "订单创建时间")


def test_zones_are_iana_names_or_offsets_and_an_unknown_one_is_an_error() -> None:
    assert zone_named("+08:00") == timezone(timedelta(hours=8))
    assert zone_named("UTC-5") == timezone(timedelta(hours=-5))
    assert zone_named("UTC") == UTC
    assert datetime(2026, 7, 1, tzinfo=zone_named("Europe/Berlin")).utcoffset() == timedelta(
        hours=2
    )
    with pytest.raises(ValueError, match="unknown time zone"):
        zone_named("Mars/Olympus")
