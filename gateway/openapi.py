"""The OpenAPI 3.1 description of the HTTP API, served at `GET /api/openapi.json` (no token).

Every /api route is described here: its path and query parameters, the JSON body its handler
accepts (required fields, types, lengths; `additionalProperties: false` where the handler
refuses unknown fields with `400 bad_request`), and each answer it may give, errors being
RFC 9457 problem documents (docs/protocol.md §1). tests/test_openapi.py checks that it lists
exactly the app's /api routes; tests/test_schemathesis.py fuzzes a live gateway with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.params import MAX_ID
from realtime.exports import SCOPES
from realtime.media import RENDITIONS
from realtime.passwords import MAX_LENGTH as PASSWORD_MAX
from realtime.passwords import MIN_LENGTH as PASSWORD_MIN
from realtime.reports import MAX_REASON

PATH = "/api/openapi.json"
Json = dict[str, Any]

# -- schema building blocks ---------------------------------------------------------------

ID: Json = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
INT: Json = {"type": "integer"}
BOOL: Json = {"type": "boolean"}
STR: Json = {"type": "string"}
UUID: Json = {"type": "string", "format": "uuid"}
DATE: Json = {"type": ["string", "null"], "format": "date"}
TIME: Json = {"type": "string", "format": "date-time"}
NULL_TIME: Json = {"type": ["string", "null"], "format": "date-time"}
EMAIL: Json = {"type": "string", "minLength": 3, "maxLength": 254, "pattern": "@"}
PASSWORD: Json = {"type": "string", "minLength": 1, "maxLength": 1024}
NEW_PASSWORD: Json = {"type": "string", "minLength": PASSWORD_MIN, "maxLength": PASSWORD_MAX}
CHANNEL: Json = {"type": "string", "pattern": "^(user|structure|group|family|child):[1-9][0-9]{0,18}$"}
ROLE: Json = {"type": "string", "enum": ["staff", "admin"]}


def name(max_length: int = 200) -> Json:
    # Trimmed by the server: a name of blanks only is refused (400), though it has a length.
    return {"type": "string", "minLength": 1, "maxLength": max_length}


def ref(component: str) -> Json:
    return {"$ref": f"#/components/schemas/{component}"}


def array(items: Json, **extra: Any) -> Json:
    return {"type": "array", "items": items, **extra}


def obj(properties: Json, required: tuple[str, ...] | None = None, *, closed: bool = False, **extra: Any) -> Json:
    """An object; every property required unless `required` says which. `closed`: the
    server refuses unknown fields."""
    schema: Json = {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
    }
    if closed:
        schema["additionalProperties"] = False
    return schema | extra


def items(component: str) -> Json:
    return obj({"items": array(ref(component))})


# -- the objects of the API (docs/protocol.md §1) -----------------------------------------

USER = obj({"id": INT, "email": STR, "name": STR})
CHILD = obj(
    {
        "id": INT,
        "first_name": STR,
        "last_name": STR,
        "group_id": {"type": ["integer", "null"]},
        "birth_date": DATE,
        "enrolled_on": DATE,
        "left_on": DATE,
    }
)
HOLDER = obj({"id": INT, "name": STR, "consented": BOOL, "granted_at": NULL_TIME})
CONSENT_SUMMARY = obj({"child": obj({"id": INT, "name": STR}), "complete": BOOL, "holders": array(HOLDER)})
MESSAGE = obj(
    {
        "op": {"const": "message"},
        "channel": STR,
        "seq": INT,
        "id": STR,
        "author": obj({"id": {"type": ["integer", "null"]}, "name": STR}),
        "body": {"type": "object"},
        "at": STR,
        "children": array(INT),
        "withdrawn": BOOL,
    },
    ("op", "channel", "seq", "id", "author", "body", "at"),
)

SCHEMAS: Json = {
    "Problem": obj(
        {
            "type": {"const": "about:blank"},
            "title": STR,
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "code": {"type": "string", "pattern": "^[a-z_]+$"},
            "detail": STR,
            "details": array({"type": "object"}),
        },
        ("type", "title", "status", "code", "detail"),
    ),
    "User": USER,
    "Session": obj({"token": STR, "user": ref("User"), "terms_accepted": BOOL}),
    "Me": obj(
        {
            "user": ref("User"),
            "roles": array(
                obj({"structure_id": INT, "structure": STR, "role": {"enum": ["admin", "staff", "guardian"]}})
            ),
            "children": array(
                obj(
                    {
                        "id": INT,
                        "first_name": STR,
                        "last_name": STR,
                        "structure_id": INT,
                        "group": {"type": ["string", "null"]},
                        "parental_authority": BOOL,
                        "consultation": BOOL,
                        "may_post": BOOL,
                    }
                )
            ),
            "families": array(obj({"id": INT, "name": STR, "structure_id": INT, "children": array(INT)})),
            "channels": array(obj({"channel": STR, "title": STR})),
        }
    ),
    "ErasureRequest": obj({"requested_at": NULL_TIME}),
    "Consent": obj(
        {
            "child": obj({"id": INT, "name": STR}),
            "structure": obj({"id": INT, "name": STR}),
            "complete": BOOL,
            "holders": array(obj({"id": INT, "name": STR, "consented": BOOL})),
            "mine": {
                "anyOf": [
                    obj({"granted_at": TIME, "declaration": STR, "terms_version": INT}),
                    {"type": "null"},
                ]
            },
            "declaration": STR,
            "withdrawn": {"type": "integer", "minimum": 0},
        },
        ("child", "structure", "complete", "holders", "mine", "declaration"),
    ),
    "MediaStatus": obj(
        {
            "id": UUID,
            "state": {"enum": ["processing", "ready", "rejected"]},
            "code": STR,
            "type": {"enum": ["image", "video"]},
            "width": INT,
            "height": INT,
            "duration_ms": INT,
        },
        ("id", "state"),
    ),
    "MediaLink": obj({"url": STR, "type": STR, "expires_in": INT}),
    "Export": obj(
        {
            "id": UUID,
            "scope": {"enum": list(SCOPES)},
            "subject": {"type": ["integer", "null"]},
            "state": {"enum": ["queued", "running", "ready", "failed", "expired"]},
            "progress": {"type": "integer", "minimum": 0, "maximum": 100},
            "bytes": INT,
            "created_at": TIME,
            "ready_at": TIME,
            "expires_at": TIME,
            "url": STR,
        },
        ("id", "scope", "subject", "state", "progress", "created_at"),
    ),
    "Report": obj(
        {
            "id": INT,
            "channel": STR,
            "message": STR,
            "reason": STR,
            "state": {"enum": ["open", "withdrawn", "dismissed"]},
            "created_at": TIME,
            "resolved_at": NULL_TIME,
        }
    ),
    "Case": obj(
        {
            "message_id": STR,
            "channel": STR,
            "message": {"anyOf": [MESSAGE, {"type": "null"}]},
            "reports": array(
                obj({"id": INT, "reason": STR, "reporter": {"type": ["object", "null"]}, "created_at": TIME}),
            ),
        }
    ),
    "Structure": obj({"id": INT, "name": STR, "guardians_may_post": BOOL, "retention_months": INT}),
    "StaffMember": obj(
        {
            "id": INT,
            "email": STR,
            "name": STR,
            "active": BOOL,
            "roles": array({"enum": ["admin", "staff"]}),
            "groups": array(INT),
        }
    ),
    "Group": obj({"id": INT, "name": STR, "staff": array(INT), "children": array(INT)}),
    "Child": CHILD,
    "ChildRecord": CHILD
    | {
        "properties": CHILD["properties"]
        | {
            "families": array(obj({"id": INT, "name": STR})),
            "guardians": array(
                obj({"id": INT, "name": STR, "parental_authority": BOOL, "consultation": BOOL, "may_post": BOOL})
            ),
        },
        "required": [*CHILD["required"], "families", "guardians"],
    },
    "Member": obj({"id": INT, "name": STR, "email": STR}, ("id", "name", "email")),
    "Household": obj(
        {
            "id": INT,
            "name": STR,
            "children": array(INT),
            "members": array(obj({"id": INT, "name": STR, "email": STR, "active": BOOL})),
        }
    ),
    "Guardianship": obj(
        {"child_id": INT, "user_id": INT, "parental_authority": BOOL, "consultation": BOOL, "may_post": BOOL}
    ),
    "ConsentHistory": CONSENT_SUMMARY
    | {
        "properties": CONSENT_SUMMARY["properties"]
        | {
            "history": array(
                obj(
                    {
                        "guardian": obj({"id": INT, "name": STR}),
                        "granted_at": TIME,
                        "revoked_at": NULL_TIME,
                        "terms_version": INT,
                        "declaration": STR,
                    }
                )
            )
        },
        "required": [*CONSENT_SUMMARY["required"], "history"],
    },
    "ChildConsent": CONSENT_SUMMARY
    | {
        "properties": CONSENT_SUMMARY["properties"]
        | {"group_id": {"type": ["integer", "null"]}, "families": array(INT)},
        "required": [*CONSENT_SUMMARY["required"], "group_id", "families"],
    },
    "Invitation": obj({"user_id": INT, "link": STR, "expires_at": TIME}),
    "AuditEntry": obj(
        {
            "id": INT,
            "at": TIME,
            "actor": {"anyOf": [obj({"id": INT, "name": STR}), {"type": "null"}]},
            "action": STR,
            "subject_type": {"type": ["string", "null"]},
            "subject_id": {"type": ["string", "null"]},
            "details": {},
        }
    ),
    "Erased": obj(
        {
            "subject": {"enum": ["user", "child", "household"]},
            "id": INT,
            "messages": {"type": "integer", "minimum": 0},
            "media": {"type": "integer", "minimum": 0},
        }
    ),
}

# -- operations ---------------------------------------------------------------------------

PUBLIC, SESSION, TERMS = "public", "session", "terms"

ERRORS = {
    400: "The request is wrong (`bad_request`, `too_large`, or a more specific code)",
    401: "No valid session (`unauthenticated`, `invalid_token`; `invalid_credentials` at login)",
    403: "Refused by policy (`forbidden`, `terms_not_accepted`, …)",
    404: "Unknown or hidden resource (`not_found`, all the same)",
    409: "Clashes with the current state",
    410: "Gone (withdrawn or rejected media)",
    413: "Over a size limit or quota",
    415: "Content of a type not accepted",
    405: "A path parameter holding '/' matches no route: the framework's plain-text answer",
    429: "Too many attempts (`too_many_attempts`)",
    503: "Maintenance (`maintenance`, with Retry-After) or a backing server down (`unavailable`)",
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    access: str = TERMS
    ok: dict[int, Json | None] = field(default_factory=lambda: {200: None})
    errors: tuple[int, ...] = ()
    body: Json | None = None
    query: tuple[Json, ...] = ()
    headers: tuple[Json, ...] = ()
    multipart: Json | None = None

    def path_parameters(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]

    def all_errors(self) -> list[int]:
        found = set(self.errors)
        if self.access != PUBLIC:
            found.add(401)
        if self.access == TERMS:
            found.add(403)
        if self.body is not None or self.multipart is not None:
            found.add(400)
        if self.path_parameters():
            found.add(404)
            if self.method != "get":
                found.add(405)
        if self.path != "/api/maintenance":
            found.add(503)
        return sorted(found)


def q(param: str, schema: Json, *, required: bool = False, description: str = "") -> Json:
    return {"name": param, "in": "query", "required": required, "schema": schema, "description": description}


S = "/api/structures/{sid}"
NO_CONTENT: dict[int, Json | None] = {204: None}

OPERATIONS: tuple[Operation, ...] = (
    # -- sessions and account (§1.2)
    Operation(
        "post",
        "/api/login",
        "Log in: a session token",
        "session",
        PUBLIC,
        {200: ref("Session")},
        (401, 429),
        body=obj({"email": EMAIL, "password": PASSWORD}),
    ),
    Operation("post", "/api/logout", "Revoke the token used", "session", SESSION, NO_CONTENT),
    Operation(
        "get",
        "/api/invitations/{token}",
        "Whom a valid invitation is for",
        "session",
        PUBLIC,
        {200: obj({"email": STR, "name": STR, "structure": STR})},
    ),
    Operation(
        "post",
        "/api/invitations/{token}",
        "Set the first password through an invitation, and log in",
        "session",
        PUBLIC,
        {200: ref("Session")},
        body=obj({"password": NEW_PASSWORD}),
    ),
    Operation(
        "get",
        "/api/terms",
        "The current terms of use",
        "session",
        PUBLIC,
        {200: obj({"version": INT, "text": STR})},
        (404,),
    ),
    Operation(
        "post",
        "/api/terms/accept",
        "Accept the current terms",
        "session",
        SESSION,
        {200: obj({"accepted": INT})},
        (404,),
        body=obj({"version": INT}),
    ),
    Operation(
        "post",
        "/api/password",
        "Change one's password, proving the old one",
        "account",
        TERMS,
        NO_CONTENT,
        (429,),
        body=obj({"old_password": PASSWORD, "new_password": NEW_PASSWORD}),
    ),
    Operation("get", "/api/me", "Who the user is and what they may subscribe to", "account", ok={200: ref("Me")}),
    Operation(
        "patch",
        "/api/me",
        "Rectify one's name or email",
        "account",
        ok={200: obj({"user": ref("User")})},
        errors=(409, 429),
        body=obj({"name": name(), "email": EMAIL, "password": PASSWORD}, (), closed=True, minProperties=1),
    ),
    Operation("get", "/api/me/erasure", "One's erasure request", "erasure", ok={200: ref("ErasureRequest")}),
    Operation(
        "post",
        "/api/me/erasure",
        "Ask for the erasure of one's account",
        "erasure",
        ok={201: ref("ErasureRequest"), 200: ref("ErasureRequest")},
    ),
    # -- publication consent (§1.3)
    Operation(
        "get", "/api/children/{child_id}/consent", "A child's consent state", "consent", ok={200: ref("Consent")}
    ),
    Operation(
        "post",
        "/api/children/{child_id}/consent",
        "Sign the publication consent",
        "consent",
        ok={201: ref("Consent")},
        errors=(403,),
        body=obj({"declare": {"const": True}}),
    ),
    Operation(
        "delete",
        "/api/children/{child_id}/consent",
        "Revoke one's publication consent",
        "consent",
        ok={200: ref("Consent")},
    ),
    # -- media (§1.3a)
    Operation(
        "post",
        "/api/media",
        "Upload a photo or a video",
        "media",
        ok={202: ref("MediaStatus"), 200: ref("MediaStatus")},
        errors=(413, 415),
        query=(q("channel", CHANNEL, description="The channel the media is meant for"),),
        headers=(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,200}$"},
            },
        ),
        multipart=obj({"file": {"type": "string", "format": "binary"}}),
    ),
    Operation(
        "get",
        "/api/media/{media_id}/status",
        "A media's processing state",
        "media",
        ok={200: ref("MediaStatus")},
        errors=(410,),
    ),
    Operation(
        "get",
        "/api/media/{media_id}",
        "A link to a rendition of a media",
        "media",
        ok={200: ref("MediaLink"), 302: None},
        errors=(400, 409, 410),
        query=(q("size", {"enum": list(RENDITIONS)}),),
    ),
    # -- data export (§1.6)
    Operation(
        "post",
        "/api/exports",
        "Ask for an export",
        "export",
        ok={202: ref("Export"), 200: ref("Export")},
        body={
            "oneOf": [
                obj({"scope": {"const": "me"}}, closed=True),
                obj({"scope": {"enum": [s for s in SCOPES if s != "me"]}, "id": ID}, closed=True),
            ]
        },
    ),
    Operation("get", "/api/exports", "One's latest exports", "export", ok={200: items("Export")}),
    Operation(
        "get", "/api/exports/{export_id}", "An export, with a link once ready", "export", ok={200: ref("Export")}
    ),
    # -- reports and moderation (§1.5)
    Operation(
        "post",
        "/api/reports",
        "Report a message",
        "moderation",
        ok={201: ref("Report"), 200: ref("Report")},
        errors=(404,),
        body=obj({"channel": CHANNEL, "id": STR, "reason": name(MAX_REASON)}, closed=True),
    ),
    Operation("get", "/api/reports", "One's latest reports", "moderation", ok={200: items("Report")}),
    Operation("get", f"{S}/moderation", "The moderation queue", "moderation", ok={200: items("Case")}),
    Operation(
        "post",
        f"{S}/moderation/{{message_id}}",
        "Withdraw a reported message or dismiss its case",
        "moderation",
        ok={
            200: obj(
                {"message_id": STR, "state": {"enum": ["withdrawn", "dismissed"]}, "reports": array(INT)},
            )
        },
        body=obj({"decision": {"enum": ["withdraw", "dismiss"]}}, closed=True),
    ),
    # -- erasure (§1.7)
    Operation(
        "post",
        f"{S}/erasures",
        "Erase a user, a child or a household",
        "erasure",
        ok={200: ref("Erased")},
        errors=(409,),
        body=obj({"subject": {"enum": ["user", "child", "household"]}, "id": ID}, closed=True),
    ),
    Operation(
        "get",
        f"{S}/erasure-requests",
        "The erasure requests of the structure's members",
        "erasure",
        ok={
            200: obj({"items": array(obj({"user": obj({"id": INT, "name": STR, "email": STR}), "requested_at": TIME}))})
        },
    ),
    # -- administration (§1.4)
    Operation("get", S, "The structure", "administration", ok={200: ref("Structure")}),
    Operation(
        "patch",
        S,
        "Change the structure's settings",
        "administration",
        ok={200: ref("Structure")},
        errors=(409,),
        body=obj(
            {
                "name": name(),
                "guardians_may_post": BOOL,
                "retention_months": {"type": "integer", "minimum": 1, "maximum": 120},
            },
            (),
            closed=True,
            minProperties=1,
        ),
    ),
    Operation("get", f"{S}/staff", "The staff", "administration", ok={200: array(ref("StaffMember"))}),
    Operation(
        "post",
        f"{S}/staff",
        "Give a staff or admin role",
        "administration",
        ok={201: ref("StaffMember"), 200: ref("StaffMember")},
        errors=(409,),
        body=obj({"email": EMAIL, "name": name(), "role": ROLE}, closed=True),
    ),
    Operation(
        "delete",
        f"{S}/staff/{{uid}}",
        "Take a staff or admin role away",
        "administration",
        ok=NO_CONTENT,
        errors=(400, 409),
        query=(q("role", ROLE, required=True),),
    ),
    Operation("get", f"{S}/groups", "The groups", "administration", ok={200: array(ref("Group"))}),
    Operation(
        "post",
        f"{S}/groups",
        "Create a group",
        "administration",
        ok={201: ref("Group")},
        errors=(409,),
        body=obj({"name": name()}, closed=True),
    ),
    Operation(
        "patch",
        f"{S}/groups/{{gid}}",
        "Rename a group",
        "administration",
        ok={200: ref("Group")},
        errors=(409,),
        body=obj({"name": name()}, closed=True),
    ),
    Operation("delete", f"{S}/groups/{{gid}}", "Delete a group", "administration", ok=NO_CONTENT),
    Operation(
        "put",
        f"{S}/groups/{{gid}}/staff",
        "Set a group's staff",
        "administration",
        ok={200: ref("Group")},
        body=obj({"user_ids": array(ID, maxItems=1000)}, closed=True),
    ),
    Operation(
        "get", f"{S}/children", "The children, those who left included", "administration", ok={200: array(ref("Child"))}
    ),
    Operation(
        "post",
        f"{S}/children",
        "Enrol a child",
        "administration",
        ok={201: ref("Child")},
        body=obj(
            {
                "first_name": name(100),
                "last_name": name(100),
                "enrolled_on": {"type": "string", "format": "date"},
                "group_id": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_ID},
                "birth_date": DATE,
                "left_on": DATE,
            },
            ("first_name", "last_name", "enrolled_on"),
            closed=True,
        ),
    ),
    Operation("get", f"{S}/children/{{cid}}", "A child's record", "administration", ok={200: ref("ChildRecord")}),
    Operation(
        "patch",
        f"{S}/children/{{cid}}",
        "Correct a child's record",
        "administration",
        ok={200: ref("Child")},
        body=obj(
            {
                "first_name": name(100),
                "last_name": name(100),
                "enrolled_on": {"type": "string", "format": "date"},
                "group_id": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_ID},
                "birth_date": DATE,
                "left_on": DATE,
            },
            (),
            closed=True,
            minProperties=1,
        ),
    ),
    Operation(
        "get",
        f"{S}/children/{{cid}}/consent",
        "A child's consent, with its history",
        "administration",
        ok={200: ref("ConsentHistory")},
    ),
    Operation(
        "put",
        f"{S}/children/{{cid}}/guardians/{{uid}}",
        "Create or replace a guardianship",
        "administration",
        ok={201: ref("Guardianship"), 200: ref("Guardianship")},
        body=obj({"parental_authority": BOOL, "consultation": BOOL, "may_post": BOOL}, closed=True),
    ),
    Operation(
        "delete", f"{S}/children/{{cid}}/guardians/{{uid}}", "End a guardianship", "administration", ok=NO_CONTENT
    ),
    Operation("get", f"{S}/families", "The households", "administration", ok={200: array(ref("Household"))}),
    Operation(
        "post",
        f"{S}/families",
        "Create a household",
        "administration",
        ok={201: ref("Household")},
        errors=(409,),
        body=obj({"name": name()}, closed=True),
    ),
    Operation(
        "patch",
        f"{S}/families/{{fid}}",
        "Rename a household",
        "administration",
        ok={200: ref("Household")},
        errors=(409,),
        body=obj({"name": name()}, closed=True),
    ),
    Operation("delete", f"{S}/families/{{fid}}", "Delete a household", "administration", ok=NO_CONTENT),
    Operation(
        "post",
        f"{S}/families/{{fid}}/members",
        "Add a member to a household",
        "administration",
        ok={201: ref("Member"), 200: ref("Member")},
        body=obj({"email": EMAIL, "name": name()}, closed=True),
    ),
    Operation(
        "delete",
        f"{S}/families/{{fid}}/members/{{uid}}",
        "Remove a member from a household",
        "administration",
        ok=NO_CONTENT,
    ),
    Operation(
        "put", f"{S}/families/{{fid}}/children/{{cid}}", "Add a child to a household", "administration", ok=NO_CONTENT
    ),
    Operation(
        "delete",
        f"{S}/families/{{fid}}/children/{{cid}}",
        "Remove a child from a household",
        "administration",
        ok=NO_CONTENT,
    ),
    Operation(
        "post",
        f"{S}/users/{{uid}}/invitation",
        "An invitation link for a member without a password",
        "administration",
        ok={201: ref("Invitation")},
        errors=(409,),
    ),
    Operation(
        "get",
        f"{S}/consents",
        "The consent state of every current child",
        "administration",
        ok={200: array(ref("ChildConsent"))},
    ),
    Operation(
        "get",
        f"{S}/audit",
        "The audit log, newest first",
        "administration",
        ok={200: array(ref("AuditEntry"))},
        errors=(400,),
        query=(
            q("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
            q("before", ID),
            q("action", {"type": "string", "maxLength": 100}, description="A prefix of the actions shown"),
        ),
    ),
    # -- maintenance and this document
    Operation(
        "get",
        "/api/maintenance",
        "Whether the deployment is in maintenance",
        "service",
        PUBLIC,
        {200: obj({"active": BOOL, "message": STR, "since": TIME}, ("active",))},
    ),
    Operation("get", PATH, "This document", "service", PUBLIC, {200: {"type": "object"}}),
)

PATH_PARAMETERS: dict[str, Json] = {
    "sid": ID,
    "uid": ID,
    "gid": ID,
    "cid": ID,
    "fid": ID,
    "child_id": ID,
    "media_id": UUID,
    "export_id": UUID,
    "message_id": UUID,
    "token": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,256}$"},
}

PROBLEM_CONTENT: Json = {"application/problem+json": {"schema": ref("Problem")}}


def _response(status: int, schema: Json | None, description: str) -> Json:
    response: Json = {"description": description}
    if schema is not None:
        response["content"] = {"application/json": {"schema": schema}}
    return response


def _error(status: int, op: Operation) -> Json:
    response: Json = {"description": ERRORS[status], "content": dict(PROBLEM_CONTENT)}
    if status == 404 and op.path_parameters():
        # A path parameter holding '/' (or empty) matches no route: the framework's own 404,
        # in plain text (protocol.md §1.1); other methods get the static app's 405.
        response["content"]["text/plain"] = {"schema": STR}
    if status == 405:
        response = {"description": ERRORS[405], "content": {"text/plain": {"schema": STR}}}
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"const": "Bearer"}, "required": True}}
    if status == 503 and op.path != "/api/maintenance":
        response["headers"] = {"Retry-After": {"schema": STR, "description": "During maintenance"}}
    return response


def _operation(op: Operation) -> Json:
    described: Json = {
        "operationId": f"{op.method}{op.path}".replace("/api/", " ").replace("/", " ").strip(),
        "summary": op.summary,
        "tags": [op.tag],
        "security": [] if op.access == PUBLIC else [{"bearer": []}],
        "responses": {
            **{str(status): _response(status, schema, op.summary) for status, schema in op.ok.items()},
            **{str(status): _error(status, op) for status in op.all_errors()},
        },
    }
    parameters = [
        {"name": p, "in": "path", "required": True, "schema": PATH_PARAMETERS[p]} for p in op.path_parameters()
    ]
    parameters += [dict(p) for p in (*op.query, *op.headers)]
    if parameters:
        described["parameters"] = parameters
    if op.body is not None:
        described["requestBody"] = {"required": True, "content": {"application/json": {"schema": op.body}}}
    if op.multipart is not None:
        described["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": op.multipart}}}
    if op.access == SESSION:
        described["description"] = "Allowed before the current terms are accepted."
    return described


def document() -> Json:
    paths: Json = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "procreche HTTP API",
            "version": "1",
            "description": "The HTTP side of the procreche client protocol (docs/protocol.md §1). Errors are"
            " RFC 9457 problem documents whose `code` is stable; the WebSocket protocol is not described here.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "The token of POST /api/login"}
            },
        },
    }


DOCUMENT = document()


async def openapi(request: Request) -> Response:
    return JSONResponse(DOCUMENT)


route = Route(PATH, openapi, methods=["GET"])
