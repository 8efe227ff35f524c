"""A rule's condition on a field the storefront added (`extra.X`) holds only for what it says:
a value that is not a finite number fails an ordering test, quietly, whatever it is."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.rules.conditions import holds
from agents.rules.shell import decision_row
from schemas.events import CartEvent
from schemas.rule_fields import ORDERING, Comparison
from tests.unit.agents.rules.rule_driver import NOON, Customer, outcomes, ruleset

HIGH_SCORE = """
  - id: high-score
    when: {event: cart, where: {extra.score: {gte: 10}}}
    action: {kind: tag, params: {tag: high-score, batch: 1180591620717411303425}}
"""


def cart_with(score: Any, event_id: str = "e1") -> CartEvent:
    return CartEvent.model_validate(
        {
            "event_id": event_id,
            "customer_id": "c1",
            "ts": NOON,
            "sku": "s1",
            "qty": 1,
            "price": "5",
            "score": score,
        }
    )


@pytest.mark.parametrize(
    "score", ["NaN", "sNaN", "-NaN", "Infinity", "-Infinity", "inf", True, [11], {"v": 11}, "x"]
)
def test_a_score_that_is_not_a_finite_number_does_not_meet_gte_and_stops_nothing(
    score: Any,
) -> None:
    customer = Customer(ruleset(HIGH_SCORE))
    assert customer.does(cart_with(score)) == []
    assert outcomes(customer.does(cart_with(11, "e2"))) == [("high-score", "fired", None)]


@pytest.mark.parametrize(
    ("score", "fires"),
    [(2**70, True), (10, True), ("12.5", True), (9, False), (-(2**70), False)],
)
def test_numbers_of_any_size_compare_as_numbers(score: Any, fires: bool) -> None:
    customer = Customer(ruleset(HIGH_SCORE))
    assert bool(customer.does(cart_with(score))) is fires


def test_an_integer_beyond_64_bits_compares_exactly() -> None:
    at_least = Comparison.model_validate({"gte": 2**70})
    assert holds(at_least, [2**70], "any")
    assert not holds(at_least, [2**70 - 1], "any")


def test_a_fired_rule_with_a_param_beyond_64_bits_records_it_exactly() -> None:
    customer = Customer(ruleset(HIGH_SCORE))
    [decision] = customer.does(cart_with(50))
    assert json.loads(decision_row(decision)["params"])["batch"] == 1180591620717411303425


def test_eq_on_the_string_nan_is_a_text_comparison() -> None:
    assert holds(Comparison.model_validate({"eq": "NaN"}), ["NaN"], "any")
    assert not holds(Comparison.model_validate({"eq": 1}), ["NaN"], "any")
    assert holds(Comparison.model_validate({"ne": 1}), ["NaN"], "any")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats()
    | st.decimals()
    | st.text(max_size=12)
    | st.sampled_from(["NaN", "sNaN", "Infinity", "-inf", "1e999999999", "1_000", " 7 "]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=10,
)
thresholds = st.integers(-(10**30), 10**30) | st.decimals(allow_nan=False, allow_infinity=False)


@given(
    st.lists(json_values, max_size=3),
    st.sampled_from([*ORDERING, "eq", "ne"]),
    thresholds,
)
def test_no_value_makes_a_comparison_raise(values: list[Any], op: str, threshold: Any) -> None:
    comparison = Comparison.model_validate({op: threshold})
    result = holds(comparison, values, "any")
    if op in ORDERING:
        finite = [v for v in values if _finite_number(v)]
        assert result is (bool(finite) and holds(comparison, finite, "any"))


def _finite_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return Decimal(str(value)).is_finite()
    except Exception:  # noqa: BLE001 - anything that is not a number
        return False


def _holds_as_written(comparison: Comparison, values: list[Any], kind: Any) -> bool:
    """`holds` as it read before its operators were compiled once per Comparison: every
    operator worked out again, every number read again from its text."""
    from decimal import InvalidOperation

    def number(value: Any) -> Decimal | None:
        if isinstance(value, bool):
            return None
        try:
            n = Decimal(str(value))
        except (InvalidOperation, ValueError):
            return None
        return n if n.is_finite() else None

    def one(op: str, expected: Any) -> bool:
        if op in ("gt", "gte", "lt", "lte"):

            def ordered(v: Any) -> bool:
                a, e = number(v), number(expected)
                if a is None or e is None:
                    return False
                return {"gt": a > e, "gte": a >= e, "lt": a < e, "lte": a <= e}[op]

            return any(ordered(v) for v in values)
        from agents.rules.conditions import _operator_holds

        return _operator_holds(op, expected, values, kind)

    return all(one(op, e) for op, e in comparison.operators().items())


_values = st.one_of(
    st.integers(-(10**20), 10**20),
    st.decimals(allow_nan=True, allow_infinity=True, places=2),
    st.booleans(),
    st.text(max_size=4),
    st.none(),
)


@given(
    op=st.sampled_from(["gt", "gte", "lt", "lte", "eq", "ne"]),
    expected=st.one_of(st.integers(-1000, 1000), st.decimals(-1000, 1000, places=2)),
    values=st.lists(_values, max_size=3),
    kind=st.sampled_from(["number", "any", "string"]),
)
def test_compiled_conditions_decide_as_the_conditions_read(op, expected, values, kind):  # type: ignore[no-untyped-def]
    comparison = Comparison.model_validate({op: expected})
    assert holds(comparison, values, kind) == _holds_as_written(comparison, values, kind)
    assert holds(comparison, values, kind) == _holds_as_written(comparison, values, kind)
