"""Parsing of request parameters shared by the HTTP APIs: ids in paths, JSON body fields and
query integers, each refused with `400 bad_request` and a message naming the field.

Ids in paths that are not positive 64-bit integers become the id 0, which never exists: they
get the same answer as any other unknown id."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Any

from starlette.requests import Request

from realtime.errors import BadRequest

MAX_ID = 2**63 - 1
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def path_id(request: Request, name: str) -> int:
    raw = request.path_params[name]
    if not (isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 19):
        return 0
    value = int(raw)
    return value if value <= MAX_ID else 0


def only_fields(body: Mapping[str, Any], allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> None:
    # Unknown fields are refused rather than ignored: a typo must not look like a success.
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}", code="bad_request")
    missing = [f for f in required if f not in body]
    if missing:
        raise BadRequest(f"missing field(s): {', '.join(missing)}", code="bad_request")


def text_field(body: Mapping[str, Any], field: str, max_length: int) -> str:
    value = body.get(field)
    # U+0000: PostgreSQL text cannot hold it (a 500 at the query otherwise).
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= max_length or "\x00" in value:
        raise BadRequest(f"{field} must be a non-empty string of at most {max_length} characters", code="bad_request")
    return value.strip()


def bool_field(body: Mapping[str, Any], field: str) -> bool:
    value = body.get(field)
    if not isinstance(value, bool):
        raise BadRequest(f"{field} must be true or false", code="bad_request")
    return value


def int_value(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{field} must be an integer from {low} to {high}", code="bad_request")
    return value


def optional_id(body: Mapping[str, Any], field: str) -> int | None:
    value = body.get(field)
    return None if value is None else int_value(value, field, 1, MAX_ID)


def optional_date(body: Mapping[str, Any], field: str) -> date | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not ISO_DATE.fullmatch(value):
        raise BadRequest(f"{field} must be a date as YYYY-MM-DD or null", code="bad_request")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{field} is not a valid date", code="bad_request") from None


def query_int(request: Request, name: str, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19):
        raise BadRequest(f"{name} must be an integer from {low} to {high}", code="bad_request")
    return int_value(int(raw), name, low, high)
