"""The small values of the rules file — durations, shares, times of day, zones, amounts, names —
each read from what a marketer types and explained in their words when it is wrong."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable
from datetime import time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, PlainValidator


class FieldProblem(ValueError):
    """A mistake a validator found below the model it checks; `path` says exactly where."""

    def __init__(self, path: str | tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path: tuple[str | int, ...] = (path,) if isinstance(path, str) else path
        self.message = message


class Strict(BaseModel):
    """Base of every rules-file model: unknown keys are typos, and rules never change once read."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean "within"?)` when a known word is close, else nothing."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


# --- durations: "30s", "30m", "2h", "3d", "1w", "1h30m", "2 hours", or whole seconds ---------

_UNIT_SECONDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "week", "weeks"), 604800),
}
_DURATION = re.compile(r"(?:\s*\d+\s*[a-z]+)+\s*")
_DURATION_PART = re.compile(r"(\d+)\s*([a-z]+)")


#: Ten years: longer spans are typos, and would overflow date arithmetic on the live stream.
MAX_DURATION_S = 3650 * 86400


def parse_duration(value: Any) -> timedelta:
    """A positive duration; bare numbers are seconds."""
    seconds: int | None = None
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit():
            seconds = int(text)
        elif _DURATION.fullmatch(text):
            parts = _DURATION_PART.findall(text)
            if all(unit in _UNIT_SECONDS for _, unit in parts):
                seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in parts)
    if seconds is None:
        raise ValueError(f'"{value}" is not a duration (use e.g. 30m, 2h, 3d)')
    if seconds <= 0:
        raise ValueError(f'"{value}" must be longer than zero (use e.g. 30m, 2h, 3d)')
    if seconds > MAX_DURATION_S:
        raise ValueError(f'"{value}" is too long (at most 3650d, ten years)')
    return timedelta(seconds=seconds)


def format_duration(span: timedelta) -> str:
    """The shortest way a marketer would write it: 30m, 2h, 3d, 1h30m."""
    seconds = int(span.total_seconds())
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out or "0s"


Duration = Annotated[timedelta, PlainValidator(parse_duration)]


# --- shares: "20%" or 0.2 ---------------------------------------------------------------------


def parse_share(value: Any) -> float:
    """A share of customers between 0 and 1, written 20% or 0.2."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f'"{value}" is not a percentage (write e.g. 20% or 0.2)')
    text = str(value).strip()
    percent = text.endswith("%")
    try:
        number = Decimal(text.rstrip("%").strip())
    except InvalidOperation:
        raise ValueError(f'"{value}" is not a percentage (write e.g. 20% or 0.2)') from None
    if not number.is_finite():
        raise ValueError(f'"{value}" is not a percentage (write e.g. 20% or 0.2)')
    if number < 0:
        raise ValueError(f'"{value}" cannot be negative')
    if percent:
        if number > 100:
            raise ValueError(f'"{value}" is more than 100%')
        return float(number / 100)
    if number > 1:
        raise ValueError(f"{value} is not a share: write it as {value}% or as a fraction like 0.2")
    return float(number)


Share = Annotated[float, PlainValidator(parse_share)]


# --- times of day and zones -------------------------------------------------------------------

_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")


def parse_time_of_day(value: Any) -> time:
    """ "22:00"; an unquoted 22:00 reaches us as 1320 (YAML 1.1 reads it as minutes), so that too."""
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 60 <= value < 24 * 60:
        return time(value // 60, value % 60)
    if isinstance(value, str) and (m := _CLOCK.fullmatch(value.strip())):
        hours, minutes = int(m[1]), int(m[2])
        if hours < 24 and minutes < 60:
            return time(hours, minutes)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 60:
        value = f"{value // 60}:{value % 60:02d}"  # show it as it was typed
    raise ValueError(f'"{value}" is not a time of day (write it in quotes, e.g. "22:00")')


TimeOfDay = Annotated[time, PlainValidator(parse_time_of_day)]


def parse_zone(value: Any) -> str:
    """An IANA time zone name such as Asia/Shanghai."""
    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f'"{value}" is not a time zone (e.g. Asia/Shanghai)') from None
    return str(value)


ZoneName = Annotated[str, PlainValidator(parse_zone)]


def parse_number(value: Any) -> Decimal:
    """A finite number: NaN compares false with everything and infinity is no amount, so a
    rule holding either (YAML `.nan`, `.inf`) would never do what its author meant."""
    if not isinstance(value, bool) and isinstance(value, int | float | str | Decimal):
        try:
            number = Decimal(str(value).strip())
        except (InvalidOperation, ValueError):  # ValueError: an int too long to write as text
            pass
        else:
            if not number.is_finite():
                raise ValueError(f'"{value}" is not a finite number (NaN and infinity are not)')
            return number
    raise ValueError(f'"{value}" is not a number')


def is_non_finite(value: Any) -> bool:
    """A float or Decimal NaN or infinity (YAML `.nan`, `.inf`)."""
    if isinstance(value, Decimal):
        return not value.is_finite()
    return isinstance(value, float) and not math.isfinite(value)


def non_finite_in(value: Any) -> tuple[str, Any] | None:
    """Where a NaN or infinite number hides in free-form YAML (path such as `a.b[1]`, "" for
    `value` itself) and what it is, or None."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if is_non_finite(item):
            return path, item
        if isinstance(item, dict):
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(item))
    return None


Number = Annotated[Decimal, PlainValidator(parse_number)]


# --- names, amounts, params -------------------------------------------------------------------


def one_of(options: tuple[str, ...], what: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if isinstance(value, str) and value.strip().lower() in options:
            return value.strip().lower()
        hint = did_you_mean(str(value), options)
        raise ValueError(f'"{value}" is not {what}{hint} (choose from: {", ".join(options)})')

    return check


def parse_rule_id(value: Any) -> str:
    text = str(value).strip() if isinstance(value, str | int) else ""
    if not re.fullmatch(r"[\w.-]{1,64}", text):
        raise ValueError(
            f'"{value}" is not a usable rule id: use letters, digits, "-", "_" or "." '
            "without spaces, at most 64 characters (e.g. abandoned-cart)"
        )
    return text


def as_list(value: Any) -> Any:
    return value if isinstance(value, list | tuple) else [value]


def positive_money(value: Any) -> Decimal:
    number = parse_number(value)
    if number <= 0:
        raise ValueError(f'"{value}" must be an amount above zero')
    return number


def non_negative_money(value: Any) -> Decimal:
    number = parse_number(value)
    if number < 0:
        raise ValueError(f'"{value}" must not be negative')
    return number


def whole_points(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f'"{value}" must be a whole number of points above zero')
    return value


def web_address(value: Any) -> str:
    if not str(value).startswith(("http://", "https://")):
        raise ValueError(f'"{value}" must be a web address starting with https://')
    return str(value)


def some_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("should be some text")
    return value


RuleId = Annotated[str, PlainValidator(parse_rule_id)]
Money = Annotated[Decimal, PlainValidator(positive_money)]
