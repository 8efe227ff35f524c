"""One line of a JSON Lines order file (the contract's order event) in; checked, out.

A line is produced as written once it validates as an `OrderEvent`, so its unknown fields
reach ClickHouse as the storefront wrote them. The one personal field understood is
`buyer` (instead of `customer_id`): it is replaced by its keyed hash. Phones and e-mail
addresses in any other text field are masked on the way. Every line goes out with
`origin: import`, so it builds profiles but never markets.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from agents.order_import.rows import Imported, ImportPolicy, Rejected, RowOutcome, Skipped
from schemas.events import IMPORT_ORIGIN, OrderEvent
from schemas.order_mapping import CONTRACT_FIELDS
from schemas.pii import customer_id_for, mask_text, scrub

#: fields a rejected line shows in clear: what an order is, nothing about who
SHOWN = frozenset({"event_id", "order_id", "status", "ts", "amount", "currency", "shop_id"})


def jsonl_outcome(line: bytes, policy: ImportPolicy) -> RowOutcome:
    if not line.strip():
        return Skipped("blank_row")
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return Rejected(f"not JSON: {exc}")
    if not isinstance(value, dict):
        return Rejected("not a JSON object")
    if "buyer" in value:
        if "customer_id" in value:
            return Rejected("both buyer and customer_id: give one")
        if policy.secret is None:
            return Rejected("buyer names are hashed: the import needs ECRM_PII_SECRET")
        buyer = value.pop("buyer")
        if not isinstance(buyer, str) or not buyer.strip():
            return Rejected("buyer is not a name")
        value = {"customer_id": customer_id_for(buyer, policy.secret), **value}
        value["buyer_masked"] = mask_text(buyer)
    cid = value.get("customer_id")
    if isinstance(cid, str) and scrub(cid) != cid:
        return Rejected("customer_id looks like a phone or e-mail: send it as buyer (hashed)")
    value = {k: v if k in CONTRACT_FIELDS else _scrubbed(v) for k, v in value.items()}
    if policy.shop_id is not None:
        value["shop_id"] = policy.shop_id
    value["origin"] = IMPORT_ORIGIN  # whatever the line said: imported history never markets
    try:
        event = OrderEvent.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "event"
        return Rejected(f"{where}: {first['msg']}")
    if event.ts > policy.now + policy.max_ahead:
        return Rejected(f"ts {event.ts.isoformat()} is in the future")
    if policy.not_before is not None and event.ts < policy.not_before:
        return Skipped("older_than_rfm_window")
    return Imported((value,))


def masked_jsonl(line: bytes) -> str:
    """The line as a reject file may show it: the order fields in clear (phones masked),
    every other text value masked; a line that is not JSON only by its ends."""
    text = line.decode("utf-8", errors="replace").strip()
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return mask_text(scrub(text))
    if isinstance(value, dict):
        value = {k: scrub(str(v)) if k in SHOWN else _masked(v) for k, v in value.items()}
    else:
        value = _masked(value)
    return orjson.dumps(value).decode()


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    return value


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    return value
