"""Personal data at the door: buyers become keyed-hash ids, phones and names only masked;
live events, dead letters and rejects lose the phone numbers and e-mail addresses they hold.

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
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

from pydantic import BaseModel

E = TypeVar("E", bound=BaseModel)

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


# -- personal data in live events, dead letters and rejects -------------------------------------

_PHONE_OR_EMAIL = (_MOBILE, _EMAIL)
#: what a withheld payload keeps: its first bytes (masked), its size and its SHA-256
WITHHELD_PREFIX_BYTES = 256
#: payload fields of outbox entries and rejects (rows for ClickHouse, a Kafka message's value
#: and key, an erasure's customer id) — the others are names, ids and counters
_PAYLOAD_FIELDS = (b"rows", b"value", b"key", b"erase")


def looks_personal(text: str) -> bool:
    """Whether free text holds a mobile number, a landline or an e-mail address."""
    if not _SUSPECT.search(text):
        return False
    return any(p.search(text) for p in (*_PHONE_OR_EMAIL, _LANDLINE))


#: a phone number inside an id stands apart from letters and digits: "13812345678",
#: "tel-13812345678", "0755-12345678"; the digit runs of a UUID's hex groups
#: ("4596-b027-08586588887e") are not phone numbers
_ID_MOBILE = re.compile(r"(?<![0-9A-Za-z])1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?![0-9A-Za-z])")
_ID_LANDLINE = re.compile(r"(?<![0-9A-Za-z])0\d{2,3}-?\d{3,4}\d{4}(?![0-9A-Za-z])")
#: a UUID (8-4-4-4-12 hex digits): its last group may be twelve decimal digits that start with
#: a 0 ("…-99b2-017875707611", about 1 UUID in 2,800), which alone reads like a landline
_UUID = re.compile(
    r"(?<![0-9A-Za-z])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    r"(?![0-9A-Za-z])"
)


def looks_personal_id(value: str) -> bool:
    """Whether an id (customer, event or order id) holds a phone number or an e-mail address.
    Stricter than `looks_personal` for free text: ids are often hex (UUIDs, hashes), whose
    digit runs would otherwise read as landlines and send ~2 % of event ids to be hashed."""
    if not _SUSPECT.search(value):
        return False
    if _EMAIL.search(value):
        return True
    phones = (_ID_MOBILE, _ID_LANDLINE)
    if not any(p.search(value) for p in phones):
        return False
    # rare: only then look again without the UUIDs the id holds
    return "-" not in value or any(p.search(_UUID.sub(" ", value)) for p in phones)


def personal_id(value: str, secret: bytes) -> str:
    """A keyed hash standing in for an id or field value that is personal data: `p_` + 24 hex
    digits, the same for the same value, so counts and joins still work."""
    digest = hmac.digest(secret, b"pii\x00" + value.encode("utf-8"), hashlib.sha256)
    return "p_" + digest.hex()[:CUSTOMER_ID_HEX]


def stored_customer_id(customer_id: str, secret: bytes) -> str:
    """The id ecrm keeps a customer under: a phone number or e-mail address sent as the id is
    kept as its keyed hash (`PiiGuard`), so commands given such an id look that up."""
    return personal_id(customer_id, secret) if looks_personal_id(customer_id) else customer_id


def withheld(data: bytes) -> dict[str, str | int]:
    """A payload reduced to what a dead letter or reject may keep of personal data."""
    prefix = data[:WITHHELD_PREFIX_BYTES].decode("utf-8", "ignore")
    return {
        "prefix": scrub(prefix),
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def withheld_fields(fields: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    """Stream entry fields fit to keep aside (sink and relay rejects): a payload field that
    holds personal data, or names a customer to erase, becomes
    `<name>_prefix` (masked), `<name>_size` and `<name>_sha256`. Others are kept whole, so
    they can be repaired and queued again."""
    kept: dict[bytes, bytes] = {}
    for name, value in fields.items():
        raw = value if isinstance(value, bytes) else str(value).encode()
        payload = name in _PAYLOAD_FIELDS
        if payload and (name == b"erase" or looks_personal(raw.decode("utf-8", "replace"))):
            for part, got in withheld(raw).items():
                kept[name + b"_" + part.encode()] = str(got).encode()
        else:
            kept[name] = raw
    return kept


#: ids that become keyed hashes when they hold personal data: the same value always gives
#: the same hash, so a customer keeps one id, a retried event is still recognised, and a
#: refund still finds its order
_IDS = ("customer_id", "event_id", "order_id")
#: the answer for the latest customer ids (a customer's events come again and again; event
#: ids never do, so they are looked at each time)
_customer_id_looks_personal = lru_cache(maxsize=65536)(looks_personal_id)


@dataclass(frozen=True)
class PiiGuard:
    """What happens to personal data in a live event before anything stores or forwards it:
    the fields the shop names (ECRM_PII_FIELDS) become keyed hashes wherever they appear among
    the unknown fields; a phone number or e-mail address found in an id (customer, event,
    order) makes it a keyed hash, and one found in another unknown field or in a browse URL
    is masked (138****1234, a***@example.com)."""

    secret: bytes
    fields: frozenset[str] = frozenset()

    def protect(self, event: E) -> E:
        """The event with its personal data replaced; the same object when there is none."""
        update: dict[str, Any] = {}
        fields = event.__dict__  # a missing attribute through getattr costs µs per event
        for name in _IDS:
            value = fields.get(name)
            if not isinstance(value, str):
                continue
            if name == "customer_id":
                personal = _customer_id_looks_personal(value)
            else:
                personal = looks_personal_id(value)
            if personal:
                update[name] = personal_id(value, self.secret)
        extra = event.__pydantic_extra__
        if extra:
            for name, value in extra.items():
                cleaned = self._value(name, value)
                if cleaned is not value:
                    update[name] = cleaned
        url = fields.get("url")
        if isinstance(url, str) and looks_personal(url):
            update["url"] = scrub(url)
        return event.model_copy(update=update) if update else event

    def _value(self, name: str, value: Any) -> Any:
        if name in self.fields and value is not None:
            return personal_id(value if isinstance(value, str) else str(value), self.secret)
        if isinstance(value, str):
            return scrub(value) if looks_personal(value) else value
        if isinstance(value, dict):
            new = {k: self._value(k, v) for k, v in value.items()}
            return value if all(new[k] is value[k] for k in value) else new
        if isinstance(value, list):
            items = [self._value(name, v) for v in value]
            return value if all(a is b for a, b in zip(items, value, strict=True)) else items
        return value
