"""Keyed hashes that let ecrm act on a customer without keeping who they are in clear.

Two things a customer can ask for leave a trace that must outlive their data:

- an **erasure** is remembered as `erasure_token(id)`, HMAC-SHA256 of the id under the
  install's privacy key (ECRM_PRIVACY_SECRET): the worker recognises a later or replayed event
  of that customer and drops it, yet the erasure list names nobody — without the key, a
  leaked list cannot be checked against a list of phone numbers;
- an **unsubscribe token** rides in every action's params, so that a channel provider can hand
  it back when the customer clicks "unsubscribe": `u1.<id, base64url>.<channel>.<tag>`, the tag
  an HMAC of the rest. It carries the id the action already carries; the tag makes it
  unforgeable, so nobody can opt another customer out.

Pure: the caller passes the key (streams/settings.py `Settings.privacy_key`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from schemas.events import CHANNELS

#: the "channel" of a token for an action on no channel: it stops them all
ALL_CHANNELS = "all"
_TOKEN_VERSION = "u1"  # noqa: S105 - a format version, not a password
_TAG_BYTES = 16


def _mac(key: bytes, purpose: str, text: str) -> bytes:
    # the purpose keeps the two uses apart: a token's tag is never an erasure hash
    return hmac.digest(key, f"{purpose}\x00{text}".encode(), hashlib.sha256)


def erasure_token(customer_id: str, key: bytes) -> str:
    """The erasure list's name for a customer: 64 hex digits, the same for the same id."""
    return _mac(key, "erasure", customer_id).hex()


def unsubscribe_token(customer_id: str, channel: str | None, key: bytes) -> str:
    """The token that opts `customer_id` out of `channel` (of all channels for an action on
    none, or on a channel consent is not given for one by one, e.g. a webhook)."""
    where = channel if channel in CHANNELS else ALL_CHANNELS
    who = base64.urlsafe_b64encode(customer_id.encode()).rstrip(b"=").decode()
    body = f"{_TOKEN_VERSION}.{who}.{where}"
    tag = base64.urlsafe_b64encode(_mac(key, "unsubscribe", body)[:_TAG_BYTES]).rstrip(b"=")
    return f"{body}.{tag.decode()}"


class BadToken(ValueError):
    """An unsubscribe token that is malformed or was not made with this install's key."""


def read_unsubscribe_token(token: str, key: bytes) -> tuple[str, list[str]]:
    """(customer id, the channels it opts out of), or BadToken."""
    parts = token.strip().split(".")
    if len(parts) != 4 or parts[0] != _TOKEN_VERSION:
        raise BadToken("not an ecrm unsubscribe token (u1.<customer>.<channel>.<tag>)")
    version, who, where, tag = parts
    body = f"{version}.{who}.{where}"
    want = base64.urlsafe_b64encode(_mac(key, "unsubscribe", body)[:_TAG_BYTES]).rstrip(b"=")
    if not hmac.compare_digest(want, tag.encode()):
        raise BadToken("the token's signature does not match (altered, or another install's)")
    try:
        customer_id = base64.urlsafe_b64decode(who + "=" * (-len(who) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:  # signed, so only a bug gets here
        raise BadToken("the token's customer cannot be read") from exc
    return customer_id, [where] if where in CHANNELS else list(CHANNELS)
