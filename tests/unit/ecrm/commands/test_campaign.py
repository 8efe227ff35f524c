"""Audiences and campaigns without services: the where-clause is checked token by token, an
audience is written and read as CSV, a campaign event is the same however often it is sent,
it moves nothing in the profile, and rules start on it like on any event."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from agents.audience import Audience, unique_customers, where_sql
from agents.backtest.history import event_from_row
from agents.profile.fold import apply_event, fold_many
from agents.profile.rows import event_row
from agents.rules.contact_policy import holdout
from agents.rules.state import action_id_for
from ecrm.commands.audience import write_csv
from ecrm.commands.campaign import (
    CampaignReport,
    Member,
    campaign_event,
    checked_campaign_id,
    listening_rules,
    members_of,
    read_audience_csv,
    run_campaign_send,
)
from schemas.audience_where import PROFILE_COLUMNS, checked_where
from schemas.errors import AudienceError, RulesError
from schemas.events import EVENT_BY_TOPIC, CampaignEvent, campaign_event_id
from schemas.profile import empty_profile
from schemas.rules import parse_rules
from streams.settings import Settings
from tests.unit.agents.rules.rule_driver import (
    EXAMPLE,
    NOON,
    Customer,
    cart,
    example,
    outcomes,
    paid,
    ruleset,
)

CAMPAIGN_RULE = """
  - id: spring
    when: {event: campaigns, where: {campaign: spring-sale}}
    if: {segment: {in: [important_value, important_develop]}}
    cooldown: 30d
    holdout: 20%
    action: {kind: coupon, channel: sms, params: {value: 20, valid_for: 7d}}
"""


def campaign(customer: str = "c1", name: str = "spring-sale", at: datetime = NOON) -> CampaignEvent:
    return CampaignEvent.model_validate(campaign_event(name, Member(customer), at))


# --- the where-clause ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clause", "runs_as"),
    [
        (
            "segment IN ('important_keep','important_retain') AND monetary >= 500",
            "segment IN ( 'important_keep' , 'important_retain' ) AND monetary >= 500",
        ),
        ("has(tags, 'vip') and not has(tags,'do_not_disturb')",
         "has ( tags , 'vip' ) AND NOT has ( tags , 'do_not_disturb' )"),
        ("last_order_at < now() - interval 90 day", "last_order_at < now ( ) - INTERVAL 90 DAY"),
        ("recency_days BETWEEN 30 AND 90 OR recency_days IS NULL",
         "recency_days BETWEEN 30 AND 90 OR recency_days IS NULL"),
        ("Segment = 'it''s -- not a comment'", "segment = 'it''s -- not a comment'"),
        ("hasany(tags, ['a', 'b']) AND cart_value > 99.5",
         "hasAny ( tags , [ 'a' , 'b' ] ) AND cart_value > 99.5"),
    ],
)  # fmt: skip
def test_a_where_clause_over_profile_columns_runs_as_its_checked_tokens(
    clause: str, runs_as: str
) -> None:
    assert checked_where(clause) == runs_as


@pytest.mark.parametrize(
    ("clause", "says"),
    [
        ("segment = 'x'; DROP TABLE events", "; is not allowed"),
        ("customer_id IN (SELECT customer_id FROM events)", '"SELECT" is not a profile column'),
        ("1 = 1) UNION ALL SELECT name FROM system.users WHERE (1", '"UNION" is not a profile'),
        ("1 = 1) OR (1 = 1", '")" closes nothing'),
        ("segment = 'x' -- and the rest", "comments are not allowed"),
        ("segment = 'x' /* hidden */", "comments are not allowed"),
        ("`segment` = 'x'", "quoted names are not allowed"),
        ("\"segment\" = 'x'", "quoted names are not allowed"),
        ("segment = {s:String}", "query parameters are not allowed"),
        ("segment = 'x' SETTINGS readonly = 0", '"SETTINGS" is not a profile column'),
        ("sleep(3) = 0", '"sleep" is not a profile column'),
        ("segment = 'unterminated", "a string that is never closed"),
        ("segmnt = 'important_keep'", '(did you mean "segment"?)'),
        ("(segment = 'x'", "is never closed"),
        ("segment('x')", "segment is a column, not a function"),
        ("has = 1", "has is a function"),
        ("segment::String = 'x'", '":" is not allowed'),
        ("", "--where is empty"),
    ],
)
def test_anything_else_is_refused_with_where_and_why(clause: str, says: str) -> None:
    with pytest.raises(AudienceError) as refused:
        checked_where(clause)
    assert says in str(refused.value)


def test_the_audience_statement_holds_the_checked_clause_and_runs_read_only() -> None:
    sql = where_sql("monetary >= 500")
    assert "WHERE (monetary >= 500)" in sql
    assert "FROM profiles_latest" in sql
    assert sql.rstrip().endswith("SETTINGS readonly = 1")
    with pytest.raises(AudienceError):
        where_sql("1=1) OR (1=1")


# --- audiences as CSV ---------------------------------------------------------------------------


def test_an_audience_is_written_as_csv_with_nulls_empty_and_tags_as_json() -> None:
    at = datetime(2024, 5, 1, 8, 30, tzinfo=UTC)
    row = dict.fromkeys(PROFILE_COLUMNS) | {
        "customer_id": "c1",
        "shop_id": "default",
        "segment": "important_keep",
        "monetary": Decimal("612.50"),
        "tags": ["vip", "tea"],
        "as_of": at,
    }
    out = io.StringIO()
    assert write_csv(Audience([row], "--where x"), out) == 1
    header, line = out.getvalue().splitlines()
    assert header.split(",") == list(PROFILE_COLUMNS)
    assert line == (
        'c1,default,important_keep,,,612.50,,,,,"[""vip"",""tea""]",,,2024-05-01 08:30:00.000'
    )


def test_an_empty_audience_still_has_its_header() -> None:
    out = io.StringIO()
    assert write_csv(Audience([], "--where x"), out) == 0
    assert out.getvalue() == ",".join(PROFILE_COLUMNS) + "\n"


def test_an_exported_audience_reads_back_as_campaign_members_each_once() -> None:
    rows = [
        {"customer_id": "c1", "shop_id": "tmall", "segment": "important_keep"},
        {"customer_id": "c2", "shop_id": "", "segment": "important_retain"},
        {"customer_id": "c1", "shop_id": "tmall", "segment": "important_keep"},
    ]
    out = io.StringIO()
    write_csv(Audience(unique_customers(rows), "q", ("customer_id", "shop_id", "segment")), out)
    members = read_audience_csv(io.StringIO(out.getvalue()), "a.csv")
    assert members == [Member("c1", "tmall"), Member("c2", None)]


def test_a_cell_a_spreadsheet_would_run_as_a_formula_is_written_as_text_and_reads_back() -> None:
    rows = [
        {"customer_id": '=HYPERLINK("http://evil","x")', "shop_id": "+tmall", "segment": "-1"},
        {"customer_id": "@c2", "shop_id": "jd", "segment": "important_keep"},
    ]
    out = io.StringIO()
    write_csv(Audience(rows, "q", ("customer_id", "shop_id", "segment")), out)
    cells = [c for line in csv.reader(io.StringIO(out.getvalue())) for c in line]
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells), cells
    assert '\'=HYPERLINK("http://evil","x")' in cells and "important_keep" in cells
    members = read_audience_csv(io.StringIO(out.getvalue()), "a.csv")
    assert members == [Member('=HYPERLINK("http://evil","x")', "+tmall"), Member("@c2", "jd")]


def test_an_audience_file_without_customer_id_or_with_a_blank_one_is_refused() -> None:
    with pytest.raises(AudienceError, match="no customer_id column"):
        read_audience_csv(io.StringIO("id,segment\nc1,x\n"), "a.csv")
    with pytest.raises(AudienceError, match="a.csv, row 2: customer_id"):
        read_audience_csv(io.StringIO("customer_id\nc1\n \n"), "a.csv")
    with pytest.raises(AudienceError, match="has no customer_id"):
        unique_customers([{"customer_id": None}])


def test_a_spreadsheet_audience_with_a_byte_order_mark_and_spaces_reads(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(" customer_id ,note\r\nc1,hi\r\n", encoding="utf-8-sig")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        assert read_audience_csv(handle, str(path)) == [Member("c1")]


# --- the campaign event -------------------------------------------------------------------------


def test_a_campaign_event_is_keyed_by_campaign_and_customer_so_a_resend_repeats_it() -> None:
    first = campaign_event("spring-sale", Member("c1", "tmall"), NOON)
    again = campaign_event("spring-sale", Member("c1", "tmall"), NOON + timedelta(hours=2))
    assert first["event_id"] == again["event_id"] == "campaign:spring-sale:c1"
    assert first == {
        "event_id": "campaign:spring-sale:c1",
        "customer_id": "c1",
        "ts": "2024-05-01T04:00:00.000+00:00",
        "campaign": "spring-sale",
        "shop_id": "tmall",
    }
    assert "shop_id" not in campaign_event("spring-sale", Member("c1"), NOON)
    decoded = EVENT_BY_TOPIC["campaigns"].model_validate_json(orjson.dumps(first))
    assert isinstance(decoded, CampaignEvent) and decoded.kind == "campaign"
    assert campaign_event_id("spring-sale", "c1") == decoded.event_id


def test_campaign_ids_are_like_rule_ids() -> None:
    assert checked_campaign_id("双十一-2024.vip_1") == "双十一-2024.vip_1"
    for bad in ("", "spring sale", "a:b", "x" * 65):
        with pytest.raises(AudienceError):
            checked_campaign_id(bad)


def test_members_are_each_customer_once_with_their_shop() -> None:
    rows = [{"customer_id": "c2"}, {"customer_id": "c1", "shop_id": "s"}, {"customer_id": "c2"}]
    assert members_of(rows) == [Member("c2"), Member("c1", "s")]


def test_a_campaign_event_is_stored_in_events_and_replayed_from_there() -> None:
    event = campaign()
    row = event_row(event, topic="ecrm.campaigns", partition=1, offset=7, now=NOON)
    assert (row["kind"], row["campaign"], row["sku"], row["amount"]) == (
        "campaign",
        "spring-sale",
        "",
        Decimal("0"),
    )
    assert event_from_row(row) == event
    assert event_row(cart("e1", NOON), topic="t", partition=0, offset=0, now=NOON)["campaign"] == ""


# --- the profile: remembered, nothing else ------------------------------------------------------


def test_a_campaign_event_moves_no_rfm_or_activity_and_counts_once() -> None:
    bought = fold_many(empty_profile("c1"), [paid("o1", NOON - timedelta(days=40), "800")])
    p = bought.model_copy(deep=True)
    assert apply_event(p, campaign(at=NOON)) is not None
    assert apply_event(p, campaign(at=NOON + timedelta(days=1))) is None  # sent again
    assert p.campaign_event_ids == ["campaign:spring-sale:c1"]
    assert p.model_dump(exclude={"campaign_event_ids"}) == bought.model_dump(
        exclude={"campaign_event_ids"}
    )
    assert p.events_seen == 1 and p.last_seen_at == NOON - timedelta(days=40)
    assert "campaign_event_ids" not in p.public_view()


def test_a_busy_customer_still_gets_a_campaign_once() -> None:
    carts = [cart(f"e{i}", NOON + timedelta(seconds=i)) for i in range(200)]
    p = fold_many(empty_profile("c1"), [campaign(), *carts])
    assert apply_event(p, campaign()) is None


# --- the rules ----------------------------------------------------------------------------------


def test_a_rule_starts_on_its_campaign_and_reads_the_profile() -> None:
    rules = ruleset(CAMPAIGN_RULE)
    customers = [f"c{i}" for i in range(40)]
    fired = held = 0
    for cid in customers:
        shopper = Customer(rules, customer_id=cid)
        shopper.does(paid(f"o-{cid}", NOON - timedelta(days=2), "900", customer=cid))
        assert shopper.profile.segment == "important_develop"
        out = shopper.does(campaign(cid), NOON)
        assert shopper.does(campaign(cid), NOON + timedelta(minutes=5)) == []  # sent again
        assert shopper.does(campaign(cid, "other-sale"), NOON) == []
        in_control_group = holdout("spring", cid, 0.2)
        expected = "held_out" if in_control_group else "fired"
        assert outcomes(out) == [("spring", expected, "holdout" if in_control_group else None)]
        assert out[0].action_id == action_id_for("spring", cid, f"event:campaign:spring-sale:{cid}")
        assert out[0].trigger_event_id == f"campaign:spring-sale:{cid}"
        fired += expected == "fired"
        held += expected == "held_out"
    assert fired and held


def test_a_customer_outside_the_rules_if_gets_nothing_from_the_campaign() -> None:
    shopper = Customer(ruleset(CAMPAIGN_RULE))
    assert shopper.does(campaign(), NOON) == []  # a prospect: the if: does not hold


def test_a_campaign_event_starts_no_storefront_rule() -> None:
    shopper = Customer(example())
    assert shopper.does(campaign("c1", "winback-important"), NOON) == []
    assert shopper.does(cart("e1", NOON), NOON) == []  # arms the abandoned-cart wait as before


def test_the_grammar_knows_campaigns_and_names_a_wrong_field() -> None:
    rules = parse_rules("rules:\n" + CAMPAIGN_RULE.replace("event: campaigns", "event: campaign"))
    assert rules.rules[0].when.event == "campaigns"
    with pytest.raises(RulesError) as wrong:
        parse_rules("rules:\n" + CAMPAIGN_RULE.replace("{campaign: spring", "{campain: spring"))
    assert 'rule "spring": field "when.where.campain"' in str(wrong.value)
    assert 'did you mean "campaign"' in str(wrong.value)
    with pytest.raises(RulesError) as unknown:
        parse_rules("rules:\n" + CAMPAIGN_RULE.replace("event: campaigns", "event: campains"))
    assert "campaigns" in str(unknown.value)


def test_the_send_names_the_rules_that_act_on_its_campaign() -> None:
    rules = ruleset(
        CAMPAIGN_RULE,
        CAMPAIGN_RULE.replace("id: spring", "id: any-campaign").replace(
            "where: {campaign: spring-sale}", "where: {}"
        ),
    )
    assert [r.id for r in listening_rules(rules, "spring-sale")] == ["spring", "any-campaign"]
    assert [r.id for r in listening_rules(rules, "other")] == ["any-campaign"]
    assert [r.id for r in listening_rules(example(), "winback-important")] == ["winback-campaign"]
    report = CampaignReport("other", "--audience a.csv", 3, "ecrm.campaigns", Path("r.yaml"))
    out = io.StringIO()
    report.print(out)
    assert "warning: no enabled rule in r.yaml starts on this campaign" in out.getvalue()


def test_a_dry_run_selects_from_a_file_and_names_the_rules_without_sending(
    tmp_path: Path,
) -> None:

    audience = tmp_path / "winback.csv"
    audience.write_text("customer_id,shop_id\nc1,tmall\nc2,\nc1,tmall\n", encoding="utf-8")
    settings = Settings(rules_file=EXAMPLE, kafka_bootstrap="127.0.0.1:1")  # nothing listens
    out = io.StringIO()
    code = run_campaign_send(
        settings, "winback-important", audience=audience, dry_run=True, out=out
    )
    assert code == 0
    assert out.getvalue().startswith(
        f"campaign winback-important: 2 customers selected (--audience {audience}); "
        "dry run, nothing sent\n"
    )
    assert "winback-campaign" in out.getvalue()


def test_a_send_says_who_it_is_for_exactly_once() -> None:

    with pytest.raises(AudienceError, match="one of --audience"):
        run_campaign_send(Settings(), "x", dry_run=True)
    with pytest.raises(AudienceError, match=r"\(not --audience and --where\)"):
        run_campaign_send(Settings(), "x", audience=Path("a.csv"), where="1=1", dry_run=True)
    with pytest.raises(AudienceError, match="campaign id 'a b'"):
        run_campaign_send(Settings(), "a b", where="1=1", dry_run=True)
    with pytest.raises(AudienceError, match="cannot be read"):
        run_campaign_send(Settings(), "x", audience=Path("/nonexistent.csv"), dry_run=True)
