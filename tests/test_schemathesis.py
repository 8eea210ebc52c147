"""Schemathesis on the OpenAPI document (gateway/openapi.py), against a live gateway on
127.0.0.1 seeded with the demo data: every operation gets a fixed number of generated
requests, schema-conforming (positive) and schema-violating (negative), checked for
no server error (a 503 only as `unavailable` or `maintenance`), a status code the document
lists, a response that conforms to it, and negative data refused with a 4xx.

Two runs:

- with a session: a parent's (martin@, a guardian) then an admin's (admin@demo.test), so
  that both the refusals and the admin's successes are exercised;
- without one: every operation that needs a token, with no `Authorization`, a forged
  token and a revoked one, must answer 401 (no authentication bypass); the public ones are
  fuzzed there.

Operations with side effects are ordered so that the run stays meaningful: reads first,
then creations and changes, then deletions, then erasures (an admin erasing a subject
removes what later requests would have found), and `POST /api/logout` last of each
session, since it revokes the token the run uses. `POST /api/password` and `PATCH /api/me`
stay in: a generated old password is wrong (403, then 429 once the attempts are spent), so
the session survives them.

The generation is derandomized (same cases at each run) and bounded (MAX_EXAMPLES per
operation and mode: ~6,000 requests, about a minute here, most of it schemathesis's own
generation). Requests are sent from a thread: the gateway serves in this test's
event loop, which must stay free while the synchronous client waits.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import CheckFunction
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.openapi import DOCUMENT
from tests import figures
from tests.conftest import Gateway, bearer

pytestmark = pytest.mark.usefixtures("demo_families")

Operation = schemathesis.APIOperation[Any, Any, Any, Any]
Case = schemathesis.Case[Operation]

MAX_EXAMPLES = 25
AUTH_EXAMPLES = 4
ACCEPTABLE_503 = ("unavailable", "maintenance")
UNAUTHENTICATED = ("unauthenticated", "invalid_token")
CHECKS: dict[GenerationMode, list[CheckFunction]] = {
    GenerationMode.POSITIVE: [status_code_conformance, content_type_conformance, response_schema_conformance],
    GenerationMode.NEGATIVE: [
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        negative_data_rejection,
    ],
}
ORDER = {"get": 0, "post": 1, "put": 1, "patch": 1, "delete": 2}
LAST = ("POST /api/structures/{sid}/erasures", "POST /api/logout")


def hypothesis_settings(examples: int) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


def rank(operation: Operation) -> tuple[int, int, str]:
    label = f"{operation.method.upper()} {operation.path}"
    last = LAST.index(label) + 1 if label in LAST else 0
    return last, ORDER[operation.method.lower()], label


def operations(schema: schemathesis.BaseSchema) -> list[Operation]:
    found = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        found.append(result.ok())
    return sorted(found, key=rank)


def needs_token(operation: Operation) -> bool:
    return bool(DOCUMENT["paths"][operation.path][operation.method.lower()]["security"])


@dataclass
class Run:
    base: str
    session: requests.Session = field(default_factory=requests.Session)
    requests: int = 0
    operations: set[str] = field(default_factory=set)
    server_errors: list[str] = field(default_factory=list)
    unavailable: int = 0
    mismatches: list[str] = field(default_factory=list)
    bypasses: list[str] = field(default_factory=list)
    # (Authorization, Idempotency-Key) of each upload stored: protocol.md §1.3a.
    upload_keys: set[tuple[str, str]] = field(default_factory=set)

    def send(
        self,
        case: Case,
        headers: dict[str, str],
        mode: GenerationMode,
        *,
        expect_401: bool = False,
    ) -> None:
        label = f"{case.operation.method.upper()} {case.operation.path}"
        self.operations.add(label)
        upload_key = None
        key = case.headers.get("Idempotency-Key") if case.headers else None
        if label == "POST /api/media" and key is not None:
            upload_key = (headers.get("Authorization", ""), key)
        # A retry of a stored upload is answered with it before the body is read (documented):
        # whatever the body, that answer is the valid one.
        replayed = upload_key in self.upload_keys
        response = case.call(base_url=self.base, session=self.session, headers=headers, timeout=60)
        self.requests += 1
        if upload_key is not None and response.status_code == 202:
            self.upload_keys.add(upload_key)
        curl = case.as_curl_command(headers=headers)
        if response.status_code >= 500:
            if response.status_code == 503 and problem_code(response.content) in ACCEPTABLE_503:
                self.unavailable += 1
            else:
                self.server_errors.append(f"{response.status_code} {response.content[:300]!r}\n  {curl}")
        if expect_401 and (response.status_code != 401 or problem_code(response.content) not in UNAUTHENTICATED):
            self.bypasses.append(f"{response.status_code} {response.content[:200]!r}\n  {curl}")
        if mode is GenerationMode.NEGATIVE and (replayed or only_unknown_query_parameters(case)):
            mode = GenerationMode.POSITIVE
        try:
            case.validate_response(response, checks=CHECKS[mode], headers=headers)
        except FailureGroup as failures:
            titles = "; ".join(sorted({f.title for f in failures.exceptions}))
            self.mismatches.append(f"{label} [{mode.value}] {titles}: {response.status_code}\n  {curl}")

    def fuzz(
        self,
        operation: Operation,
        headers: dict[str, str],
        modes: Iterable[GenerationMode],
        examples: int,
        *,
        expect_401: bool = False,
    ) -> None:
        for mode in modes:
            try:
                self.fuzz_mode(operation, headers, mode, examples, expect_401=expect_401)
            except hypothesis.errors.Unsatisfiable:
                # Nothing to make invalid: no parameter, no body (GET /api/maintenance).
                if mode is not GenerationMode.NEGATIVE:
                    raise

    def fuzz_mode(
        self,
        operation: Operation,
        headers: dict[str, str],
        mode: GenerationMode,
        examples: int,
        *,
        expect_401: bool,
    ) -> None:
        @hypothesis_settings(examples)
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def each(case: Case) -> None:
            self.send(case, headers, mode, expect_401=expect_401)

        each()


def only_unknown_query_parameters(case: Case) -> bool:
    """Whether all that makes a negative case invalid is a query parameter the operation does
    not list (schemathesis negates `additionalProperties` of the query). The API ignores
    those (protocol.md §1), so the request is a valid one. Its header negations don't count:
    `send` sets the headers itself."""
    mutations = getattr(case.meta.phase.data, "mutations", ()) if case.meta else ()
    query = [m for m in mutations if m.parameter_location is ParameterLocation.QUERY]
    others = [m for m in mutations if m.parameter_location not in (ParameterLocation.QUERY, ParameterLocation.HEADER)]
    return bool(query) and not others and all(m.keywords == ("additionalProperties",) for m in query)


def problem_code(content: bytes) -> str | None:
    try:
        body = json.loads(content)
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def run_with_sessions(run: Run, schema: schemathesis.BaseSchema, tokens: list[str]) -> None:
    both = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    for token in tokens:
        for operation in operations(schema):
            if needs_token(operation):
                run.fuzz(operation, bearer(token), both, MAX_EXAMPLES)


def run_without_session(run: Run, schema: schemathesis.BaseSchema, revoked: str) -> None:
    both = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    forged = secrets.token_urlsafe(32)
    variants: list[dict[str, str]] = [{}, bearer(forged), bearer(revoked), {"Authorization": f"Basic {forged}"}]
    for operation in operations(schema):
        if not needs_token(operation):
            run.fuzz(operation, {}, both, MAX_EXAMPLES)
            continue
        for headers in variants:
            run.fuzz(operation, headers, (GenerationMode.POSITIVE,), AUTH_EXAMPLES, expect_401=True)


def fuzz_all(base: str, tokens: list[str], revoked: str) -> tuple[Run, Run]:
    schema = schemathesis.openapi.from_dict(DOCUMENT)
    with_sessions, without = Run(base), Run(base)
    run_with_sessions(with_sessions, schema, tokens)
    run_without_session(without, schema, revoked)
    return with_sessions, without


def report(runs: tuple[Run, Run]) -> str:
    lines = []
    for name, run in zip(("with a session", "without a session"), runs, strict=True):
        lines += [f"-- {name}: {run.requests} requests, {len(run.operations)} operations"]
        lines += [f"server error: {e}" for e in run.server_errors[:20]]
        lines += [f"mismatch: {e}" for e in run.mismatches[:40]]
        lines += [f"auth bypass: {e}" for e in run.bypasses[:20]]
    return "\n".join(lines)


@pytest.mark.timeout(600)
async def test_schemathesis_finds_no_server_error_no_mismatch_and_no_auth_bypass(gateway: Gateway) -> None:
    martin = await gateway.login("martin@demo.test")
    admin = await gateway.login("admin@demo.test")
    revoked = await gateway.login("staff@demo.test")
    assert (await gateway.http.post("/api/logout", headers=bearer(revoked))).status_code == 204

    started = time.monotonic()
    runs = await asyncio.to_thread(fuzz_all, gateway.base, [martin, admin], revoked)
    elapsed = time.monotonic() - started
    with_sessions, without = runs
    figures.report(
        "Schemathesis on the OpenAPI schema",
        operations=len(with_sessions.operations | without.operations),
        requests=with_sessions.requests + without.requests,
        server_errors=len(with_sessions.server_errors) + len(without.server_errors),
        schema_mismatches=len(with_sessions.mismatches) + len(without.mismatches),
        auth_bypass=len(without.bypasses),
        unavailable_503=with_sessions.unavailable + without.unavailable,
        seconds=round(elapsed, 1),
    )
    assert len(with_sessions.operations | without.operations) == sum(
        1 for item in DOCUMENT["paths"].values() for _ in item
    )
    summary = report(runs)
    assert not with_sessions.server_errors, summary
    assert not without.server_errors, summary
    assert not without.bypasses, summary
    assert not with_sessions.mismatches, summary
    assert not without.mismatches, summary
