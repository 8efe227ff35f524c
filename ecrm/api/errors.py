"""Error answers every Segment-compatible client can read: `code` and `message` (what
Segment's and RudderStack's libraries read) beside FastAPI's `detail`, on every 4xx and 5xx.

    {"detail": "key 'crm-desk' is a read key; …", "code": "forbidden", "message": "key …"}
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

#: status -> the machine-readable `code` of the answer
CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


def code_of(status: int) -> str:
    if status in CODES:
        return CODES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def error_body(status: int, detail: Any) -> dict[str, Any]:
    """`{"detail", "code", "message"}`; `message` is the detail as one sentence of text."""
    message = detail if isinstance(detail, str) else HTTPStatus(status).phrase
    return {"detail": detail, "code": code_of(status), "message": message}


def install(app: FastAPI) -> None:
    """Every HTTPException and validation error of `app` answered in the shape above."""

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse(
            error_body(exc.status_code, exc.detail),
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
        )

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        body = error_body(422, f"{where}: {first.get('msg', 'invalid')}")
        body["errors"] = [{"loc": e.get("loc"), "msg": e.get("msg")} for e in errors]
        return JSONResponse(body, status_code=422)

    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(500, "internal error: see the API's log"), status_code=500)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, crashed)
