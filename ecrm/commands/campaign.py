"""`ecrm campaign send CAMPAIGN_ID`: batch marketing down the same path as the real-time rules.

Each selected customer becomes one campaign event on `{prefix}campaigns` (key = customer_id,
event_id = `campaign:ID:customer`). The worker takes it like any input event: it is folded
(remembered, nothing else), then the rules that start on it —
`when: {event: campaigns, where: {campaign: ID}}` — decide with the same cooldown, contact cap,
quiet hours, budget and holdout, queue the action through the same outbox, and record the
decision in `rule_decisions`. Sending a campaign again repeats the same event ids, which the
worker counts once, so nobody hears from it twice.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from agents.audience import select_audience
from agents.rules.check import describe_rule
from agents.rules.conditions import holds
from ecrm.output import from_spreadsheet
from ecrm.progress import Progress
from schemas.audience_where import checked_where
from schemas.errors import AudienceError, RulesError
from schemas.events import campaign_event_id
from schemas.rules import Rule, RuleSet, load_rules
from streams.analysis import open_for_analysis
from streams.bulk_producer import BulkProducer
from streams.kafka_auth import KafkaAuth
from streams.settings import Settings
from streams.topics import ensure_topics

#: like a rule id: letters (Chinese too), digits, `-`, `_`, `.`; it goes into every event id
CAMPAIGN_ID = re.compile(r"[\w.-]{1,64}")
MAX_CUSTOMER_ID = 256
FLUSH_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Member:
    """One customer of a campaign's audience, with their shop when the audience says it."""

    customer_id: str
    shop_id: str | None = None


def checked_campaign_id(text: str) -> str:
    """The campaign id, or AudienceError saying what one looks like."""
    if not CAMPAIGN_ID.fullmatch(text):
        raise AudienceError(
            f"campaign id {text!r}: use letters, digits, -, _ or . (at most 64), "
            "e.g. spring-sale or winback-2024-06"
        )
    return text


def members_of(rows: Iterable[Mapping[str, Any]], source: str = "the audience") -> list[Member]:
    """Each customer once (first row wins), with `shop_id` where the rows have one."""
    seen: set[str] = set()
    members: list[Member] = []
    for number, row in enumerate(rows, 1):
        customer = str(row.get("customer_id") or "").strip()
        if not customer or len(customer) > MAX_CUSTOMER_ID:
            raise AudienceError(
                f"{source}, row {number}: customer_id must be 1 to {MAX_CUSTOMER_ID} characters"
            )
        if customer in seen:
            continue
        seen.add(customer)
        shop = str(row.get("shop_id") or "").strip()
        members.append(Member(customer, shop or None))
    return members


def read_audience_csv(stream: TextIO, source: str) -> list[Member]:
    """An audience file: CSV with a header holding `customer_id` (and maybe `shop_id`), as
    `ecrm audience export` writes it or a spreadsheet saves it."""
    reader = csv.DictReader(stream)
    names = [name.strip() for name in reader.fieldnames or []]
    if "customer_id" not in names:
        raise AudienceError(
            f"{source}: no customer_id column (the header is {', '.join(names) or 'empty'}); "
            "an audience file is CSV with a customer_id column"
        )
    reader.fieldnames = names
    rows = (
        {k: from_spreadsheet(v) if isinstance(v, str) else v for k, v in r.items()} for r in reader
    )
    return members_of(rows, source)


def campaign_event(campaign: str, member: Member, now: datetime) -> dict[str, Any]:
    """The campaign event of one customer: the same event id however often it is sent."""
    event: dict[str, Any] = {
        "event_id": campaign_event_id(campaign, member.customer_id),
        "customer_id": member.customer_id,
        "ts": now.astimezone(UTC).isoformat(timespec="milliseconds"),
        "campaign": campaign,
    }
    if member.shop_id:
        event["shop_id"] = member.shop_id
    return event


def listening_rules(rules: RuleSet, campaign: str) -> list[Rule]:
    """The enabled rules a campaign event of this campaign starts (by `event` and `campaign`;
    other `where:` tests, such as shop_id, are left to the worker)."""
    found = []
    for rule in rules.enabled:
        when = rule.when
        if when.event != "campaigns":
            continue
        test = when.where.get("campaign")
        if test is None or holds(test, [campaign], "text"):
            found.append(rule)
    return found


@dataclass
class CampaignReport:
    """What a send did, as the summary prints it."""

    campaign: str
    how: str
    selected: int
    topic: str
    rules_file: Path
    dry_run: bool = False
    sent: int = 0
    failed: int = 0
    first_error: str | None = None
    rules: list[Rule] = field(default_factory=list)
    rules_problem: str | None = None

    def print(self, out: TextIO) -> None:
        head = f"campaign {self.campaign}: {self.selected} customers selected ({self.how})"
        if self.dry_run:
            out.write(f"{head}; dry run, nothing sent\n")
        else:
            out.write(f"{head}, {self.sent} events sent to {self.topic}\n")
        if self.failed:
            out.write(
                f"  {self.failed} events NOT delivered ({self.first_error}); "
                "sending again is safe: delivered ones count once\n"
            )
        if self.rules_problem is not None:
            out.write(f"  cannot tell which rules act on it: {self.rules_problem}\n")
        elif self.rules:
            out.write(f"  rules that act on it ({self.rules_file}):\n")
            width = max(len(rule.id) for rule in self.rules)
            out.writelines(f"    {r.id:<{width}}  {describe_rule(r)}\n" for r in self.rules)
        else:
            out.write(
                f"  warning: no enabled rule in {self.rules_file} starts on this campaign "
                f"(when: {{event: campaigns, where: {{campaign: {self.campaign}}}}}); "
                "the worker records the events and sends nothing\n"
            )


def send_campaign(
    settings: Settings,
    campaign: str,
    members: Sequence[Member],
    *,
    now: datetime,
    progress: bool | None = None,
) -> tuple[int, int, str | None]:
    """Produce one campaign event per member; (sent, not delivered, first error)."""
    topic = settings.topic("campaigns")
    ensure_topics(
        settings.kafka_bootstrap, [topic], settings.partitions, auth=KafkaAuth.of(settings)
    )
    producer = BulkProducer(settings.kafka_bootstrap, topic, auth=KafkaAuth.of(settings))
    done = 0
    bar = Progress(len(members), lambda: done, enabled=progress)
    for member in members:
        event = campaign_event(campaign, member, now)
        producer.send(member.customer_id.encode(), orjson.dumps(event))
        done += 1
        bar.tick(done)
    delivery = producer.close(timeout=FLUSH_TIMEOUT_S)
    bar.done(done)
    return delivery.sent, delivery.failed, delivery.first_error


def run_campaign_send(
    settings: Settings,
    campaign: str,
    *,
    audience: Path | None = None,
    where: str | None = None,
    query: str | None = None,
    params: Sequence[str] = (),
    dry_run: bool = False,
    progress: bool | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """`ecrm campaign send`: select, send, print the summary; 0 when every event was delivered."""
    checked_campaign_id(campaign)
    now = datetime.now(UTC)
    members, how = _select(settings, audience=audience, where=where, query=query, params=params)
    report = CampaignReport(
        campaign=campaign,
        how=how,
        selected=len(members),
        topic=settings.topic("campaigns"),
        rules_file=settings.rules_file,
        dry_run=dry_run,
    )
    try:
        report.rules = listening_rules(load_rules(settings.rules_file), campaign)
    except RulesError as exc:
        report.rules_problem = str(exc).splitlines()[0]
    if not dry_run and members:
        report.sent, report.failed, report.first_error = send_campaign(
            settings, campaign, members, now=now, progress=progress
        )
    report.print(out)
    return 0 if report.failed == 0 else 1


def _select(
    settings: Settings,
    *,
    audience: Path | None,
    where: str | None,
    query: str | None,
    params: Sequence[str],
) -> tuple[list[Member], str]:
    """The members, by exactly one of an audience file, a where-clause or a named query."""
    options = {"--audience": audience, "--where": where, "--query": query}
    given = [name for name, value in options.items() if value is not None]
    if len(given) != 1:
        raise AudienceError(
            "say who gets the campaign with one of --audience FILE.csv, --where CONDITION "
            f"or --query NAME{' (not ' + ' and '.join(given) + ')' if given else ''}"
        )
    if audience is not None:
        if params:
            raise AudienceError("--param goes with --query, not --audience")
        try:
            with audience.open(encoding="utf-8-sig", newline="") as handle:
                return read_audience_csv(handle, str(audience)), f"--audience {audience}"
        except OSError as exc:
            raise AudienceError(f"{audience}: cannot be read ({exc.strerror})") from None
    if where is not None:
        checked_where(where)  # a bad clause is refused before ClickHouse is opened
    ch = open_for_analysis(settings.clickhouse_url)
    try:
        selected = select_audience(ch, where=where, query=query, params=params)
    finally:
        ch.close()
    return members_of(selected.rows, selected.how), selected.how


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ecrm.commands.audience import selection_args

    campaign = sub.add_parser(
        "campaign", help="batch campaigns through the rules (docs/campaigns.md)"
    )
    campaign_sub = campaign.add_subparsers(dest="campaign_command", required=True)
    send = campaign_sub.add_parser("send", help="one campaign event per selected customer")
    send.add_argument("campaign_id", help="the campaign, as rules name it: where: {campaign: ID}")
    selection_args(send, with_file=True)
    send.add_argument("--dry-run", action="store_true", help="select and report, send nothing")
    send.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace, settings: Settings) -> int:
    return run_campaign_send(
        settings,
        args.campaign_id,
        audience=args.audience,
        where=args.where,
        query=args.query,
        params=args.param,
        dry_run=args.dry_run,
        progress=False if args.no_progress else None,
    )
