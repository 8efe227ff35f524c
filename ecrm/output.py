"""Query results as a text table (people), CSV (spreadsheets) or JSON (programs).

Times print in UTC as ClickHouse writes them (``2024-05-01 08:00:00.000``; JSON: ISO 8601 with
the offset); money keeps its exact digits (JSON: a string, as ecrm stores Decimal everywhere);
a NULL is ``NULL`` in a table, empty in CSV and ``null`` in JSON.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

import orjson

Format = Literal["table", "csv", "json"]
FORMATS: tuple[Format, ...] = ("table", "csv", "json")


def render(rows: Sequence[Mapping[str, Any]], fmt: Format) -> str:
    """The rows in the format, ending with a newline (an empty result too)."""
    if fmt == "json":
        return _json(rows)
    if fmt == "csv":
        return _csv(rows)
    if fmt == "table":
        return _table(rows)
    raise ValueError(f"unknown format {fmt!r}")


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(rows[0]) if rows else []


def cell_text(value: Any, *, null: str = "NULL", float_digits: int | None = None) -> str:
    """One value as text for a table or CSV cell."""
    if value is None:
        return null
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        if float_digits is not None and math.isfinite(value):
            return f"{value:.{float_digits}f}"
        return repr(value)
    if isinstance(value, list | tuple | dict):
        return orjson.dumps(value, default=_json_default).decode()
    return str(value)


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    columns = _columns(rows)
    count = f"({len(rows)} row{'' if len(rows) == 1 else 's'})\n"
    if not columns:
        return count
    cells = [[cell_text(row[c], float_digits=4) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(row[c], int | float | Decimal) or row[c] is None for row in rows)
        and any(row[c] is not None for row in rows)
        for c in columns
    ]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out) + "\n" + count


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = _columns(rows)
    if columns:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([cell_text(row[c], null="") for c in columns])
    return buffer.getvalue()


def _json(rows: Sequence[Mapping[str, Any]]) -> str:
    data = orjson.dumps(
        [dict(row) for row in rows],
        default=_json_default,
        option=orjson.OPT_INDENT_2 | orjson.OPT_PASSTHROUGH_DATETIME,
    )
    return data.decode() + "\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.isoformat(timespec="milliseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON: {value!r}")


#: What a spreadsheet reads as the start of a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: a leading `'` before what would start a
    formula (`=HYPERLINK(…)` in a storefront's customer id stays a string)."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def from_spreadsheet(text: str) -> str:
    """`spreadsheet_safe` undone, for a file ecrm wrote (or a spreadsheet saved) read back."""
    if text.startswith("'") and text[1:].startswith(FORMULA_STARTS):
        return text[1:]
    return text
