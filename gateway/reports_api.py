"""Reports of messages and the moderation queue over HTTP.

A user reports a message they can see (`POST /api/reports`) and follows their reports
(`GET /api/reports`); staff of the structure read the queue, one case per reported
message (`GET /api/structures/{sid}/moderation`), and withdraw the message or dismiss the
case (`POST …/moderation/{message_id}`). Staff connected to the structure's channel hear
each change of the queue (event `moderation`); each reporter hears the outcome on their
`user:` channel (event `report`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.http_api import current_principal, json_body, services
from gateway.params import only_fields, path_id, text_field
from gateway.services import Services
from realtime.channels import Channel
from realtime.errors import BadRequest, NotFound
from realtime.ids import canonical_uuid
from realtime.permissions import Principal, may_moderate, may_report, refusal, structure_of
from realtime.reports import DECISIONS, MAX_REASON, STATE_OF, Case, Decision


async def tell_staff(s: Services, structure_id: int, message_id: str, open_reports: int) -> None:
    """The queue changed: staff following the structure's channel reload that case."""
    await s.bus.tell_staff(structure_id, "moderation", {"message": message_id, "open": open_reports})


async def file_report(request: Request) -> Response:
    principal = await current_principal(request)
    s = services(request)
    body = await json_body(request)
    only_fields(body, ("channel", "id", "reason"), ("channel", "id", "reason"))
    channel = Channel.parse(body["channel"])
    reason = text_field(body, "reason", MAX_REASON)
    facts = await s.facts.channel_facts(channel)
    message_id = canonical_uuid(body["id"])
    message = None if message_id is None else await s.bus.find(channel, message_id)
    withdrawn = message is not None and (message.withdrawn or await s.bus.is_withdrawn(channel, message.id))
    decision = may_report(principal, channel, facts, message.concerns if message else (), withdrawn)
    if not decision.allowed:
        raise refusal(decision)
    if message is None:
        raise NotFound("no such message in this channel")
    structure_id = structure_of(facts)
    assert structure_id is not None  # a subscribable channel has a structure
    filed = await s.reports.file(
        reporter_id=principal.user_id,
        structure_id=structure_id,
        channel=channel.name,
        message_id=message.id,
        reason=reason,
    )
    if filed.created:
        await tell_staff(s, structure_id, message.id, filed.open_reports)
    return JSONResponse(filed.report, status_code=201 if filed.created else 200)


async def my_reports(request: Request) -> Response:
    principal = await current_principal(request)
    return JSONResponse({"items": await services(request).reports.mine(principal.user_id)})


async def _moderator(request: Request) -> tuple[Principal, int]:
    principal = await current_principal(request)
    structure_id = path_id(request, "sid")
    decision = may_moderate(principal, structure_id)
    if not decision.allowed:
        raise refusal(decision)
    return principal, structure_id


async def _case_json(s: Services, case: Case) -> dict[str, Any]:
    channel = Channel.parse(case.channel)
    message = await s.bus.find(channel, case.message_id)
    frame = None
    if message is not None:
        frame = message.frame()
        if message.withdrawn or await s.bus.is_withdrawn(channel, message.id):
            frame["withdrawn"] = True
    return {"message_id": case.message_id, "channel": case.channel, "message": frame, "reports": case.reports}


async def moderation_queue(request: Request) -> Response:
    _, structure_id = await _moderator(request)
    s = services(request)
    cases = await s.reports.queue(structure_id)
    return JSONResponse({"items": [await _case_json(s, c) for c in cases]})


async def moderate(request: Request) -> Response:
    principal, structure_id = await _moderator(request)
    s = services(request)
    body = await json_body(request)
    only_fields(body, ("decision",), ("decision",))
    decision = _decision(body["decision"])
    message_id = canonical_uuid(request.path_params["message_id"])
    if message_id is None:
        raise NotFound("no open report of this message")
    channel = await s.reports.open_case(structure_id, message_id)
    if decision == "withdraw":
        # First the message, then the reports: if we fail in between, the case stays open
        # and a retry finds the message withdrawn already.
        await s.bus.withdraw(Channel.parse(channel), message_id, "moderation")
    resolved = await s.reports.resolve(structure_id, message_id, decision, principal.user_id)
    await tell_staff(s, structure_id, message_id, 0)
    state = STATE_OF[decision]
    for report in resolved:
        if report.reporter_id is not None:
            outcome = {"id": report.report_id, "message": message_id, "state": state}
            await s.bus.tell_user(report.reporter_id, "report", outcome)
    return JSONResponse({"message_id": message_id, "state": state, "reports": [r.report_id for r in resolved]})


def _decision(value: object) -> Decision:
    for decision in DECISIONS:
        if value == decision:
            return decision
    raise BadRequest('decision must be "withdraw" or "dismiss"', code="bad_request")


routes = [
    Route("/api/reports", file_report, methods=["POST"]),
    Route("/api/reports", my_reports, methods=["GET"]),
    Route("/api/structures/{sid}/moderation", moderation_queue, methods=["GET"]),
    Route("/api/structures/{sid}/moderation/{message_id}", moderate, methods=["POST"]),
]
