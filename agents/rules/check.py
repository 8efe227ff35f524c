"""`ecrm rules check FILE`: tell a marketer whether a rules file is good to go live, and if not,
which rule and which field to fix."""

from __future__ import annotations

from pathlib import Path

from schemas.errors import RulesError
from schemas.rule_fields import Comparison, Conditions
from schemas.rule_values import format_duration
from schemas.rules import Followup, Policy, Rule, RuleSet, RulesSyntaxError, load_rules

EXIT_VALID, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2


def check_rules(path: Path) -> tuple[int, str]:
    """(exit code, message): 0 and a summary; 1 and the mistakes; 2 when unreadable or not YAML."""
    try:
        rules = load_rules(path)
    except RulesSyntaxError as exc:
        return EXIT_UNREADABLE, f"{exc}\nthe rules file was not checked: fix the above first"
    except RulesError as exc:
        count = len(str(exc).splitlines())
        return EXIT_INVALID, f"{path}: {count} problem{'s' * (count != 1)}\n{exc}"
    return EXIT_VALID, summary(path, rules)


def summary(path: Path | str, rules: RuleSet) -> str:
    """What the file says: the policy, then one line per rule."""
    enabled = len(rules.enabled)
    lines = [
        f"{path}: valid, {len(rules.rules)} rule{'s' * (len(rules.rules) != 1)} "
        f"({enabled} enabled)",
        describe_policy(rules.policy),
    ]
    width = max((len(rule.id) for rule in rules.rules), default=0)
    lines += [f"  {rule.id:<{width}}  {describe_rule(rule)}" for rule in rules.rules]
    return "\n".join(lines)


def describe_policy(policy: Policy) -> str:
    parts = [f"time zone {policy.timezone}"]
    if policy.contact_cap:
        parts.append(f"at most {policy.contact_cap.per_day} contacts a day per customer")
    if policy.quiet_hours:
        q = policy.quiet_hours
        parts.append(f"quiet {q.start:%H:%M}-{q.end:%H:%M}")
    parts.append(f"attribution {format_duration(policy.attribution_window)}")
    parts.append(f"events older than {format_duration(policy.max_event_age)} never market")
    return "policy: " + "; ".join(parts)


def describe_rule(rule: Rule) -> str:
    """One line: trigger -> action [guards]."""
    when = rule.when
    if when.segment_change is not None:
        move = when.segment_change
        before, after = "|".join(move.from_ or ["any"]), "|".join(move.to or ["any"])
        trigger = f"segment change from {before} to {after}"
    elif when.level_change is not None:
        level = when.level_change
        before, after = "|".join(level.from_ or ["any"]), "|".join(level.to or ["any"])
        trigger = f"level change from {before} to {after}" + (
            f" ({level.direction})" if level.direction != "any" else ""
        )
    elif when.level_expiring is not None:
        trigger = f"level drops within {format_duration(when.level_expiring.within)}"
    elif when.points_expiring is not None:
        pts = when.points_expiring
        trigger = f"at least {pts.at_least} points lapse within {format_duration(pts.within)}"
    elif when.birthday is not None:
        ahead = when.birthday.before
        trigger = "birthday" + (f", {format_duration(ahead)} ahead" if ahead else "")
    else:
        trigger = f"{when.event}{_where(when.where)}"
        if when.first_order:
            trigger += " (first order)"
        if when.count:
            count = when.count
            trigger += f" {count.at_least} times within {format_duration(count.within)}"
        if when.unless:
            trigger += f" unless {_followup(when.unless)}"
        if when.not_followed_by and when.within:
            trigger += (
                f", not followed by {_followup(when.not_followed_by)} "
                f"within {format_duration(when.within)} (rearm: {when.rearm})"
            )
        if when.per != "customer":
            trigger += f", per {when.per}"
    if rule.if_:
        trigger += f", if{_where(rule.if_)}"
    action = rule.action.kind + (f" by {rule.action.channel}" if rule.action.channel else "")
    if rule.action.coupon_value is not None:
        action += f" (¥{rule.action.coupon_value})"
    guards = [f"priority {rule.priority}"]
    if rule.cooldown:
        guards.append(f"cooldown {format_duration(rule.cooldown)}")
    if rule.holdout:
        guards.append(f"holdout {rule.holdout:.0%}")
    if rule.budget and rule.budget.per_day:
        guards.append(f"{rule.budget.per_day}/day")
    if rule.budget and rule.budget.value_per_day:
        guards.append(f"¥{rule.budget.value_per_day}/day")
    off = "" if rule.enabled else "(disabled) "
    return f"{off}{trigger} -> {action} [{', '.join(guards)}]"


def _followup(followup: Followup) -> str:
    return f"{followup.event}{_where(followup.where)}"


def _where(conditions: Conditions) -> str:
    if not conditions:
        return ""
    return "(" + ", ".join(_test(name, test) for name, test in conditions.items()) + ")"


def _test(name: str, test: Comparison) -> str:
    signs = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
    parts = []
    for op, value in test.operators().items():
        shown = "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list) else value
        parts.append(f"{name}{signs[op]}{shown}" if op in signs else f"{name} {op} {shown}")
    return " and ".join(parts)
