"""The dashboard's page shell and tables: navigation, the "as of" line every page carries,
tables with labelled, formatted columns and a CSV download each, the date-range form.

A page's tables are data (`Table`) so that the same rows serve the HTML and, with
`?csv=TABLE_ID`, the CSV download — one read, one set of figures."""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import orjson
from fastapi import HTTPException
from fastapi.responses import HTMLResponse, Response

from ecrm.api.formats import COLUMNS, csv_text, local_time, show

NAV = [
    ("/", "客户分群", "Segments"),
    ("/rules", "规则效果", "Rules"),
    ("/customers", "客户查询", "Customers"),
    ("/editor", "规则编辑", "Rules editor"),
]

STYLE = """
body{font-family:system-ui,"PingFang SC","Microsoft YaHei","WenQuanYi Zen Hei",sans-serif;
margin:0;color:#222}
header{background:#c62f2f;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:center}
header a{color:#fff;text-decoration:none}header a.on{font-weight:bold;border-bottom:2px solid #fff}
header .en{color:#f6d4d4}
main{padding:16px 24px}h2{font-size:18px;margin:24px 0 8px}.en{color:#888;font-weight:normal}
.asof{color:#555;font-size:13px}.csv{font-size:12px;margin-left:8px}
table{border-collapse:collapse;font-size:13px}td,th{border-bottom:1px solid #eee;padding:4px 10px;
text-align:right;vertical-align:top}th{font-weight:600}th .en{display:block;font-size:11px}
th:first-child,td:first-child{text-align:left}[data-kind=text],[data-kind=label]{text-align:left}
.chart{width:100%;height:340px}.panel{display:flex;gap:32px;flex-wrap:wrap}
.ok{color:#17803d;white-space:pre-wrap}.bad{color:#c62f2f;white-space:pre-wrap}textarea{width:100%;height:420px;
font-family:monospace;font-size:13px}pre{background:#f6f6f6;padding:8px;overflow:auto}
form.range{margin:8px 0}form.range input{margin:0 6px}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def data(rows: Any) -> str:
    """JSON for a <script type=application/json> block (no `</` can close the script)."""
    text = orjson.dumps(rows, default=str).decode()
    return text.replace("</", "<\\/")


@dataclass
class Table:
    """Rows to show under labelled columns (keys of formats.COLUMNS), downloadable as CSV."""

    id: str
    rows: list[dict[str, Any]]
    columns: list[str]
    csv_columns: list[str] = field(
        default_factory=list
    )  # raw columns of the CSV (default: columns)

    def csv(self, filename: str) -> Response:
        keys = self.csv_columns or self.columns
        return Response(
            csv_text(self.rows, keys),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{filename}-{self.id}.csv"'},
        )

    def html(self, zone: ZoneInfo, query: Mapping[str, str]) -> str:
        if not self.rows:
            return f'<p id="{self.id}">暂无数据 <span class="en">no data yet</span></p>'
        cols = [COLUMNS[k] for k in self.columns]
        head = "".join(
            f'<th data-kind="{c.kind}">{esc(c.zh)}<span class="en">{esc(c.en)}</span></th>'
            for c in cols
        )
        body = "".join(
            "<tr>"
            + "".join(
                f'<td data-kind="{c.kind}">{esc(show(row.get(c.key), c.kind, zone))}</td>'
                for c in cols
            )
            + "</tr>"
            for row in self.rows
        )
        link = "?" + urlencode({**query, "csv": self.id})
        return (
            f'<table id="{self.id}"><tr>{head}</tr>{body}</table>'
            f'<a class="csv" id="{self.id}-csv" href="{esc(link)}">下载 CSV '
            f'<span class="en">download CSV</span></a>'
        )


def as_of_line(zone: ZoneInfo, latest_event: datetime | None) -> str:
    """What every page says first: when it was read, and how far the data reaches in event
    time (the latest event ClickHouse holds), in the shop's zone."""
    now = local_time(datetime.now(UTC), zone)
    reach = (
        f"数据截至 {local_time(latest_event, zone)}（最新事件时间）"
        f' <span class="en">data up to {local_time(latest_event, zone)} (latest event time)</span>'
        if latest_event is not None
        else '暂无事件 <span class="en">no events yet</span>'
    )
    return (
        f'<p class="asof" id="as-of">读取于 {now} <span class="en">read at {now}</span> · '
        f"{reach} · {esc(zone.key)}</p>"
    )


def page(
    title_zh: str,
    title_en: str,
    path: str,
    body: str,
    script: str = "",
    as_of: str = "",
    script_src: str = "",
) -> HTMLResponse:
    nav = "".join(
        f'<a href="{href}" class="{"on" if href == path else ""}">{zh} '
        f'<span class="en">{en}</span></a>'
        for href, zh, en in NAV
    )
    return HTMLResponse(
        f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<title>ecrm · {esc(title_zh)} {esc(title_en)}</title><style>{STYLE}</style>
<script src="/static/echarts/echarts.min.js"></script></head>
<body><header><b>ecrm</b>{nav}</header><main>
<h1>{esc(title_zh)} <span class="en">{esc(title_en)}</span></h1>{as_of}{body}</main>
{f'<script src="{esc(script_src)}"></script>' if script_src else ""}<script>{script}
document.body.dataset.loaded = 'yes';</script></body></html>"""
    )


@dataclass(frozen=True)
class DateRange:
    """A page's period [start, end): whole shop-local days as the form sets them, or, by
    default, the last N days up to now (as `ecrm rules backtest --since 30d` and
    `ecrm sql … --param since=-30d` count them, so the same question gets the same answer)."""

    start: datetime
    end: datetime
    zone: ZoneInfo
    rolling: bool = False  # the default: exactly N days back from now

    @property
    def since(self) -> date:
        return self.start.astimezone(self.zone).date()

    @property
    def until(self) -> date:
        return (self.end - timedelta(microseconds=1)).astimezone(self.zone).date()

    @property
    def days(self) -> int:
        return round((self.end - self.start) / timedelta(days=1))

    def form(self, action: str) -> str:
        span = (
            f"近 {self.days} 天，截至此刻 last {self.days} days up to now"
            if self.rolling
            else f"{self.days} 天 days"
        )
        return f"""<form class="range" id="range" method="get" action="{action}">
从 <span class="en">from</span><input type="date" name="since" value="{self.since}">
至 <span class="en">to</span><input type="date" name="until" value="{self.until}">
<button>查看 <span class="en">Show</span></button>
<span class="en" id="range-text">({span}, {esc(self.zone.key)})</span></form>"""


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=zone).astimezone(UTC)


def date_range(
    since: str | None, until: str | None, days: int | None, default_days: int, zone: ZoneInfo
) -> DateRange:
    """From the query string: `since`/`until` dates (whole days in the shop's zone; either
    alone: from that day on, or up to that day), else the last `days` (default
    `default_days`) days up to now."""
    now = datetime.now(UTC)
    if since is None and until is None:
        return DateRange(now - timedelta(days=days or default_days), now, zone, rolling=True)
    try:
        last = date.fromisoformat(until) if until else now.astimezone(zone).date()
        first = (
            date.fromisoformat(since)
            if since
            else last - timedelta(days=(days or default_days) - 1)
        )
    except ValueError:
        raise HTTPException(400, "since/until: dates as YYYY-MM-DD") from None
    if first > last:
        raise HTTPException(400, "since must not be after until")
    return DateRange(_midnight(first, zone), _midnight(last + timedelta(days=1), zone), zone)
