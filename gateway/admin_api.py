"""The administration HTTP API of a structure (settings, staff, groups, children, households,
guardianships, audit log) and the consent state staff read.

Each handler authenticates, loads the principal, asks the policy (realtime/permissions.py)
before reading the body, so that a caller without rights learns nothing from validation
errors, then calls realtime/admin.py and answers JSON. Ids in paths that are not positive
64-bit integers are treated as the id 0, which never exists: they get the same answer as any
other unknown id (403 for a structure, 404 below it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.http_api import current_principal, json_body, services
from realtime.accounts import normalise_email
from realtime.admin import GUARDIANSHIP_FLAGS, StructureAdmin
from realtime.errors import BadRequest, Forbidden
from realtime.permissions import Decision, Principal, may_administer, may_view_consents

Policy = Callable[[Principal, int], Decision]

MAX_ID = 2**63 - 1
MAX_LIST = 1000
AUDIT_DEFAULT_LIMIT = 50
AUDIT_MAX_LIMIT = 500
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

# -- parsing ------------------------------------------------------------------------------


def _path_id(request: Request, name: str) -> int:
    raw = request.path_params[name]
    if not (isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 19):
        return 0
    value = int(raw)
    return value if value <= MAX_ID else 0


def _only(body: Mapping[str, Any], allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> None:
    # Unknown fields are refused rather than ignored: a typo must not look like a success.
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}", code="bad_request")
    missing = [f for f in required if f not in body]
    if missing:
        raise BadRequest(f"missing field(s): {', '.join(missing)}", code="bad_request")


def _text(body: Mapping[str, Any], field: str, max_length: int) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= max_length:
        raise BadRequest(f"{field} must be a non-empty string of at most {max_length} characters", code="bad_request")
    return value.strip()


def _bool(body: Mapping[str, Any], field: str) -> bool:
    value = body.get(field)
    if not isinstance(value, bool):
        raise BadRequest(f"{field} must be true or false", code="bad_request")
    return value


def _int(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{field} must be an integer from {low} to {high}", code="bad_request")
    return value


def _optional_id(body: Mapping[str, Any], field: str) -> int | None:
    value = body.get(field)
    return None if value is None else _int(value, field, 1, MAX_ID)


def _optional_date(body: Mapping[str, Any], field: str) -> date | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not ISO_DATE.fullmatch(value):
        raise BadRequest(f"{field} must be a date as YYYY-MM-DD or null", code="bad_request")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{field} is not a valid date", code="bad_request") from None


def _query_int(request: Request, name: str, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19):
        raise BadRequest(f"{name} must be an integer from {low} to {high}", code="bad_request")
    return _int(int(raw), name, low, high)


STAFF_FIELDS = ("email", "name", "role")
CHILD_PARSERS: dict[str, Callable[[Mapping[str, Any], str], Any]] = {
    "first_name": lambda body, f: _text(body, f, 100),
    "last_name": lambda body, f: _text(body, f, 100),
    "group_id": _optional_id,
    "birth_date": _optional_date,
    "enrolled_on": _optional_date,
    "left_on": _optional_date,
}


def _child_fields(body: Mapping[str, Any], *, create: bool) -> dict[str, Any]:
    required = ("first_name", "last_name", "enrolled_on") if create else ()
    _only(body, tuple(CHILD_PARSERS), required)
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
    principal = await current_principal(request)
    s = services(request)
    structure_id = _path_id(request, "sid")
    # An unknown structure is refused exactly like someone else's: no probing of ids.
    decision = policy(principal, structure_id)
    if not decision.allowed:
        raise Forbidden(decision.reason or "you may not administer this structure", code=decision.code or "forbidden")
    return StructureAdmin(s.pool, s.redis, s.keys, s.directory, actor_id=principal.user_id, structure_id=structure_id)


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
    _only(body, ("name", "guardians_may_post", "retention_months"))
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = _text(body, "name", 200)
    if "guardians_may_post" in body:
        changes["guardians_may_post"] = _bool(body, "guardians_may_post")
    if "retention_months" in body:
        changes["retention_months"] = _int(body["retention_months"], "retention_months", 1, 120)
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
    _only(body, STAFF_FIELDS, STAFF_FIELDS)
    member, added = await admin.add_staff(normalise_email(body["email"]), _text(body, "name", 200), _role(body["role"]))
    return _json(member, 201 if added else 200)


async def remove_staff(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    await admin.remove_staff(_path_id(request, "uid"), _role(request.query_params.get("role")))
    return Response(status_code=NO_CONTENT)


# -- groups -------------------------------------------------------------------------------


async def list_groups(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    return _json(await admin.groups())


async def create_group(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    _only(body, ("name",), ("name",))
    return _json(await admin.create_group(_text(body, "name", 200)), 201)


async def patch_group(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    _only(body, ("name",), ("name",))
    return _json(await admin.rename_group(_path_id(request, "gid"), _text(body, "name", 200)))


async def delete_group(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    await admin.delete_group(_path_id(request, "gid"))
    return Response(status_code=NO_CONTENT)


async def put_group_staff(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    _only(body, ("user_ids",), ("user_ids",))
    user_ids = body["user_ids"]
    if not isinstance(user_ids, list) or len(user_ids) > MAX_LIST:
        raise BadRequest(f"user_ids must be a list of at most {MAX_LIST} ids", code="bad_request")
    ids = [_int(u, "user_ids[]", 1, MAX_ID) for u in user_ids]
    return _json(await admin.set_group_staff(_path_id(request, "gid"), ids))


# -- children -----------------------------------------------------------------------------


async def list_children(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    return _json(await admin.children())


async def create_child(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    return _json(await admin.create_child(_child_fields(body, create=True)), 201)


async def get_child(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    return _json(await admin.child(_path_id(request, "cid")))


async def patch_child(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    return _json(await admin.update_child(_path_id(request, "cid"), _child_fields(body, create=False)))


# -- households ---------------------------------------------------------------------------


async def list_families(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    return _json(await admin.families())


async def create_family(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    _only(body, ("name",), ("name",))
    return _json(await admin.create_family(_text(body, "name", 200)), 201)


async def patch_family(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    _only(body, ("name",), ("name",))
    return _json(await admin.rename_family(_path_id(request, "fid"), _text(body, "name", 200)))


async def delete_family(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    await admin.delete_family(_path_id(request, "fid"))
    return Response(status_code=NO_CONTENT)


async def add_family_member(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    _only(body, ("email", "name"), ("email", "name"))
    member, added = await admin.add_family_member(
        _path_id(request, "fid"), normalise_email(body["email"]), _text(body, "name", 200)
    )
    return _json(member, 201 if added else 200)


async def remove_family_member(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    await admin.remove_family_member(_path_id(request, "fid"), _path_id(request, "uid"))
    return Response(status_code=NO_CONTENT)


async def put_family_child(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    await admin.add_family_child(_path_id(request, "fid"), _path_id(request, "cid"))
    return Response(status_code=NO_CONTENT)


async def delete_family_child(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    await admin.remove_family_child(_path_id(request, "fid"), _path_id(request, "cid"))
    return Response(status_code=NO_CONTENT)


# -- guardianships ------------------------------------------------------------------------


async def put_guardianship(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    body = await json_body(request)
    _only(body, GUARDIANSHIP_FLAGS, GUARDIANSHIP_FLAGS)
    flags = {f: _bool(body, f) for f in GUARDIANSHIP_FLAGS}
    guardianship, created = await admin.set_guardianship(_path_id(request, "cid"), _path_id(request, "uid"), flags)
    return _json(guardianship, 201 if created else 200)


async def delete_guardianship(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    await admin.remove_guardianship(_path_id(request, "cid"), _path_id(request, "uid"))
    return Response(status_code=NO_CONTENT)


# -- consent state and audit log ----------------------------------------------------------


async def child_consent(request: Request) -> Response:
    admin = await _admin(request, may_view_consents)
    return _json(await admin.consent(_path_id(request, "cid")))


async def invite_user(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    return _json(await admin.invite(_path_id(request, "uid")), 201)


async def structure_consents(request: Request) -> Response:
    admin = await _admin(request, may_view_consents)
    return _json(await admin.consents())


async def audit_log(request: Request) -> Response:
    admin = await _admin(request, may_administer)
    limit = _query_int(request, "limit", 1, AUDIT_MAX_LIMIT) or AUDIT_DEFAULT_LIMIT
    before = _query_int(request, "before", 1, MAX_ID)
    action = request.query_params.get("action") or None
    if action is not None and len(action) > 100:
        raise BadRequest("action must be at most 100 characters", code="bad_request")
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
