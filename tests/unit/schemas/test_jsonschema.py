"""The exported JSON Schemas say what the contract says, and the copies in docs/ are current."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agents.profile.fold import RfmPolicy, fold_many, refresh
from schemas.delivery import DeliveryFailure, Receipt
from schemas.events import CartEvent, OrderEvent
from schemas.jsonschema import CONTRACT_MODELS, export_json_schemas
from schemas.outputs import Action, DeadLetter, SegmentChange
from schemas.profile import empty_profile

DOCS = Path(__file__).resolve().parents[3] / "docs" / "schemas"
AT = datetime(2024, 6, 18, 12, tzinfo=UTC)
EVENT = ["event_id", "customer_id", "ts"]

#: what CONTRACT.md makes every producer send and every consumer find
CONTRACT_REQUIRED = {
    "order": [*EVENT, "order_id", "status", "amount"],
    "cart": [*EVENT, "sku", "qty", "price"],
    "favorite": [*EVENT, "sku"],
    "browse": EVENT,
    "customer": EVENT,
    "campaign": [*EVENT, "campaign"],
    "identity": [*EVENT, "previous_id"],
    "points": [*EVENT, "kind", "points"],
    "tag": [*EVENT, "tag"],
    "action": ["action_id", "rule_id", "customer_id", "kind", "fired_at"],
    "segment-change": ["customer_id", "from", "to", "at"],
    "dead-letter": ["topic", "partition", "offset", "error", "value_b64", "at"],
    "delivery": ["action_id", "status", "at"],
    "delivery-failure": ["action_id", "reason", "at"],
    "profile": ["customer_id", "recency_days", "frequency", "monetary", "segment"],
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    paths = export_json_schemas(tmp_path_factory.mktemp("schemas"))
    assert [p.name for p in paths] == [f"{name}.schema.json" for name in CONTRACT_MODELS]
    return {p.name.removesuffix(".schema.json"): json.loads(p.read_text()) for p in paths}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


@pytest.mark.parametrize("name", list(CONTRACT_REQUIRED))
def test_each_schema_is_an_object_schema_requiring_what_the_contract_requires(
    exported: dict[str, dict[str, Any]], name: str
) -> None:
    schema = exported[name]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert set(schema["required"]) <= set(schema["properties"])
    assert set(CONTRACT_REQUIRED[name]) <= set(schema["required"])
    for ref in _refs(schema):
        assert ref.startswith("#/$defs/")
        assert ref.removeprefix("#/$defs/") in schema["$defs"]


def test_input_events_require_exactly_the_contract_fields(
    exported: dict[str, dict[str, Any]],
) -> None:
    for name in ("order", "cart", "favorite", "browse"):
        assert exported[name]["required"] == CONTRACT_REQUIRED[name]
        assert exported[name]["additionalProperties"] is True  # unknown fields are kept


def test_ts_may_be_iso_or_epoch_millis_and_amount_a_number_or_a_string(
    exported: dict[str, dict[str, Any]],
) -> None:
    order = exported["order"]["properties"]
    assert {alt["type"] for alt in order["ts"]["anyOf"]} == {"string", "integer"}
    assert {alt["type"] for alt in order["amount"]["anyOf"]} == {"number", "string"}
    assert order["status"]["enum"] == ["paid", "refunded"]


def test_a_browse_event_needs_a_sku_or_a_url(exported: dict[str, dict[str, Any]]) -> None:
    assert [alt["required"] for alt in exported["browse"]["anyOf"]] == [["sku"], ["url"]]


def test_a_segment_change_says_from_not_from_(exported: dict[str, dict[str, Any]]) -> None:
    assert "from" in exported["segment-change"]["properties"]
    assert "from_" not in exported["segment-change"]["properties"]


def test_the_profile_schema_has_the_fields_ecrm_profile_prints(
    exported: dict[str, dict[str, Any]],
) -> None:
    printed = _a_profile_as_printed()
    assert set(exported["profile"]["properties"]) == set(printed)
    assert "last_order_at" in exported["profile"]["required"]


def test_the_copies_in_docs_are_what_the_models_export_now(
    exported: dict[str, dict[str, Any]],
) -> None:
    in_docs = {p.name.removesuffix(".schema.json") for p in DOCS.glob("*.schema.json")}
    assert in_docs == set(exported), "run export_json_schemas(Path('docs/schemas'))"
    for name, schema in exported.items():
        committed = json.loads((DOCS / f"{name}.schema.json").read_text())
        assert committed == schema, f"docs/schemas/{name}.schema.json is stale: re-export it"


def test_export_overwrites_and_creates_the_directory(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    first = export_json_schemas(target)
    assert export_json_schemas(target) == first
    assert all(p.parent == target for p in first)


# --- with a real validator, where one is installed -------------------------------------------


def _samples() -> dict[str, list[dict[str, Any]]]:
    event = {"event_id": "e-1", "customer_id": "c-1", "ts": "2024-06-18T20:00:00+08:00"}
    return {
        "order": [
            {**event, "order_id": "o-1", "status": "paid", "amount": "199.90", "coupon": "618"},
            {
                **event,
                "ts": 1718712000000,
                "order_id": "o-1",
                "status": "refunded",
                "amount": 20,
                "items": [{"sku": "s", "qty": 1, "price": 20, "category": "tea"}],
            },
        ],
        "cart": [{**event, "sku": "s", "qty": 2, "price": "9.90"}],
        "favorite": [{**event, "sku": "s"}],
        "browse": [{**event, "sku": "s"}, {**event, "url": "/promo", "category": "tea"}],
        "customer": [
            {**event, "birthday": "02-29", "consent": {"sms": False, "wechat": True}},
            {**event, "joined_at": 1718712000000},
        ],
        "campaign": [{**event, "event_id": "campaign:spring-sale:c-1", "campaign": "spring-sale"}],
        "identity": [{**event, "previous_id": "anon-1"}],
        "points": [
            {**event, "kind": "redeem", "points": 500, "reason": "checkout", "order_id": "o-1"},
            {**event, "kind": "adjust", "points": -20},
        ],
        "tag": [{**event, "tag": "wholesale"}, {**event, "tag": "wholesale", "op": "remove"}],
        "action": [
            json.loads(
                Action(
                    action_id="a-1",
                    rule_id="abandoned-cart",
                    customer_id="c-1",
                    kind="coupon",
                    params={"value": 10},
                    fired_at=AT,
                ).model_dump_json()
            )
        ],
        "segment-change": [
            json.loads(
                SegmentChange(
                    customer_id="c-1", from_="important_value", to="important_keep", at=AT
                ).to_json()
            )
        ],
        "dead-letter": [
            json.loads(
                DeadLetter.of(
                    topic="ecrm.orders",
                    partition=0,
                    offset=7,
                    key=b"c-1",
                    value=b"\xff not json",
                    error="not JSON",
                    at=AT,
                ).model_dump_json()
            )
        ],
        "delivery": [
            json.loads(
                Receipt(
                    action_id="a-1",
                    rule_id="welcome",
                    customer_id="c-1",
                    channel="sms",
                    provider="aliyun",
                    status="delivered",
                    provider_id="9006^0",
                    at=AT,
                ).model_dump_json()
            )
        ],  # fmt: skip
        "delivery-failure": [
            json.loads(
                DeliveryFailure(
                    action_id="a-1", reason="HTTP 422: unknown customer", attempts=1, at=AT
                ).model_dump_json()
            )
        ],
        "profile": [_a_profile_as_printed()],
    }


def _a_profile_as_printed() -> dict[str, Any]:
    events = [
        OrderEvent(
            event_id="e-1",
            customer_id="c-1",
            ts=AT,
            order_id="o-1",
            status="paid",
            amount=Decimal("600"),
        ),
        CartEvent(event_id="e-2", customer_id="c-1", ts=AT, sku="s", qty=1, price=Decimal("1")),
    ]
    profile = refresh(fold_many(empty_profile("c-1"), events), AT, RfmPolicy())
    printed: dict[str, Any] = json.loads(json.dumps(profile.public_view()))
    return printed


def test_the_schemas_accept_real_documents_and_reject_broken_ones(
    exported: dict[str, dict[str, Any]],
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    for name, schema in exported.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        validator = jsonschema.Draft202012Validator(schema)
        for sample in _samples()[name]:
            validator.validate(sample)
            for field in CONTRACT_REQUIRED[name]:
                broken = {k: v for k, v in sample.items() if k != field}
                assert not validator.is_valid(broken), f"{name} without {field} passed"
    browse = jsonschema.Draft202012Validator(exported["browse"])
    assert not browse.is_valid({"event_id": "e", "customer_id": "c", "ts": 0})
    assert not browse.is_valid({"event_id": "e", "customer_id": "c", "ts": 0, "sku": None})
    assert not browse.is_valid({"event_id": "e", "customer_id": "c", "ts": 0, "url": ""})
    viewed = {"event_id": "e", "customer_id": "c", "url": "/"}
    for ts in ("2024-06-18T20:00:00+08:00", "2024-06-18T12:00:00.5Z", 1718712000000):
        assert browse.is_valid({**viewed, "ts": ts}), ts
    for ts in ("2024-06-18T20:00:00", "yesterday", 10**18, 1.5):
        assert not browse.is_valid({**viewed, "ts": ts}), ts
