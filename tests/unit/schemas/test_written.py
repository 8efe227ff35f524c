"""State remembered by the bytes it was encoded to (schemas/written.py), and the profile,
rule state and member state codecs that use it."""

from __future__ import annotations

from datetime import UTC, datetime

from agents.membership.state import MemberState, member_from_json, member_json
from agents.rules.state import CustomerRuleState, state_from_json, state_json
from schemas.profile import empty_profile, from_stored, stored
from schemas.written import Written

AT = datetime(2026, 3, 2, tzinfo=UTC)


def test_the_same_bytes_give_back_the_object_encoded_to_them() -> None:
    written: Written[object] = Written(handed_over=False)
    thing = object()
    written.remember(b"x", thing)
    assert written.take(b"x") is thing
    assert written.take(b"x") is thing  # shared: it stays
    assert written.take(b"y") is None
    assert written.take("x") is None  # text is never what this process wrote


def test_a_handed_over_object_is_given_once() -> None:
    written: Written[object] = Written(handed_over=True)
    thing = object()
    written.remember(b"x", thing)
    assert written.take(b"x") is thing
    assert written.take(b"x") is None


def test_at_most_kept_objects_are_remembered_the_oldest_going_first() -> None:
    written: Written[int] = Written(handed_over=False, kept=2)
    for n in range(3):
        written.remember(str(n).encode(), n)
    assert written.take(b"0") is None
    assert (written.take(b"1"), written.take(b"2")) == (1, 2)


def test_a_profile_read_back_is_the_one_stored_and_other_bytes_are_decoded() -> None:
    profile = empty_profile("c1")
    profile.events_seen = 3
    raw = stored(profile)
    assert from_stored(raw) is profile
    again = from_stored(raw)  # handed over already: decoded, equal
    assert again is not profile and again == profile
    other = stored(empty_profile("c2")).replace(b'"c2"', b'"c3"')
    assert from_stored(other).customer_id == "c3"


def test_a_changed_profile_stored_again_is_found_only_by_its_new_bytes() -> None:
    profile = empty_profile("c4")
    old = stored(profile)
    assert from_stored(old) is profile
    profile.page_views = 9
    new = stored(profile)
    assert from_stored(new) is profile
    assert from_stored(old).page_views == 0  # the old bytes decode to what they say


def test_rule_and_member_states_round_trip() -> None:
    state = CustomerRuleState(customer_id="c5", last_fired={"welcome": AT})
    raw = state_json(state)
    assert state_from_json(raw) is state and state_from_json(raw) is state
    assert state_from_json(raw.replace(b"c5", b"c6")).customer_id == "c6"
    member = MemberState(customer_id="c7", last_active_at=AT)
    raw = member_json(member)
    assert member_from_json(raw) is member
    assert member_from_json(raw) == member


def test_a_copied_rule_state_is_equal_and_changing_it_leaves_the_original() -> None:
    state = CustomerRuleState(
        customer_id="c8",
        counts={"r|a": [AT]},
        last_fired={"r": AT},
        seen_triggers=["t1"],
    )
    copy = state.copied()
    assert copy == state and copy.model_dump_json() == state.model_dump_json()
    copy.saw("t2")
    copy.last_fired["s"] = AT
    copy.counts["r|b"] = [AT]
    copy.contacts[AT.date()] = 1
    assert state.seen_triggers == ["t1"] and set(state.last_fired) == {"r"}
    assert set(state.counts) == {"r|a"} and not state.contacts
