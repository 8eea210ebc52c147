"""HTTP errors as RFC 9457 problem documents carrying the same stable `code` as the
WebSocket error frames."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from realtime.errors import ProcrecheError, client_error

log = logging.getLogger("procreche.http")


def problem(
    status: int, code: str, detail: str, *, title: str | None = None, details: tuple[dict[str, object], ...] = ()
) -> JSONResponse:
    body: dict[str, object] = {
        "type": "about:blank",
        "title": title or code.replace("_", " "),
        "status": status,
        "code": code,
        "detail": detail,
    }
    if details:
        body["details"] = list(details)
    return JSONResponse(
        body,
        status_code=status,
        media_type="application/problem+json",
        headers={"WWW-Authenticate": "Bearer"} if status == 401 else None,
    )


async def handle_procreche_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProcrecheError)
    return problem(exc.http_status, exc.code, exc.message, details=exc.details)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    error = client_error(exc)
    if error.http_status >= 500 and error.code == "internal":
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    else:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    return problem(error.http_status, error.code, error.message)
