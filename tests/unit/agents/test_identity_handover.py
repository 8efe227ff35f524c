"""The steps of a link across Redis Cluster slots are signed: they round-trip as messages,
and one a storefront wrote, or changed, or signed with another shop's key, is not taken."""

from __future__ import annotations

from datetime import UTC, datetime

from agents import identity_handover as handover
from schemas.events import IdentityEvent

KEY = b"the shop's privacy key"
LINK = IdentityEvent.model_validate(
    {
        "event_id": "login-1",
        "customer_id": "cust-7",
        "previous_id": "anon-3",
        "ts": datetime(2026, 11, 30, 8, tzinfo=UTC),
    }
)


def _read(event: IdentityEvent) -> IdentityEvent:
    return IdentityEvent.model_validate_json(handover.as_message(event))


def test_a_release_and_an_absorb_survive_the_topic_and_verify() -> None:
    asked = _read(handover.release(LINK, "anon-3", KEY))
    assert asked.handover is not None and asked.handover.stage == "release"
    assert handover.verified(asked, KEY)
    moved = _read(handover.absorb(asked, "cust-7", b'{"v":1}', b"{}", KEY))
    assert moved.handover is not None and moved.handover.profile == '{"v":1}'
    assert handover.verified(moved, KEY)


def test_a_handover_a_storefront_wrote_or_changed_is_not_taken() -> None:
    moved = handover.absorb(LINK, "cust-7", b'{"v":1,"frequency":1}', None, KEY)
    assert moved.handover is not None
    richer = moved.model_copy(
        update={"handover": moved.handover.model_copy(update={"profile": '{"v":1,"frequency":99}'})}
    )
    assert not handover.verified(richer, KEY)
    assert not handover.verified(moved.model_copy(update={"customer_id": "someone-else"}), KEY)
    assert not handover.verified(moved, b"another shop's key")
    unsigned = moved.model_copy(
        update={"handover": moved.handover.model_copy(update={"signature": ""})}
    )
    assert not handover.verified(unsigned, KEY)
    assert not handover.verified(LINK, KEY)  # a plain link carries no handover
