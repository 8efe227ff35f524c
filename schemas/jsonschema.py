"""JSON Schema files of the contract models, for storefront developers who do not read Python.

One file per model that crosses a boundary, named ``<name>.schema.json``: the four input
events and the campaign event (what a storefront, or `ecrm campaign send`, may send:
validation shape, e.g. ``amount`` as number or decimal string, ``ts`` as ISO-8601 or epoch
milliseconds), and what ecrm emits (serialisation shape,
e.g. money as a decimal string): actions, segment changes, dead-letter records and the
profile that ``ecrm profile --json`` prints.

``ecrm schemas export DIR`` calls `export_json_schemas`; the copies under ``docs/schemas/``
are its output, regenerated whenever a model changes (a unit test fails when they drift).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from schemas.delivery import DeliveryFailure, Receipt
from schemas.events import (
    BrowseEvent,
    CampaignEvent,
    CartEvent,
    CustomerEvent,
    FavoriteEvent,
    IdentityEvent,
    OrderEvent,
    PointsEvent,
    TagEvent,
)
from schemas.outputs import Action, DeadLetter, SegmentChange
from schemas.profile import Profile

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SUFFIX = ".schema.json"

#: name -> (model, shape): "validation" for what ecrm reads, "serialization" for what it writes
CONTRACT_MODELS: dict[str, tuple[type[BaseModel], Literal["validation", "serialization"]]] = {
    "order": (OrderEvent, "validation"),
    "cart": (CartEvent, "validation"),
    "favorite": (FavoriteEvent, "validation"),
    "browse": (BrowseEvent, "validation"),
    "customer": (CustomerEvent, "validation"),
    "campaign": (CampaignEvent, "validation"),
    "identity": (IdentityEvent, "validation"),
    "points": (PointsEvent, "validation"),
    "tag": (TagEvent, "validation"),
    "action": (Action, "serialization"),
    "segment-change": (SegmentChange, "serialization"),
    "dead-letter": (DeadLetter, "serialization"),
    "delivery": (Receipt, "serialization"),
    "delivery-failure": (DeliveryFailure, "serialization"),
    "profile": (Profile, "serialization"),
}

#: bookkeeping `Profile.public_view` leaves out, and what it adds instead
_PROFILE_HIDDEN = ("recent_event_ids", "campaign_event_ids", "orders")
_PROFILE_ADDED = {
    "orders_in_window": {
        "type": "integer",
        "minimum": 0,
        "title": "Orders In Window",
        "description": "paid orders inside the RFM window",
    }
}


def contract_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of one contract model, by its file name without the suffix."""
    model, mode = CONTRACT_MODELS[name]
    schema = model.model_json_schema(mode=mode, by_alias=True)
    if model is Profile:
        schema = _public_profile(schema)
    return {"$schema": DIALECT, **schema}


def export_json_schemas(out_dir: Path) -> list[Path]:
    """Write ``<name>.schema.json`` for every contract model into `out_dir`; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name in CONTRACT_MODELS:
        path = out_dir / f"{name}{SUFFIX}"
        text = json.dumps(contract_schema(name), indent=2, ensure_ascii=False) + "\n"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _public_profile(schema: dict[str, Any]) -> dict[str, Any]:
    """The stored profile reshaped to what `Profile.public_view` prints."""
    properties = {k: v for k, v in schema["properties"].items() if k not in _PROFILE_HIDDEN}
    properties.update(_PROFILE_ADDED)
    defs = {k: v for k, v in schema.get("$defs", {}).items() if _is_used(k, properties)}
    shaped = {k: v for k, v in schema.items() if k not in ("properties", "required", "$defs")}
    if defs:
        shaped["$defs"] = defs
    shaped["properties"] = properties
    # public_view dumps every field, null where unknown, so every one is always there
    shaped["required"] = list(properties)
    return shaped


def _is_used(definition: str, properties: dict[str, Any]) -> bool:
    return f'"#/$defs/{definition}"' in json.dumps(properties)


__all__ = ["CONTRACT_MODELS", "contract_schema", "export_json_schemas"]
