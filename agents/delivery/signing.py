"""Signatures, pure: ecrm's webhook signature (sent and verified), and the signed click links.

The webhook signature (docs/delivery.md has verification snippets in Python and Node):

    ECRM-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

A receiver recomputes v1 over the raw body and refuses a `t` older than its replay window
(5 minutes is the documented default, `REPLAY_WINDOW_S`), then dedupes on Idempotency-Key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SIGNATURE_HEADER = "ECRM-Signature"
REPLAY_WINDOW_S = 300


def webhook_signature(secret: bytes, body: bytes, t: int) -> str:
    mac = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


class BadSignature(ValueError):
    """A signature that does not match, is malformed, or is too old."""


def verify_webhook(
    secret: bytes, body: bytes, header: str, now: int, window_s: int = REPLAY_WINDOW_S
) -> int:
    """The signed time of a valid header; BadSignature otherwise."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError) as exc:
        raise BadSignature("expected t=<seconds>,v1=<hex>") from exc
    if abs(now - t) > window_s:
        raise BadSignature(f"signed {now - t}s ago, outside the {window_s}s replay window")
    want = webhook_signature(secret, body, t).split("v1=", 1)[1]
    if not hmac.compare_digest(want, given):
        raise BadSignature("the signature does not match the body")
    return t


# -- click links: /r/<token>, the token naming the action and the address, signed ----------------


def _tag(key: bytes, body: str) -> str:
    mac = hmac.digest(key, f"click\x00{body}".encode(), hashlib.sha256)[:16]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def click_token(action_id: str, url: str, key: bytes) -> str:
    """`c1.<action id>.<url>.<tag>`, base64url parts: only this install can make one, so the
    redirect never sends a shopper to an address a stranger chose."""
    body = f"c1.{_b64(action_id)}.{_b64(url)}"
    return f"{body}.{_tag(key, body)}"


def read_click_token(token: str, key: bytes) -> tuple[str, str]:
    """(action id, url) of a valid token; BadSignature otherwise."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != "c1":
        raise BadSignature("not an ecrm click token")
    body = ".".join(parts[:3])
    if not hmac.compare_digest(_tag(key, body), parts[3]):
        raise BadSignature("the click token's signature does not match")
    try:
        action_id, url = (
            base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)).decode() for p in parts[1:3]
        )
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise BadSignature("the click token cannot be read") from exc
    return action_id, url
