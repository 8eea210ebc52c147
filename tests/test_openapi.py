"""The OpenAPI document of the HTTP API (gateway/openapi.py): a valid OpenAPI 3.1 document,
served without a token, that lists exactly the app's /api routes, so that a route added
without its description fails here."""

from __future__ import annotations

import re

from openapi_spec_validator import validate
from starlette.routing import Route

from gateway.app import create_app
from gateway.openapi import DOCUMENT, OPERATIONS, PATH
from realtime.settings import Settings
from tests.conftest import Gateway

CONVERTER = re.compile(r"\{(\w+):\w+\}")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def app_routes() -> set[tuple[str, str]]:
    """(method, path) of every /api route, converters dropped (`{child_id:int}` → `{child_id}`)."""
    found = set()
    for route in create_app(Settings()).routes:
        if isinstance(route, Route) and route.path.startswith("/api/"):
            assert route.methods is not None
            path = CONVERTER.sub(r"{\1}", route.path)
            found |= {(method.lower(), path) for method in route.methods if method != "HEAD"}
    return found


def documented() -> set[tuple[str, str]]:
    return {(method, path) for path, item in DOCUMENT["paths"].items() for method in item if method in METHODS}


def test_the_document_lists_exactly_the_apps_api_routes() -> None:
    routes = app_routes()
    assert routes, "no /api route found"
    assert documented() - routes == set(), "described but not routed"
    assert routes - documented() == set(), "routed but not described in gateway/openapi.py"
    assert len(OPERATIONS) == len(routes)


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.")
    validate(DOCUMENT)


def test_every_path_parameter_is_declared_and_every_error_is_a_problem() -> None:
    problems = []
    for path, item in DOCUMENT["paths"].items():
        in_path = set(re.findall(r"\{(\w+)\}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            if declared != in_path:
                problems.append(f"{method} {path}: path parameters {declared} ≠ {in_path}")
            for status, response in operation["responses"].items():
                problem = "application/problem+json" in response.get("content", {})
                if int(status) >= 400 and int(status) != 405 and not problem:
                    problems.append(f"{method} {path}: {status} is not a problem document")
            if operation["security"] and "401" not in operation["responses"]:
                problems.append(f"{method} {path}: needs a token but documents no 401")
    assert problems == []


async def test_the_document_is_served_without_a_token(gateway: Gateway) -> None:
    response = await gateway.http.get(PATH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == DOCUMENT
