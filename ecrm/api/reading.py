"""Reading over HTTP: a customer's live profile and recent decisions, audiences as CSV, and
the API's metrics — through the library code the commands use."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import redis
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents.audience import Audience, select_audience
from agents.profile.reads import read_profile
from ecrm.api.context import ApiContext, require_key
from ecrm.output import cell_text, spreadsheet_safe
from schemas.audience_where import checked_where
from schemas.errors import AudienceError, ClickHouseError
from streams.clickhouse import SQL_DIR, ClickHouse

router = APIRouter()
API_SQL = SQL_DIR / "api"


def api_query(name: str) -> str:
    return (API_SQL / f"{name}.sql").read_text(encoding="utf-8")


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # money keeps its digits, as everywhere in ecrm
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.isoformat(timespec="milliseconds")
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def json_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as JSON values: money as strings, times ISO with their offset."""
    return list(orjson.loads(orjson.dumps(rows, default=_json_value)))


@router.get("/v1/profiles/{customer_id}", tags=["profiles"])
def profile(customer_id: str, request: Request) -> JSONResponse:
    """The live profile, as `ecrm profile ID --json` prints it (an anonymous id that was
    linked to a customer answers with that customer's profile)."""
    require_key(request, "read")
    ctx: ApiContext = request.app.state.ctx
    try:
        found = read_profile(ctx.settings, customer_id)
    except redis.RedisError as exc:
        raise HTTPException(503, f"Redis: {exc}") from exc
    if found is None:
        raise HTTPException(404, f"no profile for customer {customer_id!r}")
    return JSONResponse(found.public_view())


def customer_decisions(ch: ClickHouse, customer_id: str, limit: int) -> list[dict[str, Any]]:
    return ch.query(api_query("customer_decisions"), {"customer_id": customer_id, "limit": limit})


def recent_decisions(ch: ClickHouse, limit: int) -> list[dict[str, Any]]:
    return ch.query(api_query("recent_decisions"), {"limit": limit})


@router.get("/v1/profiles/{customer_id}/decisions", tags=["profiles"])
def decisions(
    customer_id: str, request: Request, limit: int = Query(50, ge=1, le=1000)
) -> JSONResponse:
    """The customer's latest rule decisions (fired, held out, suppressed and why, deferred)."""
    require_key(request, "read")
    ctx: ApiContext = request.app.state.ctx
    rows = ctx.analysis.run(lambda ch: customer_decisions(ch, customer_id, limit))
    return JSONResponse({"customer_id": customer_id, "decisions": json_rows(rows)})


def csv_lines(audience: Audience) -> Iterator[str]:
    """The audience as `ecrm audience export` writes it, a line at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def line(values: list[str]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield line(list(audience.columns))
    for row in audience.rows:
        yield line([spreadsheet_safe(cell_text(row.get(c), null="")) for c in audience.columns])


@router.get("/v1/audiences", tags=["audiences"])
def audiences(
    request: Request,
    where: str | None = None,
    query: str | None = None,
    param: list[str] = Query(default=[]),
) -> StreamingResponse:
    """The customers a where-clause over their profiles (or a named query) selects, as CSV
    (agents/audience.py, as `ecrm audience export`)."""
    require_key(request, "read")
    ctx: ApiContext = request.app.state.ctx
    try:
        if where is not None:
            checked_where(where)
        audience = ctx.analysis.run(
            lambda ch: select_audience(ch, where=where, query=query, params=param)
        )
    except (AudienceError, ClickHouseError) as exc:
        raise HTTPException(400, str(exc)) from exc
    return StreamingResponse(
        csv_lines(audience),
        media_type="text/csv; charset=utf-8",
        headers={"X-Ecrm-Customers": str(len(audience.rows))},
    )


@router.get("/metrics", tags=["operations"])
def metrics(request: Request) -> Response:
    """The API's Prometheus metrics (each worker serves its own on ECRM_METRICS_PORT)."""
    ctx: ApiContext = request.app.state.ctx
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
