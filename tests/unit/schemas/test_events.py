"""An odd but real event is either kept faithfully or refused at the door with a reason naming
the field and the limit; nothing it holds can stop the worker further on."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from agents.backtest.history import event_from_row
from agents.profile.incoming import decode
from agents.profile.rows import event_row
from schemas.events import (
    MAX_AMOUNT,
    MAX_QTY,
    TIME_WINDOW,
    CartEvent,
    Event,
    OrderEvent,
    TimeWindow,
)
from streams.settings import Settings

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
WINDOW = TimeWindow(datetime(2000, 1, 1, tzinfo=UTC), NOW, timedelta(hours=24))
BASE = {"event_id": "e1", "customer_id": "c1", "ts": "2026-06-01T10:00:00Z"}
CART = {**BASE, "sku": "s1", "qty": 1, "price": "9.90"}
ORDER = {**BASE, "order_id": "o1", "status": "paid", "amount": "99.00"}


def cart_json(extra: str = "", **fields: Any) -> bytes:
    """A cart add as JSON text, with `extra` spliced in verbatim (for NaN, which JSON lacks)."""
    text = json.dumps({**CART, **fields})
    return (text[:-1] + ", " + extra + "}" if extra else text).encode()


def refusal(model: type[Event], raw: bytes, window: TimeWindow | None = None) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(raw, context={TIME_WINDOW: window})
    return str(caught.value)


def reason(topic: str, raw: bytes, window: TimeWindow | None = WINDOW) -> str | None:
    """What the worker's decoder says of a message (None: it is an event)."""
    return decode(f"ecrm.{topic}", topic, 0, 7, b"c1", raw, window).error


# --- what the columns cannot hold ---------------------------------------------------------


def test_a_qty_the_uint32_column_cannot_hold_is_refused_naming_qty_and_the_limit() -> None:
    said = reason("cart", cart_json(qty=10**12))
    assert said is not None and said.startswith("qty:") and str(MAX_QTY) in said


def test_the_largest_qty_the_column_holds_is_accepted() -> None:
    assert reason("cart", cart_json(qty=MAX_QTY, price="0.01")) is None


def test_an_order_item_qty_beyond_the_limit_is_refused_too() -> None:
    raw = json.dumps({**ORDER, "items": [{"sku": "s", "qty": 10**12, "price": 1}]}).encode()
    said = reason("orders", raw)
    assert said is not None and "items.0.qty" in said and str(MAX_QTY) in said


def test_an_amount_of_ten_to_the_seventeen_is_refused_naming_the_digits_allowed() -> None:
    said = reason("orders", json.dumps({**ORDER, "amount": 10**17}).encode())
    assert said is not None and said.startswith("amount:") and "16 digits" in said


def test_a_cart_add_whose_price_times_qty_exceeds_the_largest_amount_is_refused() -> None:
    said = reason("cart", cart_json(qty=2, price=str(MAX_AMOUNT)))
    assert said is not None and "price × qty" in said and str(MAX_AMOUNT) in said


# --- unknown fields -----------------------------------------------------------------------


def test_an_integer_beyond_64_bits_in_an_unknown_field_is_kept_exactly() -> None:
    huge = 2**70 + 1
    event = CartEvent.model_validate_json(cart_json(big=huge, nested={"deep": [huge]}))
    assert event.extra == {"big": huge, "nested": {"deep": [huge]}}
    row = event_row(event, topic="ecrm.cart", partition=0, offset=1, now=NOW)
    assert json.loads(row["extra"]) == {"big": huge, "nested": {"deep": [huge]}}


def test_a_big_integer_in_an_order_items_unknown_field_reaches_its_row_and_comes_back() -> None:
    huge = -(2**80)
    raw = {**ORDER, "items": [{"sku": "s", "qty": 1, "price": "1.00", "batch": huge}]}
    event = OrderEvent.model_validate_json(json.dumps(raw))
    row = event_row(event, topic="ecrm.orders", partition=0, offset=1, now=NOW)
    assert json.loads(row["items"])[0]["batch"] == huge
    again = event_from_row({**row, "ts": event.ts})
    assert isinstance(again, OrderEvent) and again.items is not None
    assert again.items[0].model_extra == {"batch": huge}


def test_the_strings_nan_and_infinity_are_data_and_are_kept() -> None:
    event = CartEvent.model_validate_json(cart_json(score="NaN", level="Infinity"))
    assert event.extra == {"score": "NaN", "level": "Infinity"}


@pytest.mark.parametrize(
    ("extra", "path", "value"),
    [
        ('"score": NaN', "score", "nan"),
        ('"score": Infinity', "score", "inf"),
        ('"score": -Infinity', "score", "-inf"),
        ('"score": 1e400', "score", "inf"),
        ('"a": {"b": [1, NaN]}', "a.b[1]", "nan"),
    ],
)
def test_nan_or_infinity_read_from_json_in_an_unknown_field_is_refused(
    extra: str, path: str, value: str
) -> None:
    said = reason("cart", cart_json(extra))
    assert said is not None
    assert f"unknown field {path} is {value}, not a finite number" in said


def test_nan_in_an_order_items_unknown_field_is_refused_naming_the_item() -> None:
    raw = json.dumps({**ORDER, "items": [{"sku": "s", "qty": 1, "price": 1, "w": 0}]})
    said = reason("orders", raw.replace('"w": 0', '"w": NaN').encode())
    assert said is not None and said.startswith("items.0:") and "unknown field w is nan" in said


def test_nesting_deeper_than_the_json_reader_allows_is_refused_not_a_crash() -> None:
    deep = "[" * 10_000 + "]" * 10_000
    said = reason("cart", cart_json(f'"d": {deep}'))
    assert said is not None and "recursion limit" in said


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=20,
)
#: not a field the event defines either (Hypothesis also tries the code's own strings, `origin`)
unknown_names = st.text(min_size=1, max_size=6).filter(
    lambda n: n not in CART and n not in CartEvent.model_fields
)


@given(st.dictionaries(unknown_names, json_values, max_size=4))
def test_any_json_in_unknown_fields_reaches_the_events_row_unchanged(
    extra: dict[str, Any],
) -> None:
    raw = json.dumps({**CART, **extra}).encode()
    event = CartEvent.model_validate_json(raw)
    row = event_row(event, topic="ecrm.cart", partition=0, offset=1, now=NOW)
    assert json.loads(row["extra"]) == extra


# --- event time ---------------------------------------------------------------------------


def test_ts_zero_is_refused_naming_the_earliest_time_accepted() -> None:
    said = reason("cart", cart_json(ts=0))
    assert said == (
        "ts: ts 1970-01-01T00:00:00Z is before 2000-01-01T00:00:00Z, the earliest event time "
        "accepted (ECRM_TS_MIN)"
    )


def test_a_device_clock_in_year_9999_is_refused_naming_how_far_ahead_is_allowed() -> None:
    said = reason("cart", cart_json(ts="9999-12-31T23:59:59Z"))
    assert said is not None
    assert "9999-12-31T23:59:59Z is more than 24h after this worker's clock" in said
    assert "2026-06-01T12:00:00Z" in said and "ECRM_TS_MAX_FUTURE_S" in said


@pytest.mark.parametrize("ts", [1780308000, "1780308000"])
def test_epoch_seconds_sent_for_milliseconds_are_refused_saying_so(ts: int | str) -> None:
    said = reason("cart", cart_json(ts=ts))
    assert said is not None
    assert "looks like epoch seconds (2026-06-01T10:00:00Z)" in said
    assert "send milliseconds" in said


def test_the_same_moment_in_milliseconds_is_accepted() -> None:
    item = decode("ecrm.cart", "cart", 0, 7, b"c1", cart_json(ts=1780308000000), WINDOW)
    assert item.event is not None and item.event.ts == datetime(2026, 6, 1, 10, tzinfo=UTC)


def test_the_window_includes_its_edges_and_nothing_beyond() -> None:
    ms = timedelta(milliseconds=1)
    for inside in (WINDOW.earliest, WINDOW.latest):
        assert reason("cart", cart_json(ts=inside.isoformat())) is None
    for outside in (WINDOW.earliest - ms, WINDOW.latest + ms):
        assert reason("cart", cart_json(ts=outside.isoformat())) is not None


def test_without_a_window_in_the_context_any_representable_time_is_accepted() -> None:
    for ts in (0, "9999-12-31T23:59:59Z"):
        assert reason("cart", cart_json(ts=ts), window=None) is None


def test_the_window_comes_from_the_settings_and_the_callers_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ECRM_TS_MIN", "2020-01-01T00:00:00+08:00")
    monkeypatch.setenv("ECRM_TS_MAX_FUTURE_S", "3600")
    window = Settings().time_window(NOW)
    assert window.earliest == datetime(2019, 12, 31, 16, tzinfo=UTC)
    assert window.latest == NOW + timedelta(hours=1)
    said = reason("cart", cart_json(ts=(NOW + timedelta(hours=2)).isoformat()), window)
    assert said is not None and "more than 1h after" in said


def test_a_naive_ts_min_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECRM_TS_MIN", "2000-01-01T00:00:00")
    with pytest.raises(ValidationError, match="ts_min"):
        Settings()


def test_a_huge_unreadable_ts_makes_a_short_reason() -> None:
    said = reason("cart", cart_json(ts="x" * 600_000))
    assert said is not None and len(said) < 300 and "600002 characters" in said


def test_money_stays_decimal() -> None:
    event = CartEvent.model_validate_json(cart_json(price="0.10", qty=3))
    assert isinstance(event.price, Decimal)
    row = event_row(event, topic="ecrm.cart", partition=0, offset=1, now=NOW)
    assert row["price"] == Decimal("0.10")


def test_a_time_window_wider_than_the_calendar_ends_where_the_calendar_ends() -> None:
    from datetime import UTC, datetime, timedelta

    from schemas.events import TimeWindow

    window = TimeWindow(
        datetime(2000, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC), timedelta(days=10**8)
    )
    assert window.latest == datetime.max.replace(tzinfo=UTC)
    assert (
        window.problem("9999-12-31T23:59:00Z", datetime(9999, 12, 31, 23, 59, tzinfo=UTC)) is None
    )
