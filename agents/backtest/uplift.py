"""The uplift a rule measurably had where it already ran live with a holdout, as the analysts'
`rule_performance` reports it (clickhouse/009_rule_performance.sql: last-touch attribution,
customers treated vs held out, a 95% interval), for the rules of the file being backtested."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from streams.clickhouse import ClickHouse, load_query

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Uplift:
    """Customers with a paid order attributed within the window, treated vs held out."""

    rule_id: str
    treated: int
    treated_converted: int
    held_out: int
    held_out_converted: int
    uplift: float | None  # treated rate - held-out rate
    interval: tuple[float, float] | None  # 95%; None when a group is empty

    @property
    def treated_rate(self) -> float:
        return self.treated_converted / self.treated if self.treated else 0.0

    @property
    def held_out_rate(self) -> float:
        return self.held_out_converted / self.held_out if self.held_out else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "treated_customers": self.treated,
            "treated_converted": self.treated_converted,
            "held_out_customers": self.held_out,
            "held_out_converted": self.held_out_converted,
            "uplift": self.uplift,
            "ci95": list(self.interval) if self.interval else None,
        }


def window_hours(window: timedelta) -> int:
    """The attribution window in whole hours, as `rule_performance` takes it (rounded up)."""
    return max(1, math.ceil(window / HOUR))


def measured_uplift(
    ch: ClickHouse, rule_ids: list[str], since: datetime, until: datetime, window: timedelta
) -> list[Uplift]:
    """Per rule of `rule_ids` that held customers out in [since, until), in that order."""
    rows = ch.query(
        load_query("rule_performance"),
        {"since": since, "until": until, "window_hours": window_hours(window)},
    )
    by_rule = {row["rule_id"]: row for row in rows}
    out = []
    for rule_id in rule_ids:
        row = by_rule.get(rule_id)
        if row is None or not row["held_out_customers"]:
            continue  # never ran with a holdout here: nothing to compare with
        low, high = row["uplift_ci_low"], row["uplift_ci_high"]
        out.append(
            Uplift(
                rule_id=rule_id,
                treated=int(row["treated_customers"] or 0),
                treated_converted=int(row["treated_converted"] or 0),
                held_out=int(row["held_out_customers"]),
                held_out_converted=int(row["held_out_converted"] or 0),
                uplift=row["uplift"],
                interval=(low, high) if low is not None and high is not None else None,
            )
        )
    return out
