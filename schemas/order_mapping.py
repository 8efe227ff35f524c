"""How the columns of an order file become order events: the model of a mapping YAML file.

`ecrm import orders FILE --mapping MAPPING.yaml` reads one of these; the Taobao/Tmall export
is the same model, shipped (schemas/taobao.py). See docs/import.md for the grammar.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.errors import EcrmError

#: what a status value makes of a row: a paid order; an order closed (refunded in full when
#: it had been paid, skipped when it had not); or a row that is no order yet ("skip:reason")
StatusAction = Literal["paid", "closed", "skip"]

#: event fields the contract names: a kept column may not take one of these names
CONTRACT_FIELDS = frozenset(
    {
        "event_id",
        "customer_id",
        "ts",
        "shop_id",
        "order_id",
        "status",
        "amount",
        "currency",
        "items",
        "origin",
    }
)
#: extra fields the importer itself writes
IMPORTER_FIELDS = frozenset({"source", "title", "region", "buyer_masked", "phone_masked"})
_SLUG = re.compile(r"[a-z][a-z0-9_]{0,40}")
_STATUS_NOISE = re.compile(r"[\s,，、。.:：;；]+")


class OrderFileError(EcrmError):
    """An order file or mapping cannot be imported at all (no row is a reject: the file is)."""


@lru_cache(maxsize=1024)
def status_key(value: str) -> str:
    """A status as compared: without spaces or punctuation, so `已付款，等待发货` and
    `已付款, 等待发货` are one status."""
    return _STATUS_NOISE.sub("", value)


class Columns(BaseModel):
    """Which column (by its header) holds each part of an order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_id: str = Field(description="the shop's order number; event ids derive from it")
    buyer: str | None = Field(
        default=None, description="buyer name/nickname: hashed with ECRM_PII_SECRET"
    )
    customer_id: str | None = Field(default=None, description="an id used as is (not personal)")
    amount: str = Field(description="what the buyer actually paid, major units")
    paid_at: str | None = None
    created_at: str | None = None
    status: str | None = None
    refund: str | None = Field(default=None, description="amount refunded so far")
    currency: str | None = None
    shop_id: str | None = None
    title: str | None = Field(default=None, description="what was bought (free text)")
    phone: str | None = Field(default=None, description="kept only masked: 138****1234")
    address: str | None = Field(default=None, description="kept only as the region (province)")

    @model_validator(mode="after")
    def _joins_and_dates(self) -> Columns:
        if (self.buyer is None) == (self.customer_id is None):
            raise ValueError("map exactly one of columns.buyer and columns.customer_id")
        if self.paid_at is None and self.created_at is None:
            raise ValueError("map columns.paid_at or columns.created_at (or both)")
        return self

    def used(self) -> dict[str, str]:
        """Field -> header, for the fields that are mapped."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class OrderMapping(BaseModel):
    """A file format: its columns, its statuses, its time zone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(default="import", description="prefix of event ids: SOURCE:ORDER:paid")
    encoding: str = Field(default="auto", description="auto (UTF-8, BOM or GB18030) or a codec")
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    timezone: str = Field(default="Asia/Shanghai", description="zone of times without offset")
    currency: str = "CNY"
    columns: Columns
    #: status value -> paid | closed | skip[:reason]; absent = every row is a paid order
    statuses: dict[str, str] | None = None
    #: extra event field -> column, kept as (scrubbed) text, e.g. {goods_amount: 买家应付货款}
    keep: dict[str, str] = Field(default_factory=dict)
    #: mapped headers a file may lack (read as empty); every other mapped header must exist
    optional: list[str] = Field(default_factory=list)

    @field_validator("source")
    @classmethod
    def _source_slug(cls, value: str) -> str:
        if not _SLUG.fullmatch(value):
            raise ValueError("source is a short lowercase slug such as 'taobao' or 'myshop'")
        return value

    @field_validator("statuses")
    @classmethod
    def _known_actions(cls, statuses: dict[str, str] | None) -> dict[str, str] | None:
        for value, action in (statuses or {}).items():
            parse_action(action, value)
        return statuses

    @field_validator("keep")
    @classmethod
    def _free_names(cls, keep: dict[str, str]) -> dict[str, str]:
        for name in keep:
            if not _SLUG.fullmatch(name) or name in CONTRACT_FIELDS | IMPORTER_FIELDS:
                raise ValueError(f"keep: {name!r} is not a free lowercase field name")
        return keep

    def status_actions(self) -> dict[str, tuple[StatusAction, str]] | None:
        """Normalised status value -> (action, skip reason)."""
        if self.statuses is None:
            return None
        return {status_key(v): parse_action(a, v) for v, a in self.statuses.items()}


def parse_action(action: str, value: str) -> tuple[StatusAction, str]:
    kind, _, reason = action.partition(":")
    if kind in ("paid", "closed") and not reason:
        return kind, ""  # type: ignore[return-value]
    if kind == "skip":
        reason = reason or status_key(value) or "blank_status"
        return "skip", reason
    raise ValueError(f"status {value!r}: {action!r} is not paid, closed or skip[:reason]")


def load_mapping(path: Path) -> OrderMapping:
    """A mapping YAML file, or an OrderFileError naming the file and what is wrong."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OrderFileError(f"cannot read mapping {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise OrderFileError(f"{path}: not YAML ({exc})") from None
    if not isinstance(data, dict):
        raise OrderFileError(f"{path}: a mapping file is a YAML mapping with `columns:`")
    try:
        return OrderMapping.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'mapping'}: {e['msg']}" for e in exc.errors()
        )
        raise OrderFileError(f"{path}: {problems}") from None
