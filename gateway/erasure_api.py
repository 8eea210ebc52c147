"""Erasure over HTTP: an admin erases a user, a child or a household of their structure; a
user asks for the erasure of their own account, which their structure's admins see and
confirm by erasing it (protocol.md §1.7; what is erased: realtime/erasure.py)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.http_api import current_principal, json_body, services
from gateway.params import MAX_ID, int_value, only_fields, path_id
from realtime import audit
from realtime.admin import iso
from realtime.erasure import KINDS, Eraser, Kind, Subject
from realtime.errors import BadRequest
from realtime.permissions import may_administer, refusal

REQUESTED_AT_SQL = "SELECT requested_at FROM erasure_requests WHERE user_id = $1"


def _kind(value: object) -> Kind:
    for kind in KINDS:
        if value == kind:
            return kind
    raise BadRequest('subject must be "user", "child" or "household"', code="bad_request")


async def erase(request: Request) -> Response:
    principal = await current_principal(request)
    structure_id = path_id(request, "sid")
    if not (decision := may_administer(principal, structure_id)).allowed:
        raise refusal(decision)
    body = await json_body(request)
    only_fields(body, ("subject", "id"), ("subject", "id"))
    subject = Subject(_kind(body["subject"]), int_value(body["id"], "id", 1, MAX_ID))
    s = services(request)
    erased = await Eraser(s.pool, s.redis, s.keys, s.media_store).erase(structure_id, subject, principal.user_id)
    return JSONResponse(erased.public())


async def request_my_erasure(request: Request) -> Response:
    principal = await current_principal(request)
    s = services(request)
    async with s.pool.acquire() as conn, conn.transaction():
        requested = await conn.fetchval(
            "INSERT INTO erasure_requests (user_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING requested_at",
            principal.user_id,
        )
        if requested is None:
            at = await conn.fetchval(REQUESTED_AT_SQL, principal.user_id)
            return JSONResponse({"requested_at": iso(at)})
        await audit.record_own(conn, user_id=principal.user_id, action="erasure.request")
    return JSONResponse({"requested_at": iso(requested)}, status_code=201)


async def my_erasure_request(request: Request) -> Response:
    principal = await current_principal(request)
    at = await services(request).pool.fetchval(REQUESTED_AT_SQL, principal.user_id)
    return JSONResponse({"requested_at": iso(at)})


async def erasure_requests(request: Request) -> Response:
    principal = await current_principal(request)
    structure_id = path_id(request, "sid")
    if not (decision := may_administer(principal, structure_id)).allowed:
        raise refusal(decision)
    rows = await services(request).pool.fetch(
        "SELECT u.id, u.display_name, u.email, r.requested_at FROM erasure_requests r JOIN users u ON u.id = r.user_id"
        " WHERE EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = u.id AND m.structure_id = $1)"
        " ORDER BY r.requested_at",
        structure_id,
    )
    items = [
        {
            "user": {"id": r["id"], "name": r["display_name"], "email": r["email"]},
            "requested_at": iso(r["requested_at"]),
        }
        for r in rows
    ]
    return JSONResponse({"items": items})


routes = [
    Route("/api/structures/{sid}/erasures", erase, methods=["POST"]),
    Route("/api/structures/{sid}/erasure-requests", erasure_requests, methods=["GET"]),
    Route("/api/me/erasure", request_my_erasure, methods=["POST"]),
    Route("/api/me/erasure", my_erasure_request, methods=["GET"]),
]
