"""The dashboard writes figures as a marketer reads them: ¥ with separators, percentages,
shop-local times to the second, never scientific notation; CSV keeps the raw values."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from ecrm.api.formats import COLUMNS, csv_text, money, show, uplift_text

SHOP = ZoneInfo("Asia/Shanghai")


def test_money_is_yuan_with_thousands_separators_and_two_decimals() -> None:
    assert money(Decimal("18290")) == "¥18,290.00"
    assert money(-18290.4) == "-¥18,290.40"
    assert money("0.5") == "¥0.50"
    assert show(-1.829e4, "yuan", SHOP) == "-¥18,290.00"  # the issue's `-1.829e+04`


def test_shares_and_rates_are_percentages_and_uplift_says_its_interval() -> None:
    assert show(0.05777, "rate", SHOP) == "5.8%"
    assert show(0.25, "share", SHOP) == "25.0%"
    row = {"uplift": -0.003, "uplift_ci_low": -0.049, "uplift_ci_high": 0.04}
    assert uplift_text(row) == "-0.3% [-4.9%, +4.0%]"
    assert uplift_text({"uplift": None}) is None


def test_times_are_in_the_shops_zone_to_the_second() -> None:
    utc = datetime(2026, 12, 6, 23, 17, 38, 166000, tzinfo=UTC)
    assert show(utc, "time", SHOP) == "2026-12-07 07:17:38"
    assert show(utc.replace(tzinfo=None), "time", SHOP) == "2026-12-07 07:17:38"  # naive is UTC
    assert show("2026-12-06T23:17:38.166+00:00", "time", SHOP) == "2026-12-07 07:17:38"


def test_undefined_is_a_dash_and_no_float_reads_in_scientific_notation() -> None:
    assert show(None, "rate", SHOP) == "–"
    assert show(12345.678, "count", SHOP) == "12,345"
    assert "e" not in show(1.5e-7, "text", SHOP) and "e" not in show(2.5e9, "text", SHOP)


def test_outcomes_reasons_and_channels_read_in_chinese_too() -> None:
    assert show("suppressed", "label", SHOP) == "抑制 suppressed"
    assert show("contact_cap", "label", SHOP) == "触达上限 contact_cap"
    assert show("a_new_reason", "label", SHOP) == "a_new_reason"


def test_every_column_has_both_labels() -> None:
    assert all(c.zh and c.en for c in COLUMNS.values())
    assert all(not c.zh.isascii() for c in COLUMNS.values())  # a Chinese label, not the key


def test_csv_keeps_raw_values_and_defuses_formulas() -> None:
    at = datetime(2026, 12, 6, 23, 0, tzinfo=UTC)
    rows = [{"customer_id": "=HYPERLINK(1)", "monetary": Decimal("1234.50"), "at": at}]
    text = csv_text(rows, ["customer_id", "monetary", "at"])
    back = list(csv.DictReader(io.StringIO(text)))
    assert back == [
        {"customer_id": "'=HYPERLINK(1)", "monetary": "1234.50", "at": "2026-12-06T23:00:00+00:00"}
    ]
