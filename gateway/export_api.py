"""The data export endpoints (portability): ask for an export, list one's exports, follow
one and get its download link (docs/protocol.md §1.6; the zip's format: docs/export.md).

Who may export what is realtime.permissions.may_export. An export is its requester's
alone: anybody else gets the answer an unknown id gets. The download link is made at each
request, lives LINK_SECONDS, and is handed out only while the requester may still export
that subject.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.http_api import current_principal, current_user, json_body, services
from gateway.params import MAX_ID
from realtime.database import Pool
from realtime.errors import BadRequest, NotFound
from realtime.exports import CONTENT_TYPE, LINK_SECONDS, SCOPES, Exports
from realtime.permissions import Decision, may_export, refusal

NO_STORE = {"Cache-Control": "no-store"}
# The structure each scope's subject belongs to; no row: an unknown id.
STRUCTURE_OF = {
    "child": "SELECT structure_id FROM children WHERE id = $1",
    "household": "SELECT structure_id FROM families WHERE id = $1",
    "structure": "SELECT id FROM structures WHERE id = $1",
}


def parse_request(body: dict[str, Any]) -> tuple[str, int | None]:
    """The scope and subject asked for: `{"scope": "me"}`, or a scope and an `id`."""
    unknown = sorted(set(body) - {"scope", "id"})
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}", code="bad_request")
    scope = body.get("scope")
    if not isinstance(scope, str) or scope not in SCOPES:
        raise BadRequest(f"scope must be one of {', '.join(SCOPES)}", code="bad_request")
    subject = body.get("id")
    if scope == "me":
        if subject is not None:
            raise BadRequest("an export of your own data takes no id", code="bad_request")
        return scope, None
    if isinstance(subject, bool) or not isinstance(subject, int) or not 1 <= subject <= MAX_ID:
        raise BadRequest(f"id must be the {scope}'s id, a positive integer", code="bad_request")
    return scope, subject


async def structure_of(pool: Pool, scope: str, subject: int | None) -> int | None:
    if subject is None:
        return None
    found: int | None = await pool.fetchval(STRUCTURE_OF[scope], subject)
    return found


def check(decision: Decision) -> None:
    if not decision.allowed:
        raise refusal(decision)


async def request_export(request: Request) -> Response:
    s = services(request)
    principal = await current_principal(request)
    scope, subject = parse_request(await json_body(request))
    structure = await structure_of(s.pool, scope, subject)
    # An unknown child or household is refused like another structure's: no probing.
    check(may_export(principal, scope, structure))
    export, created = await Exports(s.pool).request(
        requester_id=principal.user_id, structure_id=structure, scope=scope, subject=subject
    )
    return JSONResponse(export.public(now=datetime.now(UTC)), status_code=202 if created else 200, headers=NO_STORE)


async def list_exports(request: Request) -> Response:
    user = await current_user(request)
    now = datetime.now(UTC)
    items = await Exports(services(request).pool).of_requester(user.user_id)
    return JSONResponse({"items": [e.public(now=now) for e in items]}, headers=NO_STORE)


async def get_export(request: Request) -> Response:
    s = services(request)
    principal = await current_principal(request)
    exports = Exports(s.pool)
    export = await exports.get(request.path_params["export_id"])
    if export is None or export.requester_id != principal.user_id:
        raise NotFound("no such export", code="not_found")
    now = datetime.now(UTC)
    url = None
    if export.state == "ready" and not export.lapsed(now):
        assert export.object_key is not None
        # Rights lost since the request (an admin no longer admin): no more downloads.
        check(may_export(principal, export.scope, export.structure_id))
        url = await s.media_store.url(export.object_key, CONTENT_TYPE, LINK_SECONDS)
        await exports.downloaded(export)
    return JSONResponse(export.public(now=now, url=url), headers=NO_STORE)


routes = [
    Route("/api/exports", request_export, methods=["POST"]),
    Route("/api/exports", list_exports, methods=["GET"]),
    Route("/api/exports/{export_id}", get_export, methods=["GET"]),
]
