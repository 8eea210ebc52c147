"""The administration HTTP API of a structure (settings, staff, groups, children, households,
guardianships, audit log) and the consent state staff read.

Each handler authenticates, loads the principal, asks the policy (realtime/permissions.py)
before reading the body, so that a caller without rights learns nothing from validation
errors, then calls realtime/admin.py and answers JSON. Ids in paths that are not positive
64-bit integers are treated as the id 0, which never exists: they get the same answer as any
other unknown id (403 for a structure, 404 below it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.http_api import current_principal, json_body, services
from gateway.params import (
    MAX_ID,
    bool_field,
    int_value,
    only_fields,
    optional_date,
    optional_id,
    path_id,
    query_int,
    text_field,
)
from realtime.accounts import normalise_email
from realtime.admin import GUARDIANSHIP_FLAGS, StructureAdmin
from realtime.errors import BadRequest, Forbidden
from realtime.permissions import Decision, Principal, may_administer, may_edit_child, may_view_consents, refusal

Policy = Callable[[Principal, int], Decision]

MAX_LIST = 1000
AUDIT_DEFAULT_LIMIT = 50
AUDIT_MAX_LIMIT = 500

STAFF_FIELDS = ("email", "name", "role")
CHILD_PARSERS: dict[str, Callable[[Mapping[str, Any], str], Any]] = {
    "first_name": lambda body, f: text_field(body, f, 100),
    "last_name": lambda body, f: text_field(body, f, 100),
    "group_id": optional_id,
    "birth_date": optional_date,
    "enrolled_on": optional_date,
    "left_on": optional_date,
}


def _child_fields(body: Mapping[str, Any], *, create: bool) -> dict[str, Any]:
    required = ("first_name", "last_name", "enrolled_on") if create else ()
    only_fields(body, tuple(CHILD_PARSERS), required)
    fields = {f: parse(body, f) for f, parse in CHILD_PARSERS.items() if f in body}
    if "enrolled_on" in fields and fields["enrolled_on"] is None:
        raise BadRequest("enrolled_on is required", code="bad_request")
    if not fields:
        raise BadRequest("nothing to change", code="bad_request")
    return fields


def _role(value: object) -> str:
    if value not in ("staff", "admin"):
        raise BadRequest('role must be "staff" or "admin"', code="bad_request")
    assert isinstance(value, str)
    return value


# -- the caller ---------------------------------------------------------------------------


async def _admin(request: Request, policy: Policy) -> StructureAdmin:
    """The caller's operations on the structure in the path, once the policy allows them."""
    return (await _caller(request, policy))[1]


async def _caller(request: Request, policy: Policy) -> tuple[Principal, StructureAdmin]:
    principal = await current_principal(request)
    s = services(request)
    structure_id = path_id(request, "sid")
    # An unknown structure is refused exactly like someone else's: no probing of ids.
    decision = policy(principal, structure_id)
    if not decision.allowed:
        raise Forbidden(decision.reason or "you may not administer this structure", code=decision.code or "forbidden")
    admin = StructureAdmin(s.pool, s.redis, s.keys, s.directory, actor_id=principal.user_id, structure_id=structure_id)
    return principal, admin


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


NO_CONTENT = 204

# -- structure ----------------------------------------------------------------------------


async def get_structure(request: Request) -> Response:
    admin = await _admin(request, may_view_consents)
    return _json(await admin.structure())


async def patch_structure(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    only_fields(body, ("name", "guardians_may_post", "retention_months"))
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = text_field(body, "name", 200)
    if "guardians_may_post" in body:
        changes["guardians_may_post"] = bool_field(body, "guardians_may_post")
    if "retention_months" in body:
        changes["retention_months"] = int_value(body["retention_months"], "retention_months", 1, 120)
    if not changes:
        raise BadRequest("nothing to change", code="bad_request")
    return _json(await admin.update_structure(changes))


# -- staff --------------------------------------------------------------------------------


async def list_staff(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    return _json(await admin.staff())


async def add_staff(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    only_fields(body, STAFF_FIELDS, STAFF_FIELDS)
    member, added = await admin.add_staff(
        normalise_email(body["email"]), text_field(body, "name", 200), _role(body["role"])
    )
    return _json(member, 201 if added else 200)


async def remove_staff(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    await admin.remove_staff(path_id(request, "uid"), _role(request.query_params.get("role")))
    return Response(status_code=NO_CONTENT)


# -- groups -------------------------------------------------------------------------------


async def list_groups(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    return _json(await admin.groups())


async def create_group(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    only_fields(body, ("name",), ("name",))
    return _json(await admin.create_group(text_field(body, "name", 200)), 201)


async def patch_group(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    only_fields(body, ("name",), ("name",))
    return _json(await admin.rename_group(path_id(request, "gid"), text_field(body, "name", 200)))


async def delete_group(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    await admin.delete_group(path_id(request, "gid"))
    return Response(status_code=NO_CONTENT)


async def put_group_staff(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    only_fields(body, ("user_ids",), ("user_ids",))
    user_ids = body["user_ids"]
    if not isinstance(user_ids, list) or len(user_ids) > MAX_LIST:
        raise BadRequest(f"user_ids must be a list of at most {MAX_LIST} ids", code="bad_request")
    ids = [int_value(u, "user_ids[]", 1, MAX_ID) for u in user_ids]
    return _json(await admin.set_group_staff(path_id(request, "gid"), ids))


# -- children -----------------------------------------------------------------------------


async def list_children(request: Request) -> Response:
    admin = await _admin(request, may_edit_child)
    return _json(await admin.children())


async def create_child(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    return _json(await admin.create_child(_child_fields(body, create=True)), 201)


async def get_child(request: Request) -> Response:
    admin = await _admin(request, may_edit_child)
    return _json(await admin.child(path_id(request, "cid")))


async def patch_child(request: Request) -> Response:
    principal, admin = await _caller(request, may_edit_child)
    fields = _child_fields(await json_body(request), create=False)
    # Staff correct a record; its group and enrolment dates are the admins' (may_edit_child).
    if not (decision := may_edit_child(principal, admin.structure_id, fields)).allowed:
        raise refusal(decision)
    return _json(await admin.update_child(path_id(request, "cid"), fields))


# -- households ---------------------------------------------------------------------------


async def list_families(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    return _json(await admin.families())


async def create_family(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    only_fields(body, ("name",), ("name",))
    return _json(await admin.create_family(text_field(body, "name", 200)), 201)


async def patch_family(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    only_fields(body, ("name",), ("name",))
    return _json(await admin.rename_family(path_id(request, "fid"), text_field(body, "name", 200)))


async def delete_family(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    await admin.delete_family(path_id(request, "fid"))
    return Response(status_code=NO_CONTENT)


async def add_family_member(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    only_fields(body, ("email", "name"), ("email", "name"))
    member, added = await admin.add_family_member(
        path_id(request, "fid"), normalise_email(body["email"]), text_field(body, "name", 200)
    )
    return _json(member, 201 if added else 200)


async def remove_family_member(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    await admin.remove_family_member(path_id(request, "fid"), path_id(request, "uid"))
    return Response(status_code=NO_CONTENT)


async def put_family_child(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    await admin.add_family_child(path_id(request, "fid"), path_id(request, "cid"))
    return Response(status_code=NO_CONTENT)


async def delete_family_child(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    await admin.remove_family_child(path_id(request, "fid"), path_id(request, "cid"))
    return Response(status_code=NO_CONTENT)


# -- guardianships ------------------------------------------------------------------------


async def put_guardianship(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    only_fields(body, GUARDIANSHIP_FLAGS, GUARDIANSHIP_FLAGS)
    flags = {f: bool_field(body, f) for f in GUARDIANSHIP_FLAGS}
    guardianship, created = await admin.set_guardianship(path_id(request, "cid"), path_id(request, "uid"), flags)
    return _json(guardianship, 201 if created else 200)


async def delete_guardianship(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    await admin.remove_guardianship(path_id(request, "cid"), path_id(request, "uid"))
    return Response(status_code=NO_CONTENT)


# -- consent state and audit log ----------------------------------------------------------


async def child_consent(request: Request) -> Response:
    admin = await _admin(request, may_view_consents)
    return _json(await admin.consent(path_id(request, "cid")))


async def invite_user(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    return _json(await admin.invite(path_id(request, "uid")), 201)


async def structure_consents(request: Request) -> Response:
    admin = await _admin(request, may_view_consents)
    return _json(await admin.consents())


async def audit_log(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    limit = query_int(request, "limit", 1, AUDIT_MAX_LIMIT) or AUDIT_DEFAULT_LIMIT
    before = query_int(request, "before", 1, MAX_ID)
    action = request.query_params.get("action") or None
    if action is not None and (len(action) > 100 or "\x00" in action):
        raise BadRequest("action must be at most 100 characters, without U+0000", code="bad_request")
    return _json(await admin.audit(limit=limit, before=before, action=action))


S = "/api/structures/{sid}"

routes = [
    Route(S, get_structure, methods=["GET"]),
    Route(S, patch_structure, methods=["PATCH"]),
    Route(f"{S}/staff", list_staff, methods=["GET"]),
    Route(f"{S}/staff", add_staff, methods=["POST"]),
    Route(f"{S}/staff/{{uid}}", remove_staff, methods=["DELETE"]),
    Route(f"{S}/groups", list_groups, methods=["GET"]),
    Route(f"{S}/groups", create_group, methods=["POST"]),
    Route(f"{S}/groups/{{gid}}", patch_group, methods=["PATCH"]),
    Route(f"{S}/groups/{{gid}}", delete_group, methods=["DELETE"]),
    Route(f"{S}/groups/{{gid}}/staff", put_group_staff, methods=["PUT"]),
    Route(f"{S}/children", list_children, methods=["GET"]),
    Route(f"{S}/children", create_child, methods=["POST"]),
    Route(f"{S}/children/{{cid}}", get_child, methods=["GET"]),
    Route(f"{S}/children/{{cid}}", patch_child, methods=["PATCH"]),
    Route(f"{S}/children/{{cid}}/consent", child_consent, methods=["GET"]),
    Route(f"{S}/children/{{cid}}/guardians/{{uid}}", put_guardianship, methods=["PUT"]),
    Route(f"{S}/children/{{cid}}/guardians/{{uid}}", delete_guardianship, methods=["DELETE"]),
    Route(f"{S}/families", list_families, methods=["GET"]),
    Route(f"{S}/families", create_family, methods=["POST"]),
    Route(f"{S}/families/{{fid}}", patch_family, methods=["PATCH"]),
    Route(f"{S}/families/{{fid}}", delete_family, methods=["DELETE"]),
    Route(f"{S}/families/{{fid}}/members", add_family_member, methods=["POST"]),
    Route(f"{S}/families/{{fid}}/members/{{uid}}", remove_family_member, methods=["DELETE"]),
    Route(f"{S}/families/{{fid}}/children/{{cid}}", put_family_child, methods=["PUT"]),
    Route(f"{S}/families/{{fid}}/children/{{cid}}", delete_family_child, methods=["DELETE"]),
    Route(f"{S}/users/{{uid}}/invitation", invite_user, methods=["POST"]),
    Route(f"{S}/consents", structure_consents, methods=["GET"]),
    Route(f"{S}/audit", audit_log, methods=["GET"]),
]
