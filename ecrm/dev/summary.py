"""What `ecrm demo` prints at the end: the worker's own counts (Redis), then every figure an
analyst can ask again — customers per segment, decisions per rule, membership, GMV, rule
performance with uplift — from ClickHouse once it has caught up with the worker, each naming
the query (`ecrm sql …`) and the dashboard page that give the same figure, as of the event
time the data reaches."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from ecrm.commands.member import show_member
from ecrm.commands.profile import show_profile
from schemas.membership import load_programme
from schemas.outputs import SEGMENTS
from schemas.profile import Profile, from_stored
from schemas.rules import load_rules
from streams import counters, keyspace
from streams.clickhouse import ClickHouse, load_query
from streams.redis_client import mget
from streams.settings import Settings

SEGMENT_ORDER = [*SEGMENTS[1:], SEGMENTS[0]]  # the eight of PRODUCT.md, then prospects


def say(text: str = "", end: str = "\n") -> None:
    print(text, end=end, flush=True)


def summary(
    s: Settings,
    ch: ClickHouse,
    client: redis.Redis,
    produced: int,
    elapsed: float,
    history: timedelta,
) -> None:
    """Counts of the worker's own (Redis) first, then every figure an analyst can ask again
    (`ecrm sql`, the dashboard) from ClickHouse, which has caught up with the worker."""
    stats = counters.stats(client, s.partitions)
    now = datetime.now(UTC)
    as_of = _as_of(ch)
    zone = load_rules(s.rules_file).policy.zone
    say()
    if as_of is not None:
        say(
            f"  figures as of {as_of.astimezone(zone):%Y-%m-%d %H:%M:%S} {zone.key} (event time: "
            f"the latest event in ClickHouse; now is {now.astimezone(zone):%H:%M:%S})"
        )
    say(f"  events produced      {produced:>10,}")
    say(f"  events applied       {stats.get('events', 0):>10,}")
    say(
        f"  duplicates ignored   {stats.get('duplicates', 0):>10,}   (producer retries, same event_id)"
    )
    say(
        f"  dead-lettered        {stats.get('dead_letters', 0):>10,}   (invalid, with reason, on {s.topic('dead-letter')})"
    )
    say(
        f"  segment changes      {stats.get('segment_changes', 0):>10,}   (on {s.topic('segment-changes')})"
    )
    say(
        f"  member changes       {stats.get('member_changes', 0):>10,}   (points, levels, tags, on {s.topic('member-changes')})"
    )
    say(f"  throughput           {produced / elapsed:>10,.0f}   events/s")
    profiles = _profiles(client)
    dist = ch.query(load_query("rfm_distribution"))
    counts = {str(r["segment"]): int(r["customers"]) for r in dist}
    say()
    say(
        f"  customers per RFM segment ({sum(counts.values()):,} customers; each one's latest "
        "profile, as `ecrm sql rfm_distribution` and the dashboard count them)"
    )
    for seg in SEGMENT_ORDER:
        if counts.get(seg):
            say(
                f"    {seg:<20} {counts[seg]:>7,}  {'#' * max(1, 50 * counts[seg] // max(counts.values()))}"
            )
    if profiles:
        top = max(profiles, key=lambda p: p.monetary)
        say()
        say(f"  a sample profile (the top spender), as `ecrm profile {top.customer_id}` prints it:")
        show_profile(s, top.customer_id, as_json=False)
    # the period of the tables of decisions: whole shop days from the history's first, as the
    # dashboard's date range takes them (/rules?since=FIRST)
    first = (now - history).astimezone(zone).date()
    since = datetime.combine(first, datetime.min.time(), tzinfo=zone)
    _rules_table(ch, s.rules_file, since, now)
    _membership(s, ch, profiles)
    say()
    say("  ClickHouse: GMV by current segment (ecrm sql gmv_by_segment)")
    _gmv_table(ch)
    say()
    window = load_rules(s.rules_file).policy.attribution_window
    hours = max(1, int(window.total_seconds() // 3600))
    say(
        f"  ClickHouse: rule performance since {first} (shop time), last-touch attribution "
        f"within {hours} h\n    (ecrm sql rule_performance --param since={since.isoformat()} "
        f"--param until=now --param window_hours={hours}; the dashboard's /rules?since={first})"
    )
    _rule_performance(ch, since, now, hours)
    say()


def _as_of(ch: ClickHouse) -> datetime | None:
    rows = ch.query("SELECT max(ts) AS at, count() AS n FROM events")
    if not rows or not rows[0]["n"]:
        return None
    at = rows[0]["at"]
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _rules_table(ch: ClickHouse, rules_file: Path, since: datetime, until: datetime) -> None:
    """Decisions per rule over the period rule performance reports (fired = its `sent`)."""
    rows = ch.query(load_query("rule_decisions"), {"since": since.astimezone(UTC), "until": until})
    per_rule: dict[str, Counter[str]] = {}
    for row in rows:
        outcome = row["outcome"] + (f":{row['reason']}" if row["outcome"] == "suppressed" else "")
        per_rule.setdefault(row["rule_id"], Counter())[outcome] += int(row["decisions"])
    say()
    say(
        f"  marketing rules ({rules_file.name}): decisions per rule in ClickHouse\n    (ecrm sql "
        f"rule_decisions --param since={since.isoformat()} --param until=now)"
    )
    say(f"    {'rule':<24} {'fired':>7} {'held out':>9} {'deferred':>9}  suppressed (why)")
    for rule_id, c in sorted(per_rule.items()):
        why = ", ".join(
            f"{k.split(':', 1)[1]} {v:,}"
            for k, v in sorted(c.items())
            if k.startswith("suppressed")
        )
        say(
            f"    {rule_id:<24} {c['fired']:>7,} {c['held_out']:>9,} {c['deferred']:>9,}  {why or '-'}"
        )
    if not per_rule:
        say("    (no rule fired)")


def _membership(s: Settings, ch: ClickHouse, profiles: list[Profile]) -> None:
    """Members per level, points outstanding and lapsing, top tags; a sample member view."""
    if s.membership_file is None:
        return  # no programme: nothing to show
    programme = load_programme(s.membership_file)
    levels = Counter(p.level for p in profiles if p.level)
    say()
    say(f"  membership ({s.membership_file.name}): members per level")
    for level in programme.levels.ladder:
        n = levels.get(level.id, 0)
        bar = "#" * (max(1, 50 * n // max(levels.values())) if n else 0)
        say(f"    {level.id:<10} {level.name or '':<6} {n:>7,}  {bar}")
    say(
        f"  points outstanding   {sum(p.points for p in profiles):>10,}   spendable "
        f"(+{sum(p.points_pending for p in profiles):,} pending in return windows)"
    )
    today = datetime.now(programme.zone).date().replace(day=1)
    next_month = (today + timedelta(days=32)).replace(day=1)
    liability = ch.query(load_query("points_liability"), {"timezone": programme.timezone})
    lapsing = sum(r["points"] for r in liability if r["expiry_month"] == next_month)
    say(f"  lapsing next month   {lapsing:>10,}   ({next_month:%Y-%m}; ecrm sql points_liability)")
    for row in liability[:3]:
        month = f"{row['expiry_month']:%Y-%m}" if row["expiry_month"] else "never"
        say(f"    lapse {month:<8} {row['points']:>10,} points  {row['members']:>6,} members")
    tags = Counter(t for p in profiles for t in p.tags)
    say(f"  top tags             {', '.join(f'{t} {n:,}' for t, n in tags.most_common(5)) or '-'}")
    members = [p for p in profiles if p.level]
    if members:
        top = max(members, key=lambda p: (programme.levels.rank(p.level), p.points))
        say()
        say(f"  a sample member, as `ecrm member show {top.customer_id}` prints it:")
        show_member(s, top.customer_id, as_json=False)


def _gmv_table(ch: ClickHouse) -> None:
    now = datetime.now(UTC)
    rows = ch.query(
        load_query("gmv_by_segment"),
        {"since": now - timedelta(days=365), "until": now + timedelta(days=1)},
    )
    say(f"    {'segment':<20} {'buyers':>9} {'orders':>7} {'GMV ¥':>12} {'AOV ¥':>9}")
    for row in rows:
        say(
            f"    {row['segment']:<20} {row['customers']:>9,} {row['orders']:>7,} "
            f"{row['gmv']:>12,.2f} {row['aov']:>9,.2f}"
        )
    say("    (buyers: customers with a paid order in the last 365 days, by their segment now)")


def _rule_performance(ch: ClickHouse, since: datetime, until: datetime, window_hours: int) -> None:
    rows = ch.query(
        load_query("rule_performance"),
        {"since": since.astimezone(UTC), "until": until, "window_hours": window_hours},
    )
    say(
        f"    {'rule':<22} {'decided':>8} {'sent':>6} {'held out':>8} {'converted':>9} "
        f"{'treated':>8} {'held-out':>8} {'uplift (95% CI)':>24} {'coupon cost ¥':>13}"
    )
    for r in rows:

        def pct(x: object) -> str:
            return "-" if x is None else f"{float(x):.1%}"  # type: ignore[arg-type]

        ci = (
            "-"
            if r["uplift"] is None
            else f"{float(r['uplift']):+.1%} [{float(r['uplift_ci_low']):+.1%}, {float(r['uplift_ci_high']):+.1%}]"
        )
        say(
            f"    {r['rule_id']:<22} {r['decided']:>8,} {r['sent']:>6,} {r['held_out']:>8,} "
            f"{r['converted']:>9,} {pct(r['treated_rate']):>8} {pct(r['held_out_rate']):>8} {ci:>24} "
            f"{float(r['coupon_cost'] or 0):>13,.2f}"
        )
    if not rows:
        say("    (no decisions yet)")
    else:
        say(
            "    uplift: converted share of treated minus held-out customers, 95% interval; "
            "coupon cost: coupons sent x value"
        )


def _profiles(client: redis.Redis) -> list[Profile]:
    keys = list(client.scan_iter(match=keyspace.PROFILES_PATTERN, count=2000))
    out: list[Profile] = []
    for i in range(0, len(keys), 1000):
        out.extend(from_stored(v) for v in mget(client, keys[i : i + 1000]) if v)
    return out
