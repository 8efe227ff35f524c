"""Keyed hashes for erasure and unsubscribe: stable per id, useless without the key, and an
unsubscribe token that opts out exactly the customer and channel it was made for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.events import CHANNELS
from schemas.privacy import BadToken, erasure_token, read_unsubscribe_token, unsubscribe_token

KEY = b"k" * 32
OTHER = b"o" * 32


def test_the_erasure_list_names_nobody_and_only_this_key_finds_them() -> None:
    token = erasure_token("13812345678", KEY)
    assert token == erasure_token("13812345678", KEY)
    assert "1381234" not in token and len(token) == 64
    assert token != erasure_token("13812345678", OTHER)
    assert token != erasure_token("13812345679", KEY)


@given(st.text(min_size=1, max_size=80), st.sampled_from([*CHANNELS, None, "webhook"]))
def test_a_token_opts_out_the_customer_and_channel_it_was_made_for(
    customer_id: str, channel: str | None
) -> None:
    token = unsubscribe_token(customer_id, channel, KEY)
    who, channels = read_unsubscribe_token(token, KEY)
    assert who == customer_id
    # an action on no channel, or on one without consent of its own, stops every channel
    assert channels == ([channel] if channel in CHANNELS else list(CHANNELS))


def test_a_token_from_another_install_or_altered_is_refused() -> None:
    token = unsubscribe_token("c-1", "sms", KEY)
    with pytest.raises(BadToken, match="signature"):
        read_unsubscribe_token(token, OTHER)
    version, who, _, tag = token.split(".")
    with pytest.raises(BadToken, match="signature"):  # someone else's id, same tag
        read_unsubscribe_token(
            f"{version}.{unsubscribe_token('c-2', 'sms', KEY).split('.')[1]}.sms.{tag}", KEY
        )
    with pytest.raises(BadToken, match="signature"):  # another channel, same tag
        read_unsubscribe_token(f"{version}.{who}.push.{tag}", KEY)
    with pytest.raises(BadToken, match="not an ecrm"):
        read_unsubscribe_token("hello", KEY)
