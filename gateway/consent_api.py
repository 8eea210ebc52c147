"""A guardian's publication consent for their child: read, sign, revoke."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.http_api import current_principal, json_body, services
from gateway.params import path_id
from gateway.services import Services
from realtime.invalidation import announce


def _child_id(request: Request) -> int:
    return path_id(request, "child_id")


async def consent_state(request: Request) -> Response:
    principal = await current_principal(request)
    return JSONResponse(await services(request).consents.state(principal, _child_id(request)))


async def tell_staff(s: Services, state: dict[str, Any]) -> None:
    """Staff composing a post see a child become taggable (or not) at once: an event to the
    staff subscribed to the structure's channel."""
    await s.bus.tell_staff(
        state["structure"]["id"], "consent", {"child": state["child"], "complete": state["complete"]}
    )


async def sign_consent(request: Request) -> Response:
    principal = await current_principal(request)
    body = await json_body(request)
    s = services(request)
    state = await s.consents.sign(principal, _child_id(request), body.get("declare"))
    await announce(s.redis, s.keys, children=[_child_id(request)])
    await tell_staff(s, state)
    return JSONResponse(state, status_code=201)


async def revoke_consent(request: Request) -> Response:
    principal = await current_principal(request)
    s = services(request)
    state = await s.consents.revoke(principal, _child_id(request))
    await announce(s.redis, s.keys, children=[_child_id(request)])
    await tell_staff(s, state)
    return JSONResponse(state)


routes = [
    Route("/api/children/{child_id}/consent", consent_state, methods=["GET"]),
    Route("/api/children/{child_id}/consent", sign_consent, methods=["POST"]),
    Route("/api/children/{child_id}/consent", revoke_consent, methods=["DELETE"]),
]
