"""Personal data at the door: buyers become keyed-hash ids, phones and names only masked.

A buyer's nickname is what joins an imported order to the same buyer's later orders, so it
becomes `customer_id_for(nickname, secret)`: HMAC-SHA256 under the install's secret
(`ECRM_PII_SECRET`), the same function `ecrm profile --buyer` uses. Without the secret the
id cannot be recomputed from a leaked nickname list. Display forms keep only what a
shop's customer service already shows (138****1234, t***8).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata

#: customer ids from a buyer name look like `c_` + 24 hex digits (96 bits of the HMAC)
CUSTOMER_ID_PREFIX = "c_"
CUSTOMER_ID_HEX = 24

_MOBILE = re.compile(r"(?<!\d)(1[3-9]\d)[ -]?\d{4}[ -]?(\d{4})(?!\d)")
_LANDLINE = re.compile(r"(?<!\d)(0\d{2,3})-?\d{3,4}(\d{4})(?!\d)")
_NOT_DIGIT = re.compile(r"\D")
_SUSPECT = re.compile(r"\d{3}[ -]?\d{4}|@")
_EMAIL = re.compile(r"([\w.+-])[\w.+-]*@([\w-]+(?:\.[\w-]+)+)")


def customer_id_for(buyer: str, secret: bytes) -> str:
    """The customer id of a buyer name: `c_` + the first 24 hex digits of HMAC-SHA256.

    The name is NFC-normalised and stripped, so the same nickname typed or exported in
    another Unicode form or with stray spaces gives the same id.
    """
    name = normalized_name(buyer)
    if not name:
        raise ValueError("an empty buyer name has no customer id")
    digest = hmac.digest(secret, name.encode("utf-8"), hashlib.sha256)
    return CUSTOMER_ID_PREFIX + digest.hex()[:CUSTOMER_ID_HEX]


def normalized_name(buyer: str) -> str:
    return unicodedata.normalize("NFC", buyer).strip()


def mask_phone(phone: str) -> str:
    """138****1234 for a mobile number; other digits kept only at the ends."""
    digits = phone if phone.isdigit() else _NOT_DIGIT.sub("", phone)
    if len(digits) == 11 and digits.startswith("1"):
        return f"{digits[:3]}****{digits[-4:]}"
    return mask_text(phone)


def mask_text(value: str) -> str:
    """The first and last character of a name, nickname or address, the rest as `*`."""
    text = value.strip()
    if len(text) <= 1:
        return "*" * len(text)
    if len(text) == 2:
        return text[0] + "*"
    return text[0] + "*" * min(len(text) - 2, 8) + text[-1]


def scrub(text: str) -> str:
    """Free text with every mobile, landline and e-mail address in it masked."""
    if not _SUSPECT.search(text):
        return text
    text = _MOBILE.sub(r"\1****\2", text)
    text = _LANDLINE.sub(r"\1****\2", text)
    return _EMAIL.sub(r"\1***@\2", text)
