"""The member view answers as of now without changing what is stored."""

from __future__ import annotations

from decimal import Decimal

from agents.membership import ledger, levels
from agents.membership.state import MemberState
from agents.membership.view import member_view
from schemas.profile import empty_profile
from tests.unit.agents.membership.programme import DAY, ROLLING, T0


def test_the_view_shows_level_progress_points_and_lots_as_of_now() -> None:
    member = MemberState(customer_id="c1")
    levels.join(member, ROLLING, T0)
    ledger.earn_order(member, ROLLING, "O1", Decimal(1200), T0)
    levels.qualify(member, ROLLING, "order:O1", T0, Decimal(1200))
    stored = member.model_copy(deep=True)
    view = member_view(member, empty_profile("c1"), ROLLING, T0 + 20 * DAY)
    assert member == stored  # time was applied to a copy
    assert view["level"] == "silver" and view["benefits"] == {"points_multiplier": 1.5}
    assert view["points"]["balance"] == 1200 and view["points"]["pending"] == 0
    assert [lot["id"] for lot in view["points"]["lots"]] == ["order:O1"]
    assert view["progress"]["to_next_level"] == "3800" and view["progress"]["to_keep"] == "0"


def test_a_customer_who_never_bought_is_not_a_member_yet() -> None:
    view = member_view(None, empty_profile("c2"), ROLLING, T0)
    assert (view["member"], view["level"], view["points"]["balance"]) == (False, None, 0)
    assert view["tags"] == [] and view["benefits"] == {}
