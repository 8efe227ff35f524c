"""The analysts' named queries (clickhouse/queries/*.sql) as values: what each answers, the
`{name:Type}` parameters it takes, and those parameters typed from command-line text.

A query file starts with a header comment; its first line is ``-- NAME: what it answers``,
and a parameter is documented on a header line holding its placeholder, optionally ending
``(default VALUE)``. The SQL below the header is what defines the parameters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from schemas.errors import ClickHouseError
from streams.clickhouse import QUERIES_DIR, load_query


class NamedQueryError(ClickHouseError):
    """A named query was asked for with missing, unknown or malformed parameters."""


_PLACEHOLDER = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([^{}]+?)\s*\}")
_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_DEFAULT = re.compile(r"\(default:?\s*([^)]*?)\s*\)")
_WRAPPER = re.compile(r"(Nullable|LowCardinality)\((.*)\)")
_RELATIVE = re.compile(r"-(\d+)([smhdw])")
_BOOLS = {"true": True, "1": True, "false": False, "0": False}
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class QueryParam:
    """One `{name:Type}` parameter of a named query."""

    name: str
    type: str
    description: str = ""
    default: str | None = None

    def signature(self) -> str:
        default = "" if self.default is None else f", default {self.default}"
        return f"{{{self.name}:{self.type}}}{default}"


@dataclass(frozen=True)
class NamedQuery:
    """A query from clickhouse/queries/NAME.sql with what its header says about it."""

    name: str
    summary: str
    sql: str
    params: tuple[QueryParam, ...]

    def bind(self, given: Mapping[str, str], now: datetime) -> dict[str, Any]:
        """The query's parameters typed from text (given, else the default).

        `now` anchors relative instants (``-30d``); a missing or unknown name is an error
        listing every parameter the query takes.
        """
        names = [p.name for p in self.params]
        unknown = sorted(set(given) - set(names))
        missing = [p.name for p in self.params if p.name not in given and p.default is None]
        if unknown or missing:
            problem = (
                f"{self.name} has no parameter {', '.join(unknown)}"
                if unknown
                else f"{self.name} needs --param {', '.join(f'{n}=...' for n in missing)}"
            )
            raise NamedQueryError(f"{problem}\n{self.parameters_help()}")
        bound: dict[str, Any] = {}
        for param in self.params:
            text = given.get(param.name, param.default)
            assert text is not None  # checked above: given or defaulted
            bound[param.name] = typed_value(param, text, now)
        return bound

    def parameters_help(self) -> str:
        if not self.params:
            return f"{self.name} takes no parameters"
        width = max(len(p.signature()) for p in self.params)
        lines = [f"  {p.signature().ljust(width)}  {p.description}".rstrip() for p in self.params]
        return "\n".join([f"{self.name} takes:", *lines])


def named_query(name: str) -> NamedQuery:
    """clickhouse/queries/NAME.sql, parsed."""
    return parse_named_query(name, load_query(name))


def named_queries() -> list[NamedQuery]:
    """Every shipped named query, by name."""
    return [named_query(path.stem) for path in sorted(QUERIES_DIR.glob("*.sql"))]


def parse_named_query(name: str, sql: str) -> NamedQuery:
    header = _header(sql)
    summary = header[0] if header else ""
    if summary.startswith(f"{name}:"):
        summary = summary.removeprefix(f"{name}:").strip()
    documented: dict[str, tuple[str, str | None]] = {}
    for line in header:
        match = _PLACEHOLDER.search(line)
        if match and match.group(1) not in documented:
            rest = line[match.end() :].strip()
            default = _DEFAULT.search(rest)
            described = _DEFAULT.sub("", rest).strip()
            documented[match.group(1)] = (described, default.group(1) if default else None)
    types: dict[str, str] = {}
    for match in _PLACEHOLDER.finditer(_COMMENT.sub("", sql)):
        param, type_ = match.group(1), match.group(2)
        if types.setdefault(param, type_).replace(" ", "") != type_.replace(" ", ""):
            raise NamedQueryError(f"query {name}: {{{param}}} is both {types[param]} and {type_}")
    params = tuple(
        QueryParam(param, type_, *documented.get(param, ("", None)))
        for param, type_ in types.items()
    )
    return NamedQuery(name=name, summary=summary, sql=sql, params=params)


def _header(sql: str) -> list[str]:
    """The text of the leading comment lines, without their dashes."""
    lines = []
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped.startswith("--"):
            break
        lines.append(stripped.removeprefix("--").strip())
    return lines


def typed_value(param: QueryParam, text: str, now: datetime) -> Any:
    """Command-line text as the Python value of the parameter's ClickHouse type.

    Instants (DateTime, DateTime64) take ISO dates and times (no offset = UTC), ``now`` or a
    relative ``-30d`` (s, m, h, d, w); dates take ISO dates, ``today`` or ``-30d``; arrays
    take comma-separated elements; any other type is passed on as text.
    """
    try:
        return _typed(param.type.strip(), text.strip(), now)
    except (ValueError, ArithmeticError) as exc:
        raise NamedQueryError(
            f"--param {param.name}={text!r}: not a {param.type}{_hint(param.type)}"
        ) from exc


def _typed(ch_type: str, text: str, now: datetime) -> Any:
    nullable = False
    while wrapped := _WRAPPER.fullmatch(ch_type):
        nullable |= wrapped.group(1) == "Nullable"
        ch_type = wrapped.group(2).strip()
    if nullable and text.upper() in ("NULL", "\\N"):
        return None
    if ch_type.startswith("Array(") and ch_type.endswith(")"):
        element = ch_type[len("Array(") : -1].strip()
        return [_typed(element, part.strip(), now) for part in text.split(",")] if text else []
    base = ch_type.split("(", 1)[0]
    if base.startswith(("UInt", "Int")):
        number = int(text)
        if base.startswith("UInt") and number < 0:
            raise ValueError("negative")
        return number
    if base.startswith("Float"):
        return float(text)
    if base.startswith("Decimal"):
        amount = Decimal(text)
        if not amount.is_finite():
            raise ValueError("not finite")
        return amount
    if base == "Bool":
        if text.lower() not in _BOOLS:
            raise ValueError("not a boolean")
        return _BOOLS[text.lower()]
    if base in ("Date", "Date32"):
        return _date(text, now)
    if base.startswith("DateTime"):
        return _instant(text, now)
    return text


def _instant(text: str, now: datetime) -> datetime:
    if text == "now":
        return now
    if relative := _RELATIVE.fullmatch(text):
        return now - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _date(text: str, now: datetime) -> date:
    if text == "today":
        return now.astimezone(UTC).date()
    if _RELATIVE.fullmatch(text):
        return _instant(text, now).astimezone(UTC).date()
    return date.fromisoformat(text)


def _hint(ch_type: str) -> str:
    if "DateTime" in ch_type:
        return " (use 2024-05-01, 2024-05-01T08:00:00+08:00 (no offset: UTC), now or -30d)"
    if "Date" in ch_type:
        return " (use 2024-05-01, today or -30d)"
    if "Int" in ch_type:
        return " (a whole number)" if "UInt" not in ch_type else " (a whole number, 0 or more)"
    return ""
