"""Which rules an event can concern, worked out once per rules file instead of once per event.

A rules file is read once and never changes (schemas/rules.py: frozen models); the engine asks
the same questions of it for every event — which rules start on, wait for, or are reset by an
event of this topic; which rules are in force, which wait, which count. `index_of(rules)`
answers them from tables built the first time a RuleSet is seen, so that an event of one topic
looks only at the rules that name that topic, in file order.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.rules import Rule, RuleSet

#: RuleSets whose index is kept (a hot reload makes a new one; the old ones go soon after).
RULESETS_KEPT = 8


@dataclass(frozen=True)
class RuleIndex:
    """What the engine needs to know of a RuleSet on every event."""

    #: topic -> (file position, rule) of the enabled event rules whose trigger, `unless:` or
    #: `not_followed_by:` names that topic, in file order
    by_topic: dict[str, tuple[tuple[int, Rule], ...]]
    #: the enabled rules by id
    live: dict[str, Rule]
    #: ids of the enabled rules that wait ("A not followed by B within T")
    waiting: frozenset[str]
    #: ids of the enabled rules that count ("3 times within a day")
    counting: frozenset[str]
    #: "rule_id|" of each of those: the prefix of their count slots ("rule_id|key")
    count_slot_prefixes: tuple[str, ...]
    #: rule id -> its position in the file (breaks priority ties)
    order_of: dict[str, int]


def build_index(rules: RuleSet) -> RuleIndex:
    by_topic: dict[str, list[tuple[int, Rule]]] = {}
    for order, rule in enumerate(rules.rules):
        when = rule.when
        if not rule.enabled or when.segment_change is not None:
            continue
        topics = {when.event}
        if when.not_followed_by is not None:
            topics.add(when.not_followed_by.event)
        if when.unless is not None:
            topics.add(when.unless.event)
        for topic in topics:
            if topic is not None:
                by_topic.setdefault(topic, []).append((order, rule))
    live = {rule.id: rule for rule in rules.enabled}
    counting = frozenset(i for i, rule in live.items() if rule.when.count is not None)
    return RuleIndex(
        by_topic={topic: tuple(found) for topic, found in by_topic.items()},
        live=live,
        waiting=frozenset(i for i, rule in live.items() if rule.when.waits),
        counting=counting,
        count_slot_prefixes=tuple(f"{i}|" for i in sorted(counting)),
        order_of={rule.id: order for order, rule in enumerate(rules.rules)},
    )


#: id(RuleSet) -> (the RuleSet, kept alive so that its id is not reused, and its index)
_INDEXES: dict[int, tuple[RuleSet, RuleIndex]] = {}


def index_of(rules: RuleSet) -> RuleIndex:
    """The RuleSet's index, built the first time it is asked for."""
    kept = _INDEXES.get(id(rules))
    if kept is not None:
        return kept[1]
    index = build_index(rules)
    while len(_INDEXES) >= RULESETS_KEPT:
        _INDEXES.pop(next(iter(_INDEXES)), None)  # the oldest
    _INDEXES[id(rules)] = (rules, index)
    return index
