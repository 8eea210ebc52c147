"""The HTTP API: login, logout, terms, password, me and its rectification, health."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.params import only_fields, text_field
from gateway.services import Services
from realtime import invitations
from realtime.accounts import SessionUser, normalise_email
from realtime.codec import LoneSurrogate, load_json
from realtime.errors import BadRequest, Unauthenticated
from realtime.permissions import Principal

MAX_BODY = 64 * 1024
HEALTH_TIMEOUT = 2.0


def services(request: Request) -> Services:
    s: Services = request.app.state.services
    return s


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise BadRequest("request body too large", code="too_large")
    try:
        # Strict decoding: bytes that encode a lone surrogate are no text either.
        data = load_json(raw.decode(json.detect_encoding(raw)) if raw else "null")
    except LoneSurrogate:
        raise BadRequest("body must be valid Unicode text", code="bad_request") from None
    except ValueError:  # UnicodeDecodeError included
        raise BadRequest("body must be JSON", code="bad_request") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object", code="bad_request")
    return data


async def current_user(request: Request, *, terms: bool = True) -> SessionUser:
    """The user behind `Authorization: Bearer <token>`; with terms=True, only once they
    accepted the current terms of use."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("send Authorization: Bearer <token>", code="unauthenticated")
    user = await services(request).accounts.authenticate(token.strip())
    return user.require_terms() if terms else user


async def current_principal(request: Request) -> Principal:
    """The policy's view of the caller (terms accepted)."""
    user = await current_user(request)
    principal = await services(request).directory.principal(user.user_id)
    if principal is None:
        raise Unauthenticated("invalid or expired token", code="invalid_token")
    return principal


async def login(request: Request) -> Response:
    body = await json_body(request)
    return session_opened(*await services(request).accounts.login(body.get("email"), body.get("password")))


def session_opened(token: str, user: SessionUser) -> Response:
    return JSONResponse({"token": token, "user": user.public(), "terms_accepted": user.terms_accepted})


async def invitation(request: Request) -> Response:
    return JSONResponse(await invitations.pending(services(request).pool, request.path_params["token"]))


async def accept_invitation(request: Request) -> Response:
    body = await json_body(request)
    accepted = await services(request).accounts.accept_invitation(request.path_params["token"], body.get("password"))
    return session_opened(*accepted)


async def logout(request: Request) -> Response:
    user = await current_user(request, terms=False)
    await services(request).accounts.logout(user)
    return Response(status_code=204)


async def terms(request: Request) -> Response:
    return JSONResponse(await services(request).accounts.current_terms())


async def accept_terms(request: Request) -> Response:
    user = await current_user(request, terms=False)
    body = await json_body(request)
    await services(request).accounts.accept_terms(user, body.get("version"))
    return JSONResponse({"accepted": body["version"]})


async def change_password(request: Request) -> Response:
    user = await current_user(request)
    body = await json_body(request)
    await services(request).accounts.change_password(user, body.get("old_password"), body.get("new_password"))
    return Response(status_code=204)


async def me(request: Request) -> Response:
    principal = await current_principal(request)
    return JSONResponse(await services(request).directory.me(principal))


async def update_me(request: Request) -> Response:
    user = await current_user(request)
    body = await json_body(request)
    only_fields(body, ("name", "email", "password"))
    changes = {}
    if "name" in body:
        changes["name"] = text_field(body, "name", 200)
    if "email" in body:
        changes["email"] = normalise_email(body["email"])
    if not changes:
        raise BadRequest("nothing to change", code="bad_request")
    updated = await services(request).accounts.update_profile(user, changes, body.get("password"))
    return JSONResponse({"user": updated.public()})


async def healthz(request: Request) -> Response:
    s = services(request)
    if s.draining.is_set():
        # The load balancer stops routing here while clients move to other gateways.
        return JSONResponse({"status": "draining"}, status_code=503)
    checks = {"postgres": s.pool.fetchval("SELECT 1"), "redis": s.redis.ping()}
    results = await asyncio.gather(
        *(asyncio.wait_for(check, HEALTH_TIMEOUT) for check in checks.values()), return_exceptions=True
    )
    down = [name for name, result in zip(checks, results, strict=True) if isinstance(result, BaseException)]
    if "redis" in down:
        # Nothing can be published nor delivered: the load balancer must route elsewhere.
        return JSONResponse({"status": "down", "down": down}, status_code=503)
    # Still 200 in maintenance mode: the load balancer keeps sending clients, who get the message.
    maintenance = {"maintenance": True} if s.maintenance.current else {}
    if down:
        # PostgreSQL alone: connected clients still publish and receive (the ingest streams
        # buffer until the workers can persist), so the load balancer must keep this gateway.
        return JSONResponse({"status": "degraded", "down": down, **maintenance})
    return JSONResponse({"status": "ok", **maintenance})


routes = [
    Route("/api/login", login, methods=["POST"]),
    Route("/api/logout", logout, methods=["POST"]),
    Route("/api/invitations/{token}", invitation, methods=["GET"]),
    Route("/api/invitations/{token}", accept_invitation, methods=["POST"]),
    Route("/api/terms", terms, methods=["GET"]),
    Route("/api/terms/accept", accept_terms, methods=["POST"]),
    Route("/api/password", change_password, methods=["POST"]),
    Route("/api/me", me, methods=["GET"]),
    Route("/api/me", update_me, methods=["PATCH"]),
    Route("/healthz", healthz, methods=["GET"]),
]
