"""A rule tag's recency test wakes a customer only on the days its answer can change
(schemas/membership.py `recency_marks`): each mark is a wake time of every customer who
ordered, so a day at which nothing can change is a sweep's work for nothing."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from agents.rules.conditions import holds
from schemas.rule_fields import Comparison
from tests.unit.agents.membership.programme import programme

OPS = ("gt", "gte", "lt", "lte", "eq", "ne")


def test_the_shipped_lapsing_tag_wakes_on_the_two_days_it_turns() -> None:
    prog = programme(tags="lapsing: {recency_days: {gt: 60, lte: 180}}")
    assert prog.recency_marks == (61, 181)  # not 60 nor 180: nothing turns there


@given(
    op=st.sampled_from(OPS),
    x=st.integers(min_value=0, max_value=60).map(Decimal)
    | st.integers(min_value=0, max_value=120).map(lambda n: Decimal(n) / 2),
)
def test_every_day_a_recency_test_turns_is_a_mark_and_no_other(op: str, x: Decimal) -> None:
    prog = programme(tags=f"t: {{recency_days: {{{op}: {x}}}}}")
    test = Comparison.model_validate({op: x})
    turns = {
        day
        for day in range(1, 100)
        if holds(test, [day], "number") != holds(test, [day - 1], "number")
    }
    # day 0 is the order's own instant: the customer is never woken there
    marks = {day for day in prog.recency_marks if day > 0}
    assert turns <= marks  # every turn wakes the customer
    if op not in ("eq", "ne"):
        assert marks == turns  # and an ordering wakes them for nothing else
