"""A marketer's rules file is accepted when right, and when wrong the message names the rule
and the field in words they understand."""

from __future__ import annotations

from datetime import time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from agents.rules.check import check_rules
from schemas.errors import RulesError
from schemas.rule_values import format_duration, parse_duration, parse_share
from schemas.rules import RulesSyntaxError, load_rules, parse_rules

EXAMPLE = Path(__file__).resolve().parents[3] / "rules" / "example.yaml"

ACTION = "action: {kind: message, channel: sms, params: {template: hello}}"


def one_rule(body: str, policy: str = "") -> str:
    """A rules file with one rule `r1` whose fields are `body` (YAML lines, 4-space indent)."""
    text = (policy + "\n") if policy else ""
    return text + "rules:\n  - id: r1\n" + "".join(f"    {line}\n" for line in body.splitlines())


def problems(text: str) -> str:
    with pytest.raises(RulesError) as caught:
        parse_rules(text)
    return str(caught.value)


# --- the shipped example ----------------------------------------------------------------------


def test_the_shipped_example_loads_with_every_rule_the_issue_asks_for() -> None:
    rules = load_rules(EXAMPLE)
    ids = [rule.id for rule in rules.rules]
    assert ids == [
        "abandoned-cart",
        "browse-abandonment",
        "favourite-not-bought",
        "win-back",
        "welcome",
        "big-order-thanks",
        "winback-campaign",
        "level-up-gift",
        "keep-your-level",
        "points-lapsing",
    ]
    cart = rules.get("abandoned-cart")
    assert cart is not None
    assert cart.when.event == "cart" and cart.when.within == timedelta(minutes=30)
    assert cart.action.coupon_value == Decimal("10")
    assert cart.action.valid_for == timedelta(hours=48)
    assert sum(1 for rule in rules.rules if rule.holdout > 0) >= 2
    assert rules.policy.contact_cap is not None and rules.policy.contact_cap.per_day == 3
    assert rules.policy.quiet_hours is not None
    assert (rules.policy.quiet_hours.start, rules.policy.quiet_hours.end) == (time(22), time(8))
    assert rules.policy.timezone == "Asia/Shanghai"


def test_check_says_what_each_rule_does_and_exits_zero() -> None:
    code, message = check_rules(EXAMPLE)
    assert code == 0
    assert "10 rules" in message
    assert "level change from any to gold|diamond (up)" in message
    assert (
        "abandoned-cart" in message and "not followed by orders(status=paid) within 30m" in message
    )
    assert "segment change from important_value to important_keep|important_retain" in message


# --- each kind of mistake names the rule and the field ----------------------------------------


def test_a_misspelt_duration() -> None:
    text = one_rule(
        "when: {event: cart, not_followed_by: {event: orders}, within: 30 minuts}\n" + ACTION
    )
    assert problems(text) == (
        'rule "r1": field "when.within": "30 minuts" is not a duration (use e.g. 30m, 2h, 3d)'
    )


def test_a_typo_in_a_field_name_suggests_the_right_one() -> None:
    message = problems(one_rule("when: {event: cart}\ncooldwn: 7d\n" + ACTION))
    assert message == 'rule "r1": field "cooldwn": unknown field (did you mean "cooldown"?)'


def test_a_typo_deep_in_a_condition() -> None:
    message = problems(one_rule("when: {event: orders, where: {amont: {gte: 299}}}\n" + ACTION))
    assert 'rule "r1": field "when.where.amont"' in message
    assert 'did you mean "amount"' in message


def test_an_unknown_event() -> None:
    message = problems(one_rule("when: {event: checkout}\n" + ACTION))
    assert message.startswith('rule "r1": field "when.event": "checkout" is not an event')
    assert "orders, cart, favorites, browse" in message


def test_segment_change_written_as_an_event_is_explained() -> None:
    message = problems(one_rule("when: {event: segment_change}\n" + ACTION))
    assert 'field "when.event"' in message and "segment_change: {from:" in message


def test_two_rules_with_one_id() -> None:
    def rule(rule_id: str) -> str:
        return f"  - id: {rule_id}\n    when: {{event: cart}}\n    {ACTION}\n"

    text = "rules:\n" + rule("a") + rule("b") + rule("a")
    assert problems(text) == (
        'rule "a": field "id": the id is already used by rule #1; every rule needs its own id'
    )


def test_a_holdout_over_a_hundred_percent() -> None:
    message = problems(one_rule("when: {event: cart}\nholdout: 120%\n" + ACTION))
    assert message == 'rule "r1": field "holdout": "120%" is more than 100%'


def test_a_holdout_written_as_a_bare_twenty() -> None:
    message = problems(one_rule("when: {event: cart}\nholdout: 20\n" + ACTION))
    assert 'field "holdout"' in message and "20%" in message


def test_a_misspelt_segment_in_a_transition_and_in_a_profile_condition() -> None:
    transition = problems(one_rule("when: {segment_change: {from: important_valu}}\n" + ACTION))
    assert 'rule "r1": field "when.segment_change.from[0]"' in transition
    assert 'did you mean "important_value"' in transition
    condition = problems(
        one_rule("when: {event: cart}\nif: {segment: {in: [vip_customers]}}\n" + ACTION)
    )
    assert 'rule "r1": field "if.segment.in": "vip_customers" is not a segment' in condition


@pytest.mark.parametrize(
    ("quiet", "field", "words"),
    [
        ('{start: "22:00", end: "25:00"}', "quiet_hours.end", "is not a time of day"),
        ('{start: "22:00", end: "22:00"}', "quiet_hours.end", "must end at another time"),
        ('{start: "22:00"}', "quiet_hours.end", "required"),
        ('{start: "22:00", end: "08:00", timezone: Asia/Shangai}', "quiet_hours.timezone", "zone"),
    ],
)
def test_bad_quiet_hours(quiet: str, field: str, words: str) -> None:
    message = problems(
        one_rule("when: {event: cart}\n" + ACTION, f"policy:\n  quiet_hours: {quiet}")
    )
    assert message.startswith(f'policy: field "{field}": ')
    assert words in message


def test_unquoted_quiet_hours_still_mean_what_they_say() -> None:
    # YAML 1.1 reads an unquoted 22:00 as the number 1320
    rules = parse_rules("policy:\n  quiet_hours: {start: 22:00, end: 07:30}\n")
    assert rules.policy.quiet_hours is not None
    assert rules.policy.quiet_hours.start == time(22) and rules.policy.quiet_hours.end == time(
        7, 30
    )


def test_history_is_judged_by_a_day_unless_the_policy_says_otherwise() -> None:
    assert parse_rules("rules: []").policy.max_event_age == timedelta(hours=24)
    wide = parse_rules("policy: {max_event_age: 400d}\nrules: []")
    assert wide.policy.max_event_age == timedelta(days=400)


@pytest.mark.parametrize(
    ("age", "words"),
    [
        ("a while", "is not a duration"),
        ("0", "must be longer than zero"),
        ("-2h", "is not a duration"),
        ("5000d", "too long"),
    ],
)
def test_a_bad_max_event_age_is_refused_naming_the_field(age: str, words: str) -> None:
    message = problems(
        one_rule("when: {event: cart}\n" + ACTION, f"policy:\n  max_event_age: {age}")
    )
    assert message.startswith('policy: field "max_event_age": ')
    assert words in message


def test_a_test_that_does_not_fit_the_field() -> None:
    message = problems(one_rule("when: {event: orders, where: {status: {gte: 3}}}\n" + ACTION))
    assert 'field "when.where.status.gte": "gte" does not apply to status' in message
    message = problems(one_rule("when: {event: orders, where: {amount: {gte: lots}}}\n" + ACTION))
    assert 'field "when.where.amount.gte": "lots" is not a number' in message


def test_a_field_the_event_does_not_have() -> None:
    message = problems(one_rule("when: {event: favorites, where: {amount: {gte: 3}}}\n" + ACTION))
    assert 'field "when.where.amount": a favourite has no "amount"' in message


def test_a_coupon_needs_a_value_and_a_validity() -> None:
    message = problems(
        one_rule("when: {event: cart}\naction: {kind: coupon, channel: sms, params: {value: 10}}")
    )
    assert (
        message
        == 'rule "r1": field "action.params.valid_for": a coupon action needs params.valid_for'
    )
    message = problems(
        one_rule(
            "when: {event: cart}\n"
            "action: {kind: coupon, params: {value: 10, valid_for: 2 fortnights}}"
        )
    )
    assert 'field "action.params.valid_for": "2 fortnights" is not a duration' in message


def test_a_wait_without_its_window_and_a_window_without_its_wait() -> None:
    message = problems(one_rule("when: {event: cart, not_followed_by: {event: orders}}\n" + ACTION))
    assert 'field "when.within": not_followed_by needs within' in message
    message = problems(one_rule("when: {event: cart, within: 30m}\n" + ACTION))
    assert 'field "when.within"' in message and "count:" in message


def test_every_mistake_is_listed_not_only_the_first() -> None:
    text = (
        "rules:\n"
        "  - id: a\n    when: {event: cart}\n    holdout: 200%\n    " + ACTION + "\n"
        "  - id: b\n    when: {event: cart}\n    priority: high\n    " + ACTION + "\n"
    )
    lines = problems(text).splitlines()
    assert lines == [
        'rule "a": field "holdout": "200%" is more than 100%',
        'rule "b": field "priority": "high" is not a whole number',
    ]


def test_a_rule_without_an_id_is_named_by_its_position() -> None:
    message = problems("rules:\n  - when: {event: cart}\n    " + ACTION + "\n")
    assert message == 'rule #1 (no id): field "id": required, but missing'


def test_a_key_written_twice_is_refused_with_its_line() -> None:
    with pytest.raises(RulesSyntaxError, match=r"line 4, column 5: \"when\" is written twice"):
        parse_rules("rules:\n  - id: a\n    when: {event: cart}\n    when: {event: browse}\n")


# --- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("30s", 30), ("30m", 1800), ("2h", 7200), ("3d", 259200), ("1w", 604800)]
    + [("1h30m", 5400), ("2 hours", 7200), (90, 90), ("45", 45)],
)
def test_durations(written: str | int, seconds: int) -> None:
    assert parse_duration(written) == timedelta(seconds=seconds)
    assert parse_duration(format_duration(parse_duration(written))) == timedelta(seconds=seconds)


@pytest.mark.parametrize("written", ["30 minuts", "", "-5m", 0, True, "m30", 1.5])
def test_not_durations(written: object) -> None:
    with pytest.raises(ValueError, match="duration|longer than zero"):
        parse_duration(written)


@pytest.mark.parametrize(
    ("written", "share"), [("20%", 0.2), (0.2, 0.2), ("0%", 0.0), ("100%", 1.0), (1, 1.0)]
)
def test_shares(written: object, share: float) -> None:
    assert parse_share(written) == pytest.approx(share)


# --- ecrm rules check -------------------------------------------------------------------------


def test_check_exits_one_naming_rule_and_field(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(one_rule("when: {event: cart}\nholdout: 120%\n" + ACTION))
    code, message = check_rules(path)
    assert code == 1
    assert 'rule "r1": field "holdout"' in message


def test_check_exits_two_for_a_missing_file_or_broken_yaml(tmp_path: Path) -> None:
    code, message = check_rules(tmp_path / "nope.yaml")
    assert code == 2 and "no such file" in message
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules:\n  - id: a\n    when: {event: cart\n")
    code, message = check_rules(broken)
    assert code == 2 and "line 4" in message


# --- numbers that are not numbers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "said"),
    [
        ("when: {event: orders, where: {amount: {gte: .nan}}}", "when.where.amount.gte", "nan"),
        ("when: {event: orders, where: {amount: {lt: .inf}}}", "when.where.amount.lt", "inf"),
        ("when: {event: orders, where: {amount: {gt: -.inf}}}", "when.where.amount.gt", "-inf"),
        ("when: {event: orders, where: {amount: {gte: NaN}}}", "when.where.amount.gte", "NaN"),
        ("when: {event: orders, where: {amount: [1, .nan]}}", "when.where.amount.in[1]", "nan"),
        (
            "when: {event: cart, where: {extra.score: {eq: .nan}}}",
            "when.where.extra.score.eq",
            "nan",
        ),
        (
            "when: {event: cart, where: {extra.score: {gte: .inf}}}",
            "when.where.extra.score.gte",
            "inf",
        ),
        ("when: {event: cart}\nif: {monetary: {gte: .nan}}", "if.monetary.gte", "nan"),
    ],
)
def test_a_condition_on_nan_or_infinity_is_refused(body: str, field: str, said: str) -> None:
    message = problems(one_rule(body + "\n" + ACTION))
    assert f'rule "r1": field "{field}": "{said}" is not a finite number' in message


@pytest.mark.parametrize(
    ("params", "budget", "field", "said"),
    [
        ("{value: .nan, valid_for: 48h}", "", "action.params.value", "nan"),
        ("{value: .inf, valid_for: 48h}", "", "action.params.value", "inf"),
        ("{value: 10, threshold: .nan, valid_for: 48h}", "", "action.params.threshold", "nan"),
        ("{value: 10, valid_for: 48h, note: {a: [1, .nan]}}", "", "action.params.note.a[1]", "nan"),
        ("{value: 10, valid_for: 48h}", "{value_per_day: .inf}", "budget.value_per_day", "inf"),
    ],
)
def test_a_coupon_value_threshold_param_or_budget_of_nan_or_infinity_is_refused(
    params: str, budget: str, field: str, said: str
) -> None:
    body = "when: {event: cart}\n" + (f"budget: {budget}\n" if budget else "")
    message = problems(one_rule(body + f"action: {{kind: coupon, params: {params}}}"))
    assert f'rule "r1": field "{field}": "{said}" is not a finite number' in message


def test_a_budget_of_infinitely_many_actions_is_refused() -> None:
    message = problems(one_rule("when: {event: cart}\nbudget: {per_day: .inf}\n" + ACTION))
    assert 'rule "r1": field "budget.per_day"' in message and "finite" in message


def test_a_big_finite_number_is_still_a_number() -> None:
    rules = parse_rules(
        one_rule(
            "when: {event: cart, where: {extra.batch: {gte: 100000000000000000000000}}}\n"
            "action: {kind: tag, params: {tag: t, batch: 100000000000000000000000}}"
        )
    )
    assert rules.rules[0].when.where["extra.batch"].gte == Decimal(10**23)


def test_check_refuses_nan_naming_rule_and_field(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(one_rule("when: {event: orders, where: {amount: {gte: .nan}}}\n" + ACTION))
    code, message = check_rules(path)
    assert code == 1
    assert 'rule "r1": field "when.where.amount.gte"' in message and "finite" in message


def test_a_hot_reload_to_a_nan_threshold_keeps_the_rules_in_force(tmp_path: Path) -> None:
    from agents.rules.book import RulesBook

    path = tmp_path / "rules.yaml"
    path.write_text(one_rule("when: {event: orders, where: {amount: {gte: 100}}}\n" + ACTION))
    book = RulesBook(path)
    for bad in ("{amount: {gte: .nan}}", "{amount: {gte: .inf}}"):
        path.write_text(one_rule(f"when: {{event: orders, where: {bad}}}\n" + ACTION))
        assert book.reload_if_changed() is False
        assert book.rules.rules[0].when.where["amount"].gte == Decimal(100)
    path.write_text(one_rule("when: {event: orders, where: {amount: {gte: 200}}}\n" + ACTION))
    assert book.reload_if_changed() is True
    assert book.rules.rules[0].when.where["amount"].gte == Decimal(200)
