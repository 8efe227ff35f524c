"""`ecrm rules backtest FILE --since 30d`: what a rules file would have done over the history in
ClickHouse (the run itself: agents/backtest/run.py), printed as a marketer's table or JSON.
`--warm-up 30d` replays that much earlier history first, without reporting its decisions
(docs/rules.md, "Backtest").
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

from agents.backtest.report import DEFAULT_WARM_UP
from agents.backtest.run import BacktestRun, run_backtest
from agents.profile.policy import rfm_policy
from agents.rules.check import check_rules
from schemas.errors import ConfigError
from schemas.membership import load_programme
from schemas.rule_values import parse_duration
from schemas.rules import load_rules
from streams.analysis import open_for_analysis
from streams.app import INPUT_TOPICS
from streams.settings import Settings

#: suppression reasons, in the order the guards apply, and their column titles
SUPPRESSION_COLUMNS = {
    "cooldown": "cooldown",
    "contact_cap": "cap",
    "budget": "budget",
    "cancelled": "cancelled",
    "rule_disabled": "rule off",
}
_DURATION_LIKE = re.compile(r"\s*\d+\s*[a-z]", re.IGNORECASE)


def parse_moment(text: str, now: datetime, zone: ZoneInfo) -> datetime:
    """`30d`/`12h` (that long before now), an ISO date (midnight in the shop's zone) or an ISO
    time with an offset; a time without an offset is refused rather than guessed."""
    value = text.strip()
    if _DURATION_LIKE.match(value):
        try:
            return now - parse_duration(value)
        except ValueError as exc:
            raise ConfigError(f"--since/--until {text!r}: {exc}") from None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day, datetime.min.time(), tzinfo=zone).astimezone(UTC)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--since/--until {text!r}: use a duration (30d, 12h), a date (2024-05-01) "
            "or a time with an offset (2024-05-01T08:00+08:00)"
        ) from None
    if moment.tzinfo is None:
        raise ConfigError(f"--since/--until {text!r} has no UTC offset; say +08:00 or Z")
    return moment.astimezone(UTC)


def run_backtest_cmd(
    settings: Settings,
    path: Path,
    *,
    since: str,
    until: str | None = None,
    warm_up: str | None = None,
    as_json: bool = False,
) -> int:
    """The command: check the file, read ClickHouse, replay, print. Exit 1 on a bad file."""
    code, message = check_rules(path)
    if code != 0:
        print(message, file=sys.stderr)
        return code
    rules = load_rules(path)
    now = datetime.now(UTC)
    start = parse_moment(since, now, rules.policy.zone)
    end = parse_moment(until, now, rules.policy.zone) if until else now
    if end <= start:
        raise ConfigError(f"--since {since!r} is not before --until {until or 'now'!r}")
    warm = _warm_up(warm_up)
    ch = open_for_analysis(settings.clickhouse_url)  # as `ecrm sql`: a read-only user will do
    try:
        run, _ = run_backtest(
            ch,
            rules,
            rfm_policy(settings),
            since=start,
            until=end,
            warm_up=warm,
            source=str(path),
            consent_default=settings.consent_granted,
            programme=load_programme(settings.membership_file)
            if settings.membership_file
            else None,
            topics=tuple(settings.topic(n) for n in INPUT_TOPICS),
        )
    finally:
        ch.close()
    print(
        orjson.dumps(run.as_json(), option=orjson.OPT_INDENT_2).decode() if as_json else render(run)
    )
    return 0


def _warm_up(text: str | None) -> timedelta | None:
    if not text:
        return DEFAULT_WARM_UP
    if text.strip().lower() in ("none", "0"):
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"--warm-up {text!r}: {exc}") from None


def render(run: BacktestRun) -> str:
    """The per-rule table a marketer reads, then overlaps and measured uplift."""
    local = "%Y-%m-%d %H:%M"
    lines = [
        f"{run.source}: backtest {run.since.astimezone(run.zone):{local}} .. "
        f"{run.until.astimezone(run.zone):{local}} ({run.zone.key})",
        f"replayed {run.stats.events:,} events of {run.customers:,} customers in "
        f"{run.seconds:.1f}s ({run.events_per_s:,.0f} events/s); "
        + (
            f"warmed up from {run.warm_from.astimezone(run.zone):{local}}"
            if run.warm_from < run.since
            else "profiles start empty (see --warm-up)"
        ),
        "",
    ]
    reasons = [r for r in SUPPRESSION_COLUMNS if any(o.suppressed.get(r) for o in run.report.rules)]
    reasons += sorted({r for o in run.report.rules for r in o.suppressed} - set(reasons))
    head = ["rule", "fired", "customers", "coupon ¥", "held out", "deferred"]
    head += [SUPPRESSION_COLUMNS.get(r, r) for r in reasons]
    table = [head]
    for o in run.report.rules:
        name = o.rule_id if o.enabled else f"{o.rule_id} (off)"
        deferred = f"{o.deferred}" + (f" ({o.pending} pending)" if o.pending else "")
        row = [name, str(o.fired), str(o.customers), f"{o.coupon_cost:.2f}", str(o.held_out)]
        table.append(row + [deferred] + [str(o.suppressed.get(r, 0)) for r in reasons])
    lines += _columns(table)
    legend = "fired counts a deferred action (quiet hours) once, when delivered"
    if reasons:
        legend += "; " + ", ".join(SUPPRESSION_COLUMNS.get(r, r) for r in reasons)
        legend += ": suppressed, by reason"
    lines.append(legend)
    if run.report.overlap:
        lines += ["", "customers reached by both rules:"]
        lines += [f"  {a} & {b}: {n}" for (a, b), n in run.report.overlap.items()]
    if run.uplift:
        lines += ["", "measured uplift of the live decisions (rule_performance, last touch):"]
        table = [["rule", "treated", "converted", "held out", "converted", "uplift", "95% CI"]]
        for u in run.uplift:
            ci = u.interval
            table.append(
                [
                    u.rule_id,
                    str(u.treated),
                    f"{u.treated_rate:.1%}",
                    str(u.held_out),
                    f"{u.held_out_rate:.1%}",
                    f"{u.uplift * 100:+.1f} pp" if u.uplift is not None else "-",
                    f"{ci[0] * 100:+.1f} .. {ci[1] * 100:+.1f} pp" if ci else "-",
                ]
            )
        lines += _columns(table)
    return "\n".join(lines)


def _columns(table: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in table
    ]
