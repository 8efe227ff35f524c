"""Outbox rows (JSON values) to the Python values a native-format insert takes, per column type.

Rows reach the sink as JSON from the Redis outbox, so a datetime is an ISO string, money a
decimal string and events.items a JSON array. The old JSONEachRow inserts let ClickHouse
parse that text; a native insert sends typed columns, so the conversion happens here, once
per value, driven by the table's column types (read once per table and cached by
streams/clickhouse.py). A value the column cannot hold raises `BadValue` naming the column;
out-of-range numbers and dates (a qty past UInt32, a sum past Decimal(18, 2)) are refused
here too, before anything is sent, with a message naming the column and the value (the
serializer's own error names only the column). The sink then isolates the refused row
(streams/sink.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import partial
from operator import itemgetter
from typing import Any

import orjson

Convert = Callable[[Any], Any]


class BadValue(ValueError):
    """A row value that its column cannot hold; the message names the column."""


class UnknownColumn(BadValue):
    """A row names a column the table (as last read) does not have."""


@dataclass(frozen=True)
class Column:
    """One column of a table: its name, type, and whether it has a DEFAULT expression
    (left out of an insert, the server computes it; a zero value would be wrong)."""

    name: str
    type: str
    has_default: bool = False


def converter(type_name: str) -> Convert:
    """The function turning an outbox JSON value into what a column of `type_name` takes."""
    inner = _unwrap(type_name, "LowCardinality")
    if inner is not None:
        return converter(inner)
    inner = _unwrap(type_name, "Nullable")
    if inner is not None:
        convert = converter(inner)
        return lambda v: None if v is None else convert(v)
    inner = _unwrap(type_name, "Array")
    if inner is not None:
        convert = converter(inner)
        return lambda v: [] if v is None else [convert(x) for x in _array(v)]
    base = type_name.split("(", 1)[0]
    if base in _TIME_RANGES:
        low, high = _TIME_RANGES[base]
        convert = _date if base in ("Date", "Date32") else _datetime
        return _ranged(convert, low, high, type_name)
    if base.startswith("Decimal"):
        return _ranged(_decimal, -_decimal_limit(type_name), _decimal_limit(type_name), type_name)
    if base in ("String", "FixedString"):
        return _string
    if base in _INT_BITS:
        return _ranged(_int, *_int_range(base), type_name)
    if base.startswith(("Float", "BFloat")):
        return lambda v: 0.0 if v is None else float(v)
    if base == "Bool":
        return lambda v: bool(v)
    return lambda v: v  # Map, Tuple, UUID, Enum ...: clickhouse-connect takes them as given


def block(
    rows: Sequence[Mapping[str, Any]], columns: Mapping[str, Column], table: str
) -> tuple[list[str], list[str], list[list[Any]]]:
    """(column names, their types, the values column by column) for one native insert.

    A column some rows lack gets, in those rows, what JSONEachRow gave a missing field: its
    DEFAULT expression when it has one (sent as NULL in a Nullable column, which ClickHouse
    turns into the default), else the type's zero value. Every value is converted (and
    range-checked) before anything is sent, so a refused value never leaves half an insert.
    """
    names = [name for name in columns if name in rows[0]]
    complete = len(names) == len(rows[0]) and sum(map(len, rows)) == len(names) * len(rows)
    try:  # the usual case, every row with the same known keys: columns pulled out by C code
        if len(names) == 1:
            raw = [[row[names[0]] for row in rows]]
        else:
            raw = [list(c) for c in zip(*map(itemgetter(*names), rows), strict=True)]
    except (KeyError, TypeError):
        complete = False
    if not complete:  # some rows lack some columns, or have unknown ones
        present: set[str] = set()
        for row in rows:
            present.update(row)
        unknown = sorted(present - set(columns))
        if unknown:
            raise UnknownColumn(f"table {table} has no column {', '.join(map(repr, unknown))}")
        names = [name for name in columns if name in present]
        raw = [[row.get(name, _ABSENT) for row in rows] for name in names]
    types: list[str] = []
    data: list[list[Any]] = []
    for name, values in zip(names, raw, strict=True):
        column = columns[name]
        convert = converter(column.type)
        where = f"{table}.{name}"
        if not complete and any(v is _ABSENT for v in values):
            if column.has_default:
                types.append(_nullable(column.type))
                convert = _or_null(convert)
                values = [None if v is _ABSENT else v for v in values]
                data.append(_converted(values, _each(convert), convert, where))
                continue
            absent = convert(None)
            values = [absent if v is _ABSENT else v for v in values]
        types.append(column.type)
        data.append(_converted(values, _column(column.type, convert), convert, where))
    return names, types, data


_ABSENT = object()


def _column(type_name: str, convert: Convert) -> Callable[[list[Any]], list[Any]]:
    """A whole column converted, values already of the right type passed through (fast)."""
    inner = _unwrap(type_name, "LowCardinality") or type_name
    base = inner.split("(", 1)[0]
    if base.startswith("Decimal"):
        return partial(_decimals, -_decimal_limit(inner), _decimal_limit(inner), convert)
    if base in ("DateTime", "DateTime64"):
        return partial(_datetimes, *_TIME_RANGES[base], convert)
    if inner == "String":
        return lambda values: [v if v.__class__ is str else convert(v) for v in values]
    if inner in _INT_BITS:
        low, high = _int_range(inner)
        return lambda values: [
            v if v.__class__ is int and low <= v <= high else convert(v) for v in values
        ]
    return _each(convert)


def _decimals(low: Decimal, high: Decimal, convert: Convert, values: list[Any]) -> list[Any]:
    out = []
    for v in values:
        if v.__class__ is str:
            number = Decimal(v)
            if low <= number <= high:
                out.append(number)
                continue
        out.append(convert(v))
    return out


def _datetimes(low: datetime, high: datetime, convert: Convert, values: list[Any]) -> list[Any]:
    out = []
    for v in values:
        if v.__class__ is str:
            moment = datetime.fromisoformat(v)
            if moment.tzinfo is not None and low <= moment <= high:
                out.append(moment)
                continue
        out.append(convert(v))
    return out


def _each(convert: Convert) -> Callable[[list[Any]], list[Any]]:
    return lambda values: [convert(v) for v in values]


def _converted(
    values: list[Any], column: Callable[[list[Any]], list[Any]], convert: Convert, where: str
) -> list[Any]:
    try:
        return column(values)
    except (ValueError, TypeError, InvalidOperation):
        for value in values:  # the first value refused, for the message
            try:
                convert(value)
            except (ValueError, TypeError, InvalidOperation) as e:
                raise BadValue(f"{where} = {value!r}: {e}") from e
        raise


def _or_null(convert: Convert) -> Convert:
    return lambda v: None if v is None else convert(v)


def _nullable(type_name: str) -> str:
    if type_name.startswith("Nullable("):
        return type_name
    inner = _unwrap(type_name, "LowCardinality")
    if inner is not None:
        return f"LowCardinality({_nullable(inner)})"
    return f"Nullable({type_name})"


_INT_BITS = {f"{sign}Int{bits}": bits for sign in ("", "U") for bits in (8, 16, 32, 64, 128, 256)}
_TIME_RANGES: dict[str, tuple[Any, Any]] = {
    "Date": (date(1970, 1, 1), date(2149, 6, 6)),
    "Date32": (date(1900, 1, 1), date(2299, 12, 31)),
    "DateTime": (datetime(1970, 1, 1, tzinfo=UTC), datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC)),
    "DateTime64": (
        datetime(1900, 1, 1, tzinfo=UTC),
        datetime(2299, 12, 31, 23, 59, 59, tzinfo=UTC),
    ),
}


def _int_range(base: str) -> tuple[int, int]:
    bits = _INT_BITS[base]
    return (0, 2**bits - 1) if base.startswith("U") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def _ranged(convert: Convert, low: Any, high: Any, type_name: str) -> Convert:
    def checked(value: Any) -> Any:
        result = convert(value)
        if not low <= result <= high:
            raise ValueError(f"{result} is out of range for {type_name}")
        return result

    return checked


def _decimal_limit(type_name: str) -> Decimal:
    """The largest value a Decimal(P, S) / DecimalNN(S) column holds."""
    args = [a.strip() for a in type_name.split("(", 1)[1].rstrip(")").split(",")]
    base = type_name.split("(", 1)[0]
    precision = {"Decimal32": 9, "Decimal64": 18, "Decimal128": 38, "Decimal256": 76}.get(base)
    if precision is None:
        precision, scale = int(args[0]), int(args[1]) if len(args) > 1 else 0
    else:
        scale = int(args[0])
    return Decimal(10) ** (precision - scale) - Decimal(10) ** -scale


def _unwrap(type_name: str, wrapper: str) -> str | None:
    if type_name.startswith(wrapper + "(") and type_name.endswith(")"):
        return type_name[len(wrapper) + 1 : -1]
    return None


def _array(value: Any) -> list[Any]:
    if isinstance(value, str):  # an array stored as JSON text
        value = orjson.loads(value)
    if not isinstance(value, list):
        raise TypeError(f"not an array: {value!r}")
    return value


def _datetime(value: Any) -> datetime:
    if value is None:
        return datetime.fromtimestamp(0, UTC)
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)  # epoch seconds, as ClickHouse reads them
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value)
    else:
        raise TypeError(f"not a datetime: {value!r}")
    # a string without an offset is in the column's zone, which is UTC in every ecrm table
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _date(value: Any) -> date:
    if value is None:
        return date(1970, 1, 1)
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _decimal(value: Any) -> Decimal:
    if value is None:
        return Decimal(0)
    if isinstance(value, bool):
        raise TypeError(f"not a number: {value!r}")
    number = Decimal(str(value)) if not isinstance(value, Decimal) else value
    if not number.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):  # events.items / extra: kept as JSON text
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _int(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"not a whole number: {value!r}")
        return int(value)
    return int(value)
