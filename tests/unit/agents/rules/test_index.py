"""An event is shown only to the rules that name its topic — as the A, the B it waits for, or
what resets its count — in file order; switched-off and segment-change rules to none."""

from __future__ import annotations

from agents.rules.index import index_of
from tests.unit.agents.rules.rule_driver import ABANDONED_CART, BROWSED, WIN_BACK, ruleset

SWITCHED_OFF = """
  - id: off
    enabled: false
    when: {event: cart}
    action: {kind: tag, params: {tag: carted}}
"""


def _ids(rules_index: dict[str, tuple], topic: str) -> list[str]:
    return [rule.id for _, rule in rules_index.get(topic, ())]


def test_each_topic_reaches_the_rules_that_name_it_in_file_order() -> None:
    rules = ruleset(BROWSED, WIN_BACK, SWITCHED_OFF, ABANDONED_CART)
    by_topic = index_of(rules).by_topic
    assert _ids(by_topic, "browse") == ["browsed"]
    assert _ids(by_topic, "cart") == ["browsed", "abandoned-cart"]  # unless: / the A
    assert _ids(by_topic, "orders") == ["abandoned-cart"]  # its not_followed_by
    assert _ids(by_topic, "favorites") == []
    assert [order for order, _ in by_topic["cart"]] == [0, 3]


def test_a_new_rules_file_gets_its_own_index() -> None:
    before = ruleset(ABANDONED_CART)
    after = ruleset(BROWSED)
    assert _ids(index_of(before).by_topic, "cart") == ["abandoned-cart"]
    assert _ids(index_of(after).by_topic, "cart") == ["browsed"]
    assert index_of(before) is index_of(before)
