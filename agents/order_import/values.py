"""Reading one cell of an order export the way a person would: text, money, local times.

Exports carry spreadsheet habits: `="2890123456789012345"` to keep a long order number as
text, stray tabs and spaces (also full-width ones), `¥1,280.00`, and dates written several
ways in one file (`2026-03-01 12:00:00`, `2026/3/1 12:00`, `2026-03-01`). Each reader
raises ValueError with a reason a shop owner can act on; the caller turns it into a reject.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_ID_LENGTH = 256
CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("1e16")  # Decimal(18, 2) in ClickHouse
#: a BOM or zero-width space left where files were glued together
_INVISIBLE = "\ufeff\u200b\u200c\u200d\u2060"

_SCIENTIFIC = re.compile(r"^\d(\.\d+)?[eE]\+?\d+$")
_MONEY_NOISE = re.compile(r"[¥￥,，\s]|元$|^CNY|^RMB", re.IGNORECASE)
_DATE = re.compile(
    r"^(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?"
    r"(?:[ T]+(\d{1,2})[:：](\d{1,2})(?:[:：](\d{1,2})(?:\.(\d{1,6}))?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?$"
)
_OFFSET = re.compile(r"^(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?$")


def clean(value: str) -> str:
    """The cell's text without padding and without the `="…"` / leading `'` text guards."""
    text = value.strip()
    if not text:
        return text
    first = text[0]
    if first == "=":
        if text.startswith('="') and text.endswith('"') and len(text) >= 3:
            return text[2:-1].strip()
    elif first == "'":
        if text[1:].strip().isdigit():
            return text[1:].strip()
    elif first in _INVISIBLE or text[-1] in _INVISIBLE:
        return clean(text.strip(_INVISIBLE))
    return text


def order_number(value: str) -> str:
    """A non-empty order number that a spreadsheet did not turn into `2.89012E+18`."""
    text = clean(value)
    if not text:
        raise ValueError("no order number")
    if _SCIENTIFIC.match(text):
        raise ValueError(
            f"order number {text} was rounded by a spreadsheet; export again and import the "
            "file as downloaded"
        )
    if len(text) > MAX_ID_LENGTH:
        raise ValueError(f"order number longer than {MAX_ID_LENGTH} characters")
    if not text.isprintable():
        raise ValueError(f"order number {text!r} has invisible characters")
    return text


def money(value: str, what: str) -> Decimal | None:
    """An amount in major units with at most two decimals; None when the cell is empty."""
    text = clean(value)
    digits = text.replace(".", "", 1)
    if digits.isascii() and digits.isdigit():  # the usual case, without the noise search
        amount = Decimal(text)
        if amount == amount.quantize(CENT) and amount < MAX_AMOUNT:
            return amount.quantize(CENT)
    text = _MONEY_NOISE.sub("", text)
    if not text or text in ("-", "--"):
        return None
    if "e" in text.lower():
        raise ValueError(f"{what} {text!r} is not an amount")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{what} {text!r} is not an amount") from None
    if not amount.is_finite():
        raise ValueError(f"{what} {text!r} is not an amount")
    if amount < 0:
        raise ValueError(f"{what} {text} is negative")
    if amount != amount.quantize(CENT):
        raise ValueError(f"{what} {text} has more than two decimals")
    if amount >= MAX_AMOUNT:
        raise ValueError(f"{what} {text} is too large")
    return amount.quantize(CENT)


def local_time(value: str, zone: tzinfo, what: str) -> datetime | None:
    """A date or date-time; without an offset it is in `zone`. None when the cell is empty."""
    text = clean(value)
    if not text:
        return None
    match = _DATE.match(text)
    if match is None:
        raise ValueError(f"{what} {text!r} is not a date")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        at = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")),
            tzinfo=zone if offset is None else fixed_zone(offset),
        )
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a date") from None
    return at


def zone_named(name: str) -> tzinfo:
    """An IANA zone (Asia/Shanghai) or a fixed offset (+08:00, UTC+8); never a silent UTC."""
    if name.upper() in ("UTC", "Z"):
        return UTC
    if _OFFSET.match(name):
        return fixed_zone(name)
    return _zone(name)


@lru_cache(maxsize=16)
def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as Asia/Shanghai (pip install "
            "tzdata where the system has no zone database) or an offset such as +08:00"
        ) from None


@lru_cache(maxsize=64)
def fixed_zone(text: str) -> tzinfo:
    if text == "Z":
        return UTC
    match = _OFFSET.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a UTC offset")
    sign, hours, minutes = match.groups()
    delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
    if delta >= timedelta(hours=24):
        raise ValueError(f"{text!r} is not a UTC offset")
    return timezone(-delta if sign == "-" else delta)
