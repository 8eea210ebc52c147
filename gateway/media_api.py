"""The media endpoints: upload, processing status, viewing (a short-lived link to the
object), and the signed file links of the filesystem store.

Every view is decided at the moment of the request (realtime.permissions.may_view_media):
the viewer's right to the message's channel, the message not withdrawn, and every tagged
child's consent complete. The link handed out lives LINK_SECONDS, so a revocation stops
new views at once and running links within minutes.
"""

from __future__ import annotations

import re
import uuid

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from gateway.http_api import current_principal, services
from gateway.services import Services
from gateway.uploads import MULTIPART_SLACK, receive
from realtime import audit
from realtime.channels import Channel
from realtime.errors import BadRequest, Conflict, Forbidden, Gone, NotFound, TooLarge
from realtime.fs_store import FilesystemStore, InvalidLink
from realtime.media import RENDITIONS, Media, object_key
from realtime.media_store import MissingObject
from realtime.permissions import (
    FORBIDDEN,
    Decision,
    MediaView,
    Principal,
    may_publish,
    may_subscribe,
    may_upload_media,
    may_view_media,
    refusal,
    structure_of,
)

LINK_SECONDS = 300
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")
NO_STORE = {"Cache-Control": "no-store"}


async def upload_structure(s: Services, p: Principal, channel_name: str | None) -> int:
    """The structure an upload is for: the channel's it is meant for (`?channel=`), which
    the uploader must be allowed to publish on; without one, the structure of a user who
    is staff of exactly one."""
    structure: int | None
    if channel_name is None:
        if len(p.staff_of) != 1:
            raise BadRequest("say which channel the media is for: ?channel=<channel>", code="channel_required")
        [structure] = p.staff_of
        decision = may_upload_media(p, structure)
    else:
        channel = Channel.parse(channel_name)
        facts = await s.directory.channel_facts(channel)
        decision = may_publish(p, channel, facts)
        structure = structure_of(facts)
    if not decision.allowed:
        raise refusal(decision)
    assert structure is not None  # publishing is allowed on structures' channels only
    return structure


async def upload(request: Request) -> Response:
    s = services(request)
    p = await current_principal(request)
    structure = await upload_structure(s, p, request.query_params.get("channel"))
    key = request.headers.get("idempotency-key")
    if key is not None:
        if not IDEMPOTENCY_KEY.fullmatch(key):
            raise BadRequest("Idempotency-Key: 1 to 200 printable ASCII characters", code="bad_request")
        # A retry of an upload that reached us: its media, and nothing stored twice.
        if (earlier := await s.media.by_idempotency_key(p.user_id, key)) is not None:
            return JSONResponse(earlier.status())
    settings = s.settings
    declared = request.headers.get("content-length", "")
    if (
        declared.isdigit()
        and await s.media.used(structure) + int(declared) - MULTIPART_SLACK > settings.media_quota_bytes
    ):
        # Refused before the body is read; `register` checks again, exactly, once it is.
        raise TooLarge("the structure's media storage is full", code="media_quota_exceeded")
    async with receive(request, settings.data_dir / "uploads", settings.media_max_bytes) as received:
        media_id = str(uuid.uuid4())
        incoming = object_key(structure, media_id, "incoming")
        await s.media_store.put(incoming, received.path, received.media_type.value)
        try:
            media, created = await s.media.register(
                media_id=media_id,
                structure_id=structure,
                uploader_id=p.user_id,
                idempotency_key=key,
                media_type=received.media_type,
                size=received.size,
                incoming_key=incoming,
                quota=settings.media_quota_bytes,
            )
        except BaseException:
            await s.media_store.delete([incoming])
            raise
        if not created:
            await s.media_store.delete([incoming])
    return JSONResponse(media.status(), status_code=202 if created else 200)


async def view_decision(s: Services, p: Principal, media: Media) -> Decision:
    """may_view_media, with the facts read now: channel, withdrawal, consents."""
    if media.message_id is None and media.channel is not None and media.uploader_id and media.msg_key:
        published = await s.bus.published_id(Channel.parse(media.channel), media.uploader_id, media.msg_key)
        media = await s.media.bind_published(media, published)
    channel_decision, withdrawn = FORBIDDEN, False
    if media.channel is not None:
        channel = Channel.parse(media.channel)
        channel_decision = may_subscribe(p, channel, await s.facts.channel_facts(channel))
        if media.message_id is not None:
            withdrawn = await s.bus.is_withdrawn(channel, media.message_id) or await s.media.withdrawn_in_store(
                media.message_id
            )
    tagged = tuple(await s.directory.consents(media.children)) if media.children else ()
    view = MediaView(media.structure_id, media.uploader_id, media.message_id is not None, withdrawn, tagged)
    return may_view_media(p, view, channel_decision)


async def viewable(request: Request) -> Media:
    s = services(request)
    p = await current_principal(request)
    media = await s.media.get(request.path_params["media_id"])
    if media is None:
        raise NotFound("no such media", code="not_found")
    if not (decision := await view_decision(s, p, media)).allowed:
        raise refusal(decision)
    return media


async def status(request: Request) -> Response:
    media = await viewable(request)
    return JSONResponse(media.status(), headers=NO_STORE)


async def view(request: Request) -> Response:
    size = request.query_params.get("size", "screen")
    if size not in RENDITIONS:
        raise BadRequest(f"size is one of {', '.join(RENDITIONS)}", code="bad_request")
    media = await viewable(request)
    if media.state == "rejected":
        raise Gone("this media was rejected when it was processed", code="media_rejected")
    if media.state != "ready":
        raise Conflict("this media is still being processed", code="media_not_ready")
    rendition = media.renditions[size]
    s = services(request)
    if size != "thumb" and media.children:
        await _audit_view(s, await current_principal(request), media, size)
    url = await s.media_store.url(rendition["key"], rendition["type"], LINK_SECONDS)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"url": url, "type": rendition["type"], "expires_in": LINK_SECONDS}, headers=NO_STORE)
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


async def _audit_view(s: Services, p: Principal, media: Media, size: str) -> None:
    """Staff opening a photo or video of identified children leave a trace: the families may
    ask who looked. Thumbnails in a feed are not openings, and are not logged."""
    if media.structure_id not in p.staff_of:
        return
    await audit.record(
        s.pool,
        actor_id=p.user_id,
        structure_id=media.structure_id,
        action="media.view",
        subject_type="media",
        subject_id=media.id,
        details={"size": size, "children": list(media.children)},
    )


async def signed_file(request: Request) -> Response:
    """A link handed out by the filesystem store (FilesystemStore.url): the signature is
    the permission, checked when the link was made."""
    store = services(request).media_store
    if not isinstance(store, FilesystemStore):
        raise NotFound("no such file", code="not_found")
    q = request.query_params
    content_type = q.get("type", "")
    try:
        path = store.open_signed(request.path_params["key"], q.get("expires", ""), content_type, q.get("signature", ""))
    except InvalidLink:
        raise Forbidden("this link is invalid or has expired", code="invalid_link") from None
    except (MissingObject, ValueError):
        raise NotFound("no such file", code="not_found") from None
    return FileResponse(
        path,
        media_type=content_type,
        headers={
            "Cache-Control": f"private, max-age={LINK_SECONDS}",
            "Content-Disposition": "inline",
            "X-Content-Type-Options": "nosniff",
        },
    )


routes = [
    Route("/api/media", upload, methods=["POST"]),
    Route("/api/media/{media_id}/status", status, methods=["GET"]),
    Route("/api/media/{media_id}", view, methods=["GET"]),
    Route("/media/files/{key:path}", signed_file, methods=["GET"]),
]
