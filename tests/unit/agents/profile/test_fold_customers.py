"""Member updates (`ecrm.customers`) in the fold: attributes and consent, never RFM; the latest
word on a channel wins whatever order the updates arrive in; a redelivery counts once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from agents.profile.fold import fold, fold_many, fold_new
from schemas.events import CHANNELS, CustomerEvent, OrderEvent
from schemas.profile import empty_profile

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def member(n: int, at: datetime = T0, **fields: Any) -> CustomerEvent:
    return CustomerEvent.model_validate(
        {"event_id": f"m-{n}", "customer_id": "c1", "ts": at.isoformat(), **fields}
    )


def test_a_member_update_sets_attributes_and_consent_but_moves_no_rfm() -> None:
    order = OrderEvent.model_validate(
        {
            "event_id": "o1",
            "customer_id": "c1",
            "ts": T0.isoformat(),
            "order_id": "o1",
            "status": "paid",
            "amount": "10",
        }
    )
    before = fold(empty_profile("c1"), order)
    after = fold(
        before,
        member(
            1,
            T0 + timedelta(hours=1),
            joined_at="2023-05-01T00:00:00+08:00",
            birthday="03-21",
            consent={"sms": False, "email": True},
        ),
    )
    assert after.birthday == "03-21"
    assert after.joined_at == datetime(2023, 4, 30, 16, tzinfo=UTC)
    assert {c: m.granted for c, m in after.consent.items()} == {"sms": False, "email": True}
    assert after.consent["sms"].at == T0 + timedelta(hours=1)
    # not the customer's behaviour: nothing else moved
    same = after.model_dump(exclude={"joined_at", "birthday", "consent", "recent_event_ids"})
    assert same == before.model_dump(
        exclude={"joined_at", "birthday", "consent", "recent_event_ids"}
    )


def test_a_redelivered_member_update_counts_once() -> None:
    update = member(1, consent={"sms": True})
    profile, new = fold_new(empty_profile("c1"), [update, update])
    assert new == [update]
    assert profile.consent["sms"].granted


def test_fields_left_out_keep_what_was_known() -> None:
    profile = fold_many(empty_profile("c1"), [member(1, birthday="12-31"), member(2, consent={})])
    assert profile.birthday == "12-31"


@given(
    st.lists(
        st.tuples(st.sampled_from(CHANNELS), st.booleans(), st.integers(0, 50)),
        min_size=1,
        max_size=12,
    ),
    st.randoms(),
)
def test_the_latest_word_per_channel_wins_whatever_the_order_of_arrival(
    words: list[tuple[str, bool, int]], rng: Any
) -> None:
    events = [
        member(n, T0 + timedelta(minutes=m), consent={channel: granted})
        for n, (channel, granted, m) in enumerate(words)
    ]
    shuffled = list(events)
    rng.shuffle(shuffled)
    in_order = fold_many(empty_profile("c1"), events)
    any_order = fold_many(empty_profile("c1"), shuffled)
    assert any_order.consent == in_order.consent
    for channel in {c for c, _, _ in words}:
        latest = max(m for c, _, m in words if c == channel)
        said = {g for c, g, m in words if c == channel and m == latest}
        # at the same instant, a refusal outweighs a grant
        assert any_order.consent[channel].granted == (said == {True})


@pytest.mark.parametrize("birthday", ["13-01", "02-30", "3-21", "1990-03-21", "03/21"])
def test_a_birthday_is_a_month_and_a_day(birthday: str) -> None:
    with pytest.raises(ValidationError, match="birthday"):
        member(1, birthday=birthday)


def test_consent_names_known_channels_only() -> None:
    with pytest.raises(ValidationError, match="consent"):
        member(1, consent={"fax": True})
