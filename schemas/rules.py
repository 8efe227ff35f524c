"""The marketers' rules file: what a rule can say, as pydantic models, and reading it from YAML.

Grammar and examples: docs/rules.md. Every mistake is reported as
`rule "<id>": field "<where.in.the.rule>": <what is wrong, in a marketer's words>`.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    ValidationError,
    model_validator,
)

from schemas.errors import RulesError
from schemas.rule_action import CHANNELS, KINDS, ActionSpec, Budget
from schemas.rule_fields import (
    EVENT_FIELDS,
    EVENT_NOUN,
    PROFILE_FIELDS,
    Conditions,
    EventName,
    SegmentList,
    check_conditions,
)
from schemas.rule_values import (
    Duration,
    FieldProblem,
    RuleId,
    Share,
    Strict,
    TimeOfDay,
    ZoneName,
    as_list,
    did_you_mean,
    one_of,
)
from schemas.rules_yaml import RulesSyntaxError, explain, read_text_file, read_yaml

__all__ = [
    "CHANNELS",
    "KINDS",
    "ActionSpec",
    "Budget",
    "ContactCap",
    "CountWindow",
    "Followup",
    "Policy",
    "QuietHours",
    "Rule",
    "RuleSet",
    "RulesError",
    "RulesSyntaxError",
    "SegmentMove",
    "Trigger",
    "load_rules",
    "parse_rules",
]


def _check_where(where: Conditions, event: str, at: str = "where") -> None:
    try:
        check_conditions(where, EVENT_FIELDS[event], EVENT_NOUN[event], extras=True)
    except FieldProblem as problem:
        raise FieldProblem((at, *problem.path), problem.message) from None


class Followup(Strict):
    """The B of "A not followed by B within T", or the event that resets a count (`unless`)."""

    event: EventName
    where: Conditions = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fields_exist(self) -> Followup:
        _check_where(self.where, self.event)
        return self


class CountWindow(Strict):
    """`count: {at_least: 3, within: 24h}`: the N-th matching event inside the window starts it."""

    at_least: int = Field(ge=1)
    within: Duration


class SegmentMove(Strict):
    """`segment_change: {from: [...], to: [...]}`; a side left out means any segment."""

    from_: SegmentList | None = Field(default=None, alias="from")
    to: SegmentList | None = None

    @model_validator(mode="after")
    def _names_a_side(self) -> SegmentMove:
        if self.from_ is None and self.to is None:
            raise ValueError("say from: and/or to: (e.g. {from: [important_value]})")
        return self


class LevelMove(Strict):
    """`level_change: {from: [...], to: [gold]}`; a side left out means any level (the ids of
    the membership programme file, docs/membership.md)."""

    from_: Annotated[list[str], BeforeValidator(as_list)] | None = Field(default=None, alias="from")
    to: Annotated[list[str], BeforeValidator(as_list)] | None = None
    #: only upgrades (`up`), only downgrades (`down`), or either
    direction: Annotated[str, PlainValidator(one_of(("up", "down", "any"), "a direction"))] = "any"


class LevelExpiring(Strict):
    """`level_expiring: {within: 14d}`: the level will drop within this time unless the
    member reaches the keep threshold (a 保级 reminder)."""

    within: Duration


class PointsExpiring(Strict):
    """`points_expiring: {within: 7d, at_least: 100}`: at least this many points lapse within
    this time (积分即将过期)."""

    within: Duration
    at_least: int = Field(default=1, ge=1)


class Birthday(Strict):
    """`birthday: {before: 3d}`: the member's birthday (from `ecrm.customers`), at the shop's
    midnight, `before` ahead of it (default: on the day)."""

    before: Duration | None = None


#: the triggers that come from the membership programme, not from an event
MEMBER_TRIGGERS = ("level_change", "level_expiring", "points_expiring", "birthday")


class Trigger(Strict):
    """`when:` — what starts a rule: an event (maybe counted, maybe awaiting a follow-up) or a
    segment change."""

    event: EventName | None = None
    where: Conditions = Field(default_factory=dict)
    first_order: bool = False
    count: CountWindow | None = None
    unless: Followup | None = None
    not_followed_by: Followup | None = None
    within: Duration | None = None
    per: Annotated[str, PlainValidator(one_of(("customer", "sku"), "a key"))] = "customer"
    rearm: Annotated[str, PlainValidator(one_of(("restart", "keep"), "a re-arm choice"))] = (
        "restart"
    )
    segment_change: SegmentMove | None = None
    level_change: LevelMove | None = None
    level_expiring: LevelExpiring | None = None
    points_expiring: PointsExpiring | None = None
    birthday: Birthday | None = None

    @property
    def member(self) -> str | None:
        """Which membership trigger this is, if it is one."""
        return next((name for name in MEMBER_TRIGGERS if getattr(self, name) is not None), None)

    @model_validator(mode="after")
    def _fits_together(self) -> Trigger:
        given = self.model_fields_set
        if (member := self.member) is not None:
            for name in sorted(given - {member}):
                raise FieldProblem(name, f"a {member} rule cannot also say {name}:")
            return self
        if self.segment_change is not None:
            for name in sorted(given - {"segment_change"}):
                raise FieldProblem(name, f"a segment_change rule cannot also say {name}:")
            return self
        if self.event is None:
            raise ValueError(
                "say what starts the rule: event: (orders, cart, favorites, browse, campaigns), "
                "segment_change: {from: [...], to: [...]}, level_change:, level_expiring:, "
                "points_expiring: or birthday:"
            )
        _check_where(self.where, self.event)
        if self.first_order and self.event != "orders":
            raise FieldProblem("first_order", "first_order only makes sense with event: orders")
        if (self.within is None) != (self.not_followed_by is None):
            if self.within is None:
                raise FieldProblem("within", "not_followed_by needs within: (e.g. within: 30m)")
            raise FieldProblem(
                "within",
                "within: here needs not_followed_by: {event: ...}; "
                "to count events write count: {at_least: 3, within: 24h}",
            )
        if "rearm" in given and self.not_followed_by is None:
            raise FieldProblem("rearm", "rearm only applies to not_followed_by rules")
        if self.unless is not None and self.count is None:
            raise FieldProblem(
                "unless", "unless only works with count:; for a wait use not_followed_by"
            )
        return self

    @property
    def waits(self) -> bool:
        """True for "A not followed by B within T": the rule arms a timer instead of firing."""
        return self.not_followed_by is not None


def _check_profile(conditions: Conditions) -> Conditions:
    check_conditions(conditions, PROFILE_FIELDS, "a profile", extras=False)
    return conditions


class Rule(Strict):
    """One marketing rule: when, if, the guards, and the action."""

    id: RuleId
    description: str | None = None
    enabled: bool = True
    when: Trigger
    if_: Annotated[Conditions, AfterValidator(_check_profile)] = Field(
        default_factory=dict, alias="if"
    )
    cooldown: Duration | None = None
    priority: int = 0
    holdout: Share = 0.0
    budget: Budget | None = None
    action: ActionSpec

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.budget and self.budget.value_per_day is not None and self.action.kind != "coupon":
            raise FieldProblem(
                ("budget", "value_per_day"), "value_per_day only applies to coupon actions"
            )
        return self


class ContactCap(Strict):
    """`contact_cap: {per_day: 2}`: messages a customer may get a day, across all rules."""

    per_day: int = Field(ge=1)


class QuietHours(Strict):
    """`quiet_hours: {start: "22:00", end: "08:00"}`: contacts wait until `end`."""

    start: TimeOfDay
    end: TimeOfDay
    timezone: ZoneName | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise FieldProblem("end", "quiet hours must end at another time than they start")
        return self


class Policy(Strict):
    """`policy:` — what holds across all rules."""

    timezone: ZoneName = "Asia/Shanghai"
    contact_cap: ContactCap | None = None
    quiet_hours: QuietHours | None = None
    attribution_window: Duration = timedelta(hours=72)
    #: a trigger older than this (by the wall clock) is history: it updates state, never markets
    max_event_age: Duration = timedelta(hours=24)

    @property
    def zone(self) -> ZoneInfo:
        """The shop's zone: its days (cap, budget) begin at its midnight."""
        return ZoneInfo(self.timezone)

    @property
    def quiet_zone(self) -> ZoneInfo:
        quiet = self.quiet_hours
        return ZoneInfo(quiet.timezone) if quiet and quiet.timezone else self.zone


class RuleSet(Strict):
    """A whole rules file, checked; rules keep their file order (it breaks priority ties)."""

    policy: Policy = Field(default_factory=Policy)
    rules: tuple[Rule, ...] = ()

    @cached_property
    def enabled(self) -> tuple[Rule, ...]:
        """The rules in force (computed once: the engine asks on every event)."""
        return tuple(rule for rule in self.rules if rule.enabled)

    @cached_property
    def member_rules(self) -> tuple[tuple[int, Rule], ...]:
        """(file position, rule) of the enabled rules membership starts (computed once)."""
        return tuple((n, r) for n, r in enumerate(self.rules) if r.enabled and r.when.member)

    @cached_property
    def _enabled_by_id(self) -> dict[str, Rule]:
        return {rule.id: rule for rule in self.enabled}

    def get(self, rule_id: str) -> Rule | None:
        """The enabled rule with this id, if there is one."""
        return self._enabled_by_id.get(rule_id)


def load_rules(path: Path) -> RuleSet:
    """Read and check a rules file; RulesSyntaxError if unreadable, RulesError if wrong."""
    text = read_text_file(path, RulesSyntaxError)
    return parse_rules(text, str(path))


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    """Check a rules file's text; RulesError lists every problem, one a line."""
    data = read_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RulesError(f"{source}: a rules file has two sections, policy: and rules:")
    problems: list[str] = []
    for key in data:
        if key not in ("policy", "rules"):
            hint = did_you_mean(str(key), ("policy", "rules"))
            problems.append(
                f'"{key}" is not a section of a rules file{hint}; use policy: and rules:'
            )
    policy = Policy()
    try:
        policy = Policy.model_validate(data.get("policy") or {})
    except ValidationError as exc:
        problems.extend(f"policy: {line}" for line in explain(exc, Policy))
    raw_rules = data.get("rules") or []
    if not isinstance(raw_rules, list):
        problems.append('rules: should be a list, one "- id: ..." entry per rule')
        raw_rules = []
    rules: list[Rule] = []
    first_seen: dict[str, int] = {}
    for number, raw in enumerate(raw_rules, 1):
        raw_id = raw.get("id") if isinstance(raw, dict) else None
        label = f'rule "{raw_id}"' if raw_id is not None else f"rule #{number} (no id)"
        if not isinstance(raw, dict):
            problems.append(f"{label}: should be a set of fields starting with id:")
            continue
        if raw_id is not None and str(raw_id) in first_seen:
            problems.append(
                f'{label}: field "id": the id is already used by rule #{first_seen[str(raw_id)]}; '
                "every rule needs its own id"
            )
            continue
        if raw_id is not None:
            first_seen[str(raw_id)] = number
        try:
            rules.append(Rule.model_validate(raw))
        except ValidationError as exc:
            problems.extend(f"{label}: {line}" for line in explain(exc, Rule))
    if problems:
        raise RulesError("\n".join(problems))
    return RuleSet(policy=policy, rules=tuple(rules))
