"""CORS for the browser library (analytics.js): which web pages may send with a write key.

A key's `origins` (`ecrm api key add web-shop --kind write --origin https://shop.example`)
are the pages allowed to use it. A preflight names no key (the browser sends neither the
Authorization header nor the body), so it is answered for an origin some write key allows;
the request itself then carries its key, and its answer gets `Access-Control-Allow-Origin`
only when that key allows the page's origin (else 403, saying how to allow it). Requests
without an `Origin` header (servers, curl) are not browsers' and are not concerned.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from ecrm.api.errors import error_body
from ecrm.api.keys import ApiKey, Keyring

#: headers analytics.js and the server-side libraries send
ALLOWED_HEADERS = "authorization, content-type, content-encoding, x-retry-count"
#: what a page's script may read of an answer (the wait after a 429 or 503)
EXPOSED_HEADERS = "Retry-After"
#: only these paths answer browsers: ingestion and its settings
BROWSER_PATHS = ("/v1/",)


def allow(request: Request, key: ApiKey) -> None:
    """Mark `request`'s answer for its page's origin when `key` allows it; 403 when the
    request comes from a page `key` does not allow."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    if not key.allows_origin(origin):
        raise HTTPException(
            403,
            f"key {key.name!r} may not be used from {origin}: allow it with "
            f"`ecrm api key add NAME --kind write --origin {origin}` (a key's origins are "
            "set when it is made)",
        )
    request.state.cors_origin = origin


def install(app: FastAPI, keyring: Keyring) -> None:
    """Answer preflights, and add the CORS headers to answers `allow` marked."""

    @app.middleware("http")
    async def cors(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        origin = request.headers.get("origin")
        browser = origin is not None and request.url.path.startswith(BROWSER_PATHS)
        if (
            browser
            and request.method == "OPTIONS"
            and "access-control-request-method" in request.headers
        ):
            assert origin is not None
            return preflight(keyring, origin)
        response = await call_next(request)
        allowed = getattr(request.state, "cors_origin", None)
        if browser and allowed is not None:
            response.headers["Access-Control-Allow-Origin"] = allowed
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            response.headers["Vary"] = "Origin"
        return response


def preflight(keyring: Keyring, origin: str) -> Response:
    if not keyring.any_allows_origin(origin):
        return JSONResponse(
            error_body(
                403,
                f"no write key may be used from {origin}: allow it with "
                f"`ecrm api key add NAME --kind write --origin {origin}`",
            ),
            status_code=403,
        )
    return Response(
        status_code=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        },
    )
