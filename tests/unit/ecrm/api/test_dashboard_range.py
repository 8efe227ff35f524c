"""The dashboard's period: by default exactly the CLI's (`--since 30d`: 30 days up to now),
else whole days in the shop's zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fastapi import HTTPException

from ecrm.api.dashboard_page import date_range

SHOP = ZoneInfo("Asia/Shanghai")


def test_the_default_is_the_last_n_days_up_to_now_as_the_cli_counts_them() -> None:
    before = datetime.now(UTC)
    period = date_range(None, None, None, 30, SHOP)
    assert before <= period.end <= datetime.now(UTC)
    assert period.end - period.start == timedelta(days=30)
    assert period.rolling and period.days == 30
    assert date_range(None, None, 120, 30, SHOP).end - date_range(
        None, None, 120, 30, SHOP
    ).start > timedelta(days=119)


def test_dates_are_whole_days_in_the_shops_zone() -> None:
    period = date_range("2026-11-01", "2026-11-30", None, 30, SHOP)
    assert period.start == datetime(2026, 10, 31, 16, tzinfo=UTC)  # 00:00 in Shanghai
    assert period.end == datetime(2026, 11, 30, 16, tzinfo=UTC)  # the day after the last, 00:00
    assert (period.since.isoformat(), period.until.isoformat(), period.days) == (
        "2026-11-01",
        "2026-11-30",
        30,
    )
    assert 'value="2026-11-01"' in period.form("/rules")


def test_a_bad_range_is_a_400_saying_why() -> None:
    with pytest.raises(HTTPException, match="YYYY-MM-DD"):
        date_range("yesterday", None, None, 30, SHOP)
    with pytest.raises(HTTPException, match="after"):
        date_range("2026-12-01", "2026-11-01", None, 30, SHOP)
