"""How the dashboard shows a figure: every column's label in Chinese and English and its kind
(a count, a share, a rate, a difference in points, yuan, a time in the shop's zone), and the
one function that turns a value of that kind into text — so a table, its chart and its CSV
agree on what a column is, and no raw column name, `1.829e+04` or UTC microsecond reaches a
marketer. Pure: values in, text out."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from ecrm.output import spreadsheet_safe

Kind = Literal[
    "text", "label", "count", "share", "rate", "points", "yuan", "days", "number", "time"
]

#: Chinese names of the values a marketer reads in tables (outcomes, reasons, channels),
#: shown before the value itself: "抑制 suppressed"
VALUE_NAMES = {
    "fired": "发送",
    "held_out": "对照组",
    "suppressed": "抑制",
    "deferred": "延后",
    "holdout": "对照组",
    "cooldown": "冷却期",
    "contact_cap": "触达上限",
    "budget": "预算",
    "quiet_hours": "安静时段",
    "cancelled": "已撤回",
    "historical": "历史",
    "no_consent": "未授权",
    "rule_disabled": "规则已停用",
    "sms": "短信",
    "push": "推送",
    "inbox": "站内信",
    "wechat": "微信",
    "email": "邮件",
    "miniprogram": "小程序",
    "alibaba": "阿里",
    "app": "App",
}


@dataclass(frozen=True)
class Column:
    """A column of a dashboard table: the row's key, its labels, how its values read."""

    key: str
    zh: str
    en: str
    kind: Kind = "text"


#: Every column the dashboard shows, once (a page names the keys it wants, in order)
COLUMNS = {
    c.key: c
    for c in (
        Column("segment", "分群", "Segment"),
        Column("segment_name", "名称", "Name"),
        Column("customers", "客户数", "Customers", "count"),
        Column("share", "占比", "Share", "share"),
        Column("avg_days_since_last_order", "距上次购买（天）", "Days since last order", "days"),
        Column("avg_frequency", "平均购买次数", "Avg. orders", "number"),
        Column("avg_monetary", "平均消费", "Avg. spend", "yuan"),
        Column("total_monetary", "总消费", "Total spend", "yuan"),
        Column("segment_a", "起始分群", "From"),
        Column("segment_b", "当前分群", "To"),
        Column("share_of_a", "占起始分群", "Share of from", "share"),
        Column("rule_id", "规则", "Rule"),
        Column("decided", "决策", "Decided", "count"),
        Column("sent", "发送", "Sent", "count"),
        Column("held_out", "对照组", "Held out", "count"),
        Column("suppressed", "抑制", "Suppressed", "count"),
        Column("delivery_sent", "已投递", "Delivery sent", "count"),
        Column("delivered", "送达", "Delivered", "count"),
        Column("clicked", "点击", "Clicked", "count"),
        Column("delivery_failed", "投递失败", "Delivery failed", "count"),
        Column("converted", "转化", "Converted", "count"),
        Column("treated_rate", "实验组转化率", "Treated conversion", "rate"),
        Column("held_out_rate", "对照组转化率", "Held-out conversion", "rate"),
        Column("uplift_ci", "提升（95% 区间）", "Uplift (95% CI)"),
        Column("coupon_cost", "券成本", "Coupon cost", "yuan"),
        Column("incremental_gmv", "增量 GMV", "Incremental GMV", "yuan"),
        Column("decided_at", "时间", "Time", "time"),
        Column("customer_id", "客户", "Customer"),
        Column("outcome", "结果", "Outcome", "label"),
        Column("reason", "原因", "Reason", "label"),
        Column("channel", "渠道", "Channel", "label"),
        Column("coupon_value", "券面额", "Coupon value", "yuan"),
        Column("recency_days", "距上次购买（天）", "Days since last order", "days"),
        Column("frequency", "购买次数", "Orders", "count"),
        Column("monetary", "消费金额", "Spend", "yuan"),
        Column("cart", "购物车", "Cart"),
        Column("favorites", "收藏", "Favourites"),
        Column("fired", "会触发", "Would fire", "count"),
        Column("deferred", "延后", "Deferred", "count"),
        Column("item", "项目", "Item"),
        Column("value", "值", "Value"),
    )
}


def money(value: Any) -> str:
    """¥ with thousands separators and two decimals: ¥18,290.00, -¥12.50."""
    amount = Decimal(str(value)).quantize(Decimal("0.01"))
    sign = "-" if amount < 0 else ""
    return f"{sign}¥{abs(amount):,.2f}"


def percent(value: Any, signed: bool = False) -> str:
    """A share or rate (0.0578) as a percentage: 5.8%; signed: +5.8%."""
    return f"{float(value):+.1%}" if signed else f"{float(value):.1%}"


def local_time(value: datetime | str, zone: ZoneInfo) -> str:
    """A moment in the shop's zone, to the second: 2026-12-07 11:31:05."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:  # ClickHouse hands DateTime64(…, 'UTC') back naive or aware
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def show(value: Any, kind: Kind, zone: ZoneInfo) -> str:
    """One value as the dashboard writes it; None (undefined) as "–"."""
    if value is None or value == "":
        return "–"
    if kind == "count":
        return f"{int(value):,}"
    if kind in ("share", "rate"):
        return percent(value)
    if kind == "points":
        return f"{float(value) * 100:+.1f} pp"
    if kind == "yuan":
        return money(value)
    if kind == "days":
        return f"{float(value):,.1f}"
    if kind == "number":
        return f"{float(value):,.2f}"
    if kind == "time":
        return local_time(value, zone)
    if kind == "label":
        name = VALUE_NAMES.get(str(value))
        return f"{name} {value}" if name else str(value)
    if isinstance(value, float):  # never scientific notation, whatever the column
        return f"{value:,.4f}".rstrip("0").rstrip(".")
    if isinstance(value, datetime):
        return local_time(value, zone)
    return str(value)


def uplift_text(row: Mapping[str, Any]) -> str | None:
    """ "+12.3% [+4.1%, +20.5%]": the uplift in percentage points with its 95% interval."""
    if row.get("uplift") is None:
        return None
    low, high = row.get("uplift_ci_low"), row.get("uplift_ci_high")
    text = percent(row["uplift"], signed=True)
    if low is None or high is None:
        return text
    return f"{text} [{percent(low, signed=True)}, {percent(high, signed=True)}]"


def csv_text(rows: Iterable[Mapping[str, Any]], keys: list[str]) -> str:
    """The rows as CSV for a spreadsheet: a header of column keys, raw values (money exact,
    times ISO-8601 UTC), so a download can be read back without parsing our formatting;
    text that a spreadsheet would run as a formula gets a leading `'`."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(keys)
    for row in rows:
        writer.writerow([_raw(row.get(k)) for k in keys])
    return out.getvalue()


def _raw(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        value = " ".join(str(v) for v in value)
    if isinstance(value, str):
        return spreadsheet_safe(value)  # a customer id like =HYPERLINK(…) stays text
    return value
