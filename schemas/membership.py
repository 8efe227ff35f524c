"""The membership programme file: levels, points, benefits and tags, as pydantic models, read
from YAML like the rules file (schemas/rules.py) and explained the same way when wrong.

Grammar, every setting and a worked example in yuan: docs/membership.md. Every mistake is
reported as `field "<where.in.the.file>": <what is wrong>`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, Field, ValidationError, model_validator

from schemas.errors import RulesError
from schemas.rule_fields import PROFILE_FIELDS, Conditions, check_conditions
from schemas.rule_values import (
    Duration,
    FieldProblem,
    Number,
    RuleId,
    Strict,
    ZoneName,
    did_you_mean,
)
from schemas.rules_yaml import RulesSyntaxError, explain, read_text_file, read_yaml

__all__ = [
    "Earn",
    "Expiry",
    "Level",
    "Levels",
    "MembershipError",
    "MembershipSyntaxError",
    "Points",
    "Programme",
    "load_programme",
    "parse_programme",
]


class MembershipError(RulesError):
    """A programme file that is not right; the message names every wrong field, one a line."""


class MembershipSyntaxError(MembershipError, RulesSyntaxError):
    """The programme file cannot be read, or is not YAML."""


_ROUNDING = {"floor": ROUND_FLOOR, "round": ROUND_HALF_UP, "ceil": ROUND_CEILING}


class Earn(Strict):
    """`earn: {per_yuan: 1, rounding: floor}`: points per yuan of net paid amount."""

    per_yuan: Number = Decimal("1")
    rounding: Literal["floor", "round", "ceil"] = "floor"

    @model_validator(mode="after")
    def _not_negative(self) -> Earn:
        if self.per_yuan < 0:
            raise FieldProblem("per_yuan", "cannot be negative (0 turns earning off)")
        return self

    def points_for(self, amount: Decimal, multiplier: Decimal = Decimal("1")) -> int:
        """Whole points for `amount` yuan at this rate, times the level's multiplier."""
        raw = amount * self.per_yuan * multiplier
        return int(raw.quantize(Decimal("1"), rounding=_ROUNDING[self.rounding]))


class Expiry(Strict):
    """`expiry:` — when earned points lapse.

    rolling: each lot `after` its earning; calendar: at the end of the year `years_after`
    years after the one it was earned in (shop's zone); inactivity: the whole balance `after`
    the last paid order; never."""

    mode: Literal["rolling", "calendar", "inactivity", "never"] = "rolling"
    after: Duration | None = None
    years_after: int = Field(default=1, ge=0, le=10)

    @model_validator(mode="after")
    def _fits_the_mode(self) -> Expiry:
        if self.mode in ("rolling", "inactivity") and self.after is None:
            raise FieldProblem("after", f"expiry mode {self.mode} needs after: (e.g. 365d)")
        if self.mode in ("calendar", "never") and self.after is not None:
            raise FieldProblem("after", f"expiry mode {self.mode} takes no after:")
        if "years_after" in self.model_fields_set and self.mode != "calendar":
            raise FieldProblem("years_after", "years_after only applies to mode: calendar")
        return self


class Points(Strict):
    """`points:` — earning, the pending period, expiry, and what a refund takes back."""

    earn: Earn = Field(default_factory=Earn)
    #: order points unlock this long after the order (确认收货 plus the return window)
    pending: Duration | None = timedelta(days=15)
    expiry: Expiry = Field(default_factory=lambda: Expiry(mode="rolling", after=timedelta(365)))
    refund: Literal["only_pending", "within_balance", "unlimited"] = "within_balance"


def _benefits(value: dict[str, Any]) -> dict[str, Any]:
    multiplier = value.get("points_multiplier")
    if multiplier is not None:
        try:
            number = Decimal(str(multiplier))
        except ArithmeticError:
            number = Decimal("-1")
        if isinstance(multiplier, bool) or not number.is_finite() or number < 0:
            raise FieldProblem("points_multiplier", f'"{multiplier}" is not a number ≥ 0')
    return value


class Level(Strict):
    """One rung of the ladder: reached at `upgrade`, kept at term end at `keep`."""

    id: RuleId
    name: str | None = None
    upgrade: Number = Decimal("0")
    keep: Number | None = None
    benefits: Annotated[dict[str, Any], AfterValidator(_benefits)] = Field(default_factory=dict)

    @property
    def keep_at(self) -> Decimal:
        """The keep threshold (保级); the upgrade threshold when none is set."""
        return self.upgrade if self.keep is None else self.keep

    @property
    def multiplier(self) -> Decimal:
        return Decimal(str(self.benefits.get("points_multiplier", 1)))

    @model_validator(mode="after")
    def _keep_below_upgrade(self) -> Level:
        if self.upgrade < 0:
            raise FieldProblem("upgrade", "cannot be negative")
        if self.keep is not None and not 0 <= self.keep <= self.upgrade:
            raise FieldProblem("keep", "must be between 0 and the level's upgrade threshold")
        return self


class Levels(Strict):
    """`levels:` — the metric, its window, the term, grace, and the ladder (lowest first)."""

    metric: Literal["spend", "points", "orders"] = "spend"
    #: the qualification window: a duration (rolling), or `calendar_year`
    window: Duration | Literal["calendar_year"] = timedelta(days=365)
    #: a level above the lowest holds this long from the upgrade (None: for good)
    term: Duration | None = timedelta(days=365)
    grace: Duration | None = None
    downgrade: Literal["one_step", "to_supported"] = "one_step"
    ladder: list[Level]

    @model_validator(mode="after")
    def _a_ladder(self) -> Levels:
        if not self.ladder:
            raise FieldProblem("ladder", "needs at least one level")
        if self.ladder[0].upgrade != 0:
            raise FieldProblem(("ladder", 0, "upgrade"), "the lowest level starts at 0")
        seen: set[str] = set()
        for n, level in enumerate(self.ladder):
            if level.id in seen:
                raise FieldProblem(("ladder", n, "id"), f'"{level.id}" is already used')
            seen.add(level.id)
            if n and level.upgrade <= self.ladder[n - 1].upgrade:
                raise FieldProblem(
                    ("ladder", n, "upgrade"), "must be above the level before it (lowest first)"
                )
        return self

    @cached_property
    def ids(self) -> tuple[str, ...]:
        return tuple(level.id for level in self.ladder)

    def rank(self, level_id: str | None) -> int:
        """Position on the ladder (a level no longer in the file counts as the lowest)."""
        try:
            return self.ids.index(level_id or "")
        except ValueError:
            return 0

    def get(self, level_id: str | None) -> Level:
        return self.ladder[self.rank(level_id)]


def _check_tag(conditions: Conditions) -> Conditions:
    fields = {k: v for k, v in PROFILE_FIELDS.items() if k != "tags"}
    check_conditions(conditions, fields, "a profile", extras=False)
    return conditions


TagConditions = Annotated[Conditions, AfterValidator(_check_tag)]


class Programme(Strict):
    """A whole programme file, checked."""

    timezone: ZoneName = "Asia/Shanghai"
    points: Points = Field(default_factory=Points)
    levels: Levels
    #: rule tags: tag -> the profile conditions (the rules' `if:` grammar) that set it
    tags: dict[str, TagConditions] = Field(default_factory=dict)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def tag_fields(self) -> frozenset[str]:
        """The profile fields the rule tags test (computed once: read on every step)."""
        return frozenset(name for conditions in self.tags.values() for name in conditions)

    @cached_property
    def recency_marks(self) -> tuple[int, ...]:
        """Whole days since the last order at which a rule tag's recency test can change its
        answer, and only those: each is a wake time of every customer who ordered."""
        days: set[int] = set()
        for conditions in self.tags.values():
            test = conditions.get("recency_days")
            for op, value in test.operators().items() if test is not None else ():
                for x in value if isinstance(value, list) else [value]:
                    days.update(d for d in recency_turns(op, Decimal(str(x))) if d >= 0)
        return tuple(sorted(days))

    def expires_at(self, earned_at: datetime) -> datetime | None:
        """When a lot earned at `earned_at` lapses by itself (inactivity: see the ledger)."""
        expiry = self.points.expiry
        if expiry.mode == "rolling":
            assert expiry.after is not None
            return earned_at + expiry.after
        if expiry.mode == "calendar":
            local = earned_at.astimezone(self.zone)
            return datetime(local.year + expiry.years_after + 1, 1, 1, tzinfo=self.zone)
        return None


SECTIONS = ("timezone", "points", "levels", "tags")


def load_programme(path: Path) -> Programme:
    """Read and check a programme file; MembershipSyntaxError if unreadable, else
    MembershipError naming each wrong field."""
    text = read_text_file(path, MembershipSyntaxError)
    return parse_programme(text, str(path))


def parse_programme(text: str, source: str = "<membership>") -> Programme:
    try:
        data = read_yaml(text, source)
    except RulesSyntaxError as exc:
        raise MembershipSyntaxError(str(exc)) from None
    if not isinstance(data, dict):
        raise MembershipError(f"{source}: a programme file is a set of sections: levels:, …")
    problems = [
        f'"{key}" is not a section of a programme file{did_you_mean(str(key), SECTIONS)}; '
        f"use {', '.join(SECTIONS)}"
        for key in data
        if key not in SECTIONS
    ]
    if not problems:
        try:
            return Programme.model_validate(data)
        except ValidationError as exc:
            problems = explain(exc, Programme)
    raise MembershipError("\n".join(problems))


def recency_turns(op: str, x: Decimal) -> tuple[int, ...]:
    """The days at which `recency_days <op> x` changes its answer (`recency_days` counts whole
    days): `gt 60` turns true at 61, `lte 180` false at 181, `gte 60` / `lt 60` at 60; `eq`,
    `ne`, `in` and the rest at the value and the day after."""
    floor = int(x.to_integral_value(rounding=ROUND_FLOOR))
    if op in ("gt", "lte"):
        return (floor + 1,)
    if op in ("gte", "lt"):
        return (int(x.to_integral_value(rounding=ROUND_CEILING)),)
    return (floor, floor + 1)
