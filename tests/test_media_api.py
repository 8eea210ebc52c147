"""Media end to end on real servers: upload, processing by the worker, publication with
image rights, and viewing decided at each request."""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from gateway.ws import Session
from realtime.client import Client, ReplyError
from realtime.settings import Settings
from tests.conftest import Gateway, bearer, media_worker, running_gateway, wait_for
from tests.media_samples import jpeg_with_metadata, png, png_bomb, video

pytestmark = pytest.mark.usefixtures("demo_families")

SECRETS = (b"SECRET", b"Exif", b"http://ns.adobe.com/xap", b"Photoshop 3.0", b"8BIM")


async def upload(
    gateway: Gateway,
    token: str,
    content: bytes | Iterator[bytes],
    *,
    filename: str = "photo.jpg",
    content_type: str = "image/jpeg",
    channel: str | None = None,
    key: str | None = None,
) -> httpx.Response:
    headers = bearer(token) | ({"Idempotency-Key": key} if key else {})
    params = {"channel": channel} if channel else {}
    if isinstance(content, bytes):
        return await gateway.http.post(
            "/api/media", params=params, headers=headers, files={"file": (filename, content, content_type)}
        )
    # A body streamed with no Content-Length: the cap must hold while reading.
    boundary = "b0undary"

    async def body() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        for chunk in content:
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    return await gateway.http.post(
        "/api/media",
        params=params,
        headers=headers | {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=body(),
    )


async def status_of(gateway: Gateway, token: str, media_id: str) -> dict[str, Any]:
    response = await gateway.http.get(f"/api/media/{media_id}/status", headers=bearer(token))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def processed(gateway: Gateway, token: str, media_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        status = await status_of(gateway, token, media_id)
        return status if status["state"] != "processing" else None

    result: dict[str, Any] = await wait_for(done, timeout=60)
    return result


async def fetch(gateway: Gateway, token: str, media_id: str, size: str = "screen") -> httpx.Response:
    """What a viewer gets: the link's target when allowed, the refusal otherwise."""
    response = await gateway.http.get(f"/api/media/{media_id}", params={"size": size}, headers=bearer(token))
    if response.status_code != 302:
        return response
    assert response.headers["cache-control"] == "no-store"
    return await gateway.http.get(response.headers["location"])


async def ids(gateway: Gateway) -> dict[str, int]:
    pool = gateway.services.pool
    rows = await pool.fetch("SELECT first_name AS name, id FROM children")
    families = await pool.fetch("SELECT name, id FROM families")
    groups = await pool.fetch("SELECT name, id FROM groups")
    return {r["name"]: r["id"] for r in [*rows, *families, *groups]}


async def ready_photo(gateway: Gateway, token: str, tmp_path: Path, channel: str | None = None) -> str:
    photo = jpeg_with_metadata(tmp_path / f"{uuid.uuid4()}.jpg")
    response = await upload(gateway, token, photo.read_bytes(), channel=channel)
    assert response.status_code == 202, response.text
    media_id: str = response.json()["id"]
    assert (await processed(gateway, token, media_id))["state"] == "ready"
    return media_id


def media_body(*media: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "media", "media": list(media), **extra}


@pytest.mark.rule("F1", "F7")
async def test_a_photo_with_gps_comes_back_without_any_metadata_at_every_size(gateway: Gateway, tmp_path: Path) -> None:
    staff = await gateway.login("staff@demo.test")
    me = await gateway.me(staff)
    photo = jpeg_with_metadata(tmp_path / "gps.jpg", size=(2400, 1800), orientation=6)
    assert all(marker in photo.read_bytes() for marker in (b"Exif", b"SECRET"))
    async with Client.connect(gateway.ws, staff) as client, media_worker(gateway):
        await client.subscribe(f"user:{me['user']['id']}")
        response = await upload(gateway, staff, photo.read_bytes())
        assert response.status_code == 202, response.text
        assert response.json() == {"id": response.json()["id"], "state": "processing"}
        media_id = response.json()["id"]
        told = await client.next_push(timeout=60)
    assert told == {"op": "media", "channel": f"user:{me['user']['id']}", "id": media_id, "state": "ready"}
    status = await status_of(gateway, staff, media_id)
    # Orientation 6 applied: the portrait photo is upright.
    assert status == {"id": media_id, "state": "ready", "type": "image", "width": 1800, "height": 2400}
    for size, edge in (("original", 2400), ("screen", 1600), ("thumb", 400)):
        served = await fetch(gateway, staff, media_id, size)
        assert served.status_code == 200, served.text
        assert served.headers["content-type"] == "image/jpeg"
        assert served.content.startswith(b"\xff\xd8")
        for secret in SECRETS:
            assert secret not in served.content, (size, secret)
        with Image.open(io.BytesIO(served.content)) as image:
            assert max(image.size) == edge
            assert image.width < image.height
    assert not any((gateway.services.settings.data_dir / "uploads").iterdir())


async def test_the_type_is_judged_by_content_not_by_name_or_header(gateway: Gateway, tmp_path: Path) -> None:
    staff = await gateway.login("staff@demo.test")
    text = await upload(gateway, staff, b"just some text, named like a photo\n" * 10, filename="photo.jpg")
    assert text.status_code == 415
    assert text.json()["code"] == "media_type_unsupported"
    picture = png(tmp_path / "declared.jpg", (300, 200))
    declared_jpeg = await upload(gateway, staff, picture.read_bytes(), filename="photo.jpg", content_type="image/jpeg")
    assert declared_jpeg.status_code == 202, declared_jpeg.text
    async with media_worker(gateway):
        status = await processed(gateway, staff, declared_jpeg.json()["id"])
    assert status["state"] == "ready"
    sniffed = await gateway.services.pool.fetchval(
        "SELECT content_type FROM media WHERE id = $1", uuid.UUID(status["id"])
    )
    assert sniffed == "image/png"


async def post_partially(gateway: Gateway, token: str, first: bytes, then: bytes, declared: int | None) -> bytes:
    """POST an upload of which only `first` + `then` is sent (chunked, or with a declared
    Content-Length), then read the answer: the gateway must answer without the rest."""
    url = httpx.URL(gateway.base)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    length = f"Content-Length: {declared}" if declared is not None else "Transfer-Encoding: chunked"
    writer.write(
        (
            f"POST /api/media HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n{length}\r\n\r\n"
        ).encode()
    )
    for piece in (head, first, then):
        writer.write(piece if declared is not None else b"%x\r\n%s\r\n" % (len(piece), piece))
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_an_oversized_upload_is_refused_while_it_streams(settings: Settings) -> None:
    async with running_gateway(replace(settings, media_max_bytes=200_000)) as gateway:
        staff = await gateway.login("staff@demo.test")
        photo = jpeg_with_metadata(settings.data_dir / "big.jpg").read_bytes()
        # 50 MB announced, 300 kB sent: refused on the announcement, before the body.
        announced = await post_partially(gateway, staff, photo, b"", declared=50_000_000)
        assert announced.startswith(b"HTTP/1.1 413")
        # No length announced: refused once the cap is passed, while the rest is unsent.
        streamed = await post_partially(gateway, staff, photo, b"\0" * 300_000, declared=None)
        assert streamed.startswith(b"HTTP/1.1 413")
        too_big = await upload(gateway, staff, photo + b"\0" * 300_000)
        assert (too_big.status_code, too_big.json()["code"]) == (413, "media_too_large")
        assert await gateway.services.pool.fetchval("SELECT count(*) FROM media") == 0
        assert not any((settings.data_dir / "uploads").iterdir())


async def test_a_decompression_bomb_is_rejected_without_decoding(gateway: Gateway, tmp_path: Path) -> None:
    staff = await gateway.login("staff@demo.test")
    bomb = png_bomb(tmp_path / "bomb.png", 50_000, 50_000)
    assert bomb.stat().st_size < 100_000
    response = await upload(gateway, staff, bomb.read_bytes(), filename="bomb.png", content_type="image/png")
    assert response.status_code == 202, response.text
    async with media_worker(gateway):
        status = await processed(gateway, staff, response.json()["id"])
    assert status == {"id": response.json()["id"], "state": "rejected", "code": "media_too_many_pixels"}
    # Nothing of a refused file is kept.
    assert not [p for p in gateway.services.settings.media_root.rglob("*") if p.is_file() and p.name != ".signing-key"]


async def test_a_retried_upload_with_its_idempotency_key_is_stored_once(gateway: Gateway, tmp_path: Path) -> None:
    staff = await gateway.login("staff@demo.test")
    photo = jpeg_with_metadata(tmp_path / "retry.jpg").read_bytes()
    first = await upload(gateway, staff, photo, key="upload-42")
    again = await upload(gateway, staff, photo, key="upload-42")
    other = await upload(gateway, staff, photo, key="upload-43")
    assert (first.status_code, again.status_code, other.status_code) == (202, 200, 202)
    assert again.json()["id"] == first.json()["id"] != other.json()["id"]
    assert await gateway.services.pool.fetchval("SELECT count(*) FROM media") == 2
    bad = await upload(gateway, staff, photo, key="with spaces")
    assert bad.status_code == 400


async def test_an_upload_cut_off_midway_can_be_retried_without_a_duplicate(gateway: Gateway, tmp_path: Path) -> None:
    staff = await gateway.login("staff@demo.test")
    photo = jpeg_with_metadata(tmp_path / "cut.jpg").read_bytes()
    url = httpx.URL(gateway.base)
    _, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        (
            f"POST /api/media HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: Bearer {staff}\r\n"
            "Idempotency-Key: cut-1\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n"
            f"Content-Length: {len(photo) + 500}\r\n\r\n"
            '--b0undary\r\nContent-Disposition: form-data; name="file"; filename="cut.jpg"\r\n\r\n'
        ).encode()
        + photo[: len(photo) // 2]
    )
    await writer.drain()
    writer.close()  # the phone lost its network
    await writer.wait_closed()
    retried = await upload(gateway, staff, photo, key="cut-1")
    assert retried.status_code == 202, retried.text
    again = await upload(gateway, staff, photo, key="cut-1")
    assert (again.status_code, again.json()["id"]) == (200, retried.json()["id"])
    assert await gateway.services.pool.fetchval("SELECT count(*) FROM media") == 1
    await wait_for(lambda: _empty(gateway.services.settings.data_dir / "uploads"))


async def _empty(folder: Path) -> bool:
    return not await asyncio.to_thread(lambda: any(folder.iterdir()))


async def test_the_structure_quota_is_enforced(settings: Settings, tmp_path: Path) -> None:
    photo = jpeg_with_metadata(tmp_path / "q.jpg").read_bytes()
    async with running_gateway(replace(settings, media_quota_bytes=len(photo) * 2 + 10)) as gateway:
        staff = await gateway.login("staff@demo.test")
        assert (await upload(gateway, staff, photo)).status_code == 202
        assert (await upload(gateway, staff, photo)).status_code == 202
        full = await upload(gateway, staff, photo)
        assert full.status_code == 413
        assert full.json()["code"] == "media_quota_exceeded"
        # Announced too large for what is left: refused before the body is read.
        announced = await post_partially(gateway, staff, photo, b"", declared=5_000_000)
        assert announced.startswith(b"HTTP/1.1 413")


@pytest.mark.rule("F2", "F3")
async def test_guardians_upload_only_where_they_may_post(gateway: Gateway, tmp_path: Path) -> None:
    known = await ids(gateway)
    photo = jpeg_with_metadata(tmp_path / "parent.jpg").read_bytes()
    martin = await gateway.login("martin@demo.test")
    bernard = await gateway.login("bernard@demo.test")
    own = await upload(gateway, martin, photo, channel=f"family:{known['Famille Martin']}")
    assert own.status_code == 202, own.text
    no_channel = await upload(gateway, martin, photo)
    assert (no_channel.status_code, no_channel.json()["code"]) == (400, "channel_required")
    foreign = await upload(gateway, martin, photo, channel=f"family:{known['Famille Bernard']}")
    assert (foreign.status_code, foreign.json()["code"]) == (403, "forbidden")
    not_allowed = await upload(gateway, bernard, photo, channel=f"family:{known['Famille Bernard']}")
    assert (not_allowed.status_code, not_allowed.json()["code"]) == (403, "posting_not_authorised")
    group = await upload(gateway, martin, photo, channel=f"group:{known['Bébés']}")
    assert (group.status_code, group.json()["code"]) == (403, "forbidden")
    anonymous = await gateway.http.post("/api/media", files={"file": ("a.jpg", photo, "image/jpeg")})
    assert anonymous.status_code == 401


@pytest.mark.rule("F4", "F5", "F6", "F8", "F11")
async def test_a_published_photo_is_served_to_its_channel_only(gateway: Gateway, tmp_path: Path) -> None:
    known = await ids(gateway)
    family = f"family:{known['Famille Martin']}"
    staff = await gateway.login("staff@demo.test")
    martin = await gateway.login("martin@demo.test")
    bernard = await gateway.login("bernard@demo.test")
    pending = (await upload(gateway, staff, jpeg_with_metadata(tmp_path / "p.jpg").read_bytes())).json()["id"]
    async with Client.connect(gateway.ws, staff) as client:
        with pytest.raises(ReplyError) as early:
            await client.request(
                "publish", channel=family, msg_id="media-m6", body=media_body(pending), children=[known["Léa"]]
            )
        assert early.value.code == "media_not_ready"
    async with media_worker(gateway):
        media_id = await ready_photo(gateway, staff, tmp_path)
        async with Client.connect(gateway.ws, staff) as client:
            with pytest.raises(ReplyError) as untagged:
                await client.request("publish", channel=family, msg_id="media-m1", body=media_body(media_id))
            assert untagged.value.code == "tags_required"
            with pytest.raises(ReplyError) as unknown:
                await client.request("publish", channel=family, msg_id="media-m2", body=media_body(str(uuid.uuid4())))
            assert unknown.value.code == "not_found"
            body = media_body(media_id, no_child_identifiable=True)
            with pytest.raises(ReplyError) as both:
                await client.request("publish", channel=family, msg_id="media-m3", body=body, children=[known["Léa"]])
            assert both.value.code == "bad_body"
            # A retry (same msg_id) finds its reservation and its message.
            ack, again = [
                await client.request(
                    "publish", channel=family, msg_id="media-m4", body=media_body(media_id), children=[known["Léa"]]
                )
                for _ in range(2)
            ]
            assert (again["seq"], again["id"]) == (ack["seq"], ack["id"])
            with pytest.raises(ReplyError) as reused:
                await client.request(
                    "publish", channel=family, msg_id="media-m5", body=media_body(media_id), children=[known["Léa"]]
                )
            assert reused.value.code == "media_already_published"
    async with Client.connect(gateway.ws, martin) as parent:
        await parent.subscribe(family, since=0)
        message = await parent.next_push()
    assert message["body"]["media"] == [{"id": media_id, "type": "image", "width": 480, "height": 640}]
    assert message["children"] == [known["Léa"]]
    assert (await fetch(gateway, martin, media_id)).status_code == 200
    # Another household's guardian: the same answer as for an id that does not exist.
    for path in (f"/api/media/{media_id}", f"/api/media/{media_id}/status", f"/api/media/{uuid.uuid4()}"):
        response = await gateway.http.get(path, headers=bearer(bernard))
        assert (response.status_code, response.json()["code"]) == (404, "not_found")
    # Staff's own upload, not published: nobody else sees it.
    assert (await fetch(gateway, martin, pending)).status_code == 404
    with pytest.raises(ReplyError) as foreign:
        async with Client.connect(gateway.ws, martin) as parent:
            await parent.request(
                "publish", channel=family, msg_id="media-m7", body=media_body(media_id), children=[known["Léa"]]
            )
    assert foreign.value.code == "not_found"


async def test_a_photo_reaching_a_parent_live_is_served_before_its_publisher_is_answered(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live push leaves with the publish; the gateway binds the media to the message
    right after. A parent's phone asking for the photo in between gets it (the publish's
    own record in Redis names the message), not a 404 it would show as "unavailable"."""
    known = await ids(gateway)
    family = f"family:{known['Famille Martin']}"
    staff = await gateway.login("staff@demo.test")
    martin = await gateway.login("martin@demo.test")
    binding = asyncio.Event()
    original = Session._bind_media

    async def bind_later(self: Session, request: Any, body: dict[str, Any], message_id: str) -> None:
        await binding.wait()
        await original(self, request, body, message_id)

    monkeypatch.setattr(Session, "_bind_media", bind_later)
    async with media_worker(gateway):
        media_id = await ready_photo(gateway, staff, tmp_path)
    async with Client.connect(gateway.ws, martin) as parent, Client.connect(gateway.ws, staff) as publisher:
        await parent.subscribe(family)
        publishing = asyncio.create_task(
            publisher.request(
                "publish", channel=family, msg_id="live-photo", body=media_body(media_id), children=[known["Léa"]]
            )
        )
        try:
            pushed = await parent.next_push()
            assert pushed["body"]["media"][0]["id"] == media_id
            assert not publishing.done()
            assert (await fetch(gateway, martin, media_id, "thumb")).status_code == 200
        finally:
            binding.set()
        assert (await publishing)["id"] == pushed["id"]
    assert (
        await gateway.services.pool.fetchval("SELECT message_id::text FROM media WHERE id = $1", media_id)
        == pushed["id"]
    )


@pytest.mark.rule("F6")
async def test_a_group_photo_without_tags_needs_staff_to_confirm_no_child_is_identifiable(
    gateway: Gateway, tmp_path: Path
) -> None:
    known = await ids(gateway)
    staff = await gateway.login("staff@demo.test")
    async with media_worker(gateway):
        media_id = await ready_photo(gateway, staff, tmp_path)
    async with Client.connect(gateway.ws, staff) as client:
        body = media_body(media_id, no_child_identifiable=True)
        await client.request("publish", channel=f"group:{known['Grands']}", msg_id="media-g1", body=body)
    audited = await gateway.services.pool.fetchrow(
        "SELECT actor_id, subject_id, details FROM audit_log WHERE action = 'media.no_child_identifiable'"
    )
    assert audited is not None
    assert audited["subject_id"] == media_id
    assert audited["details"] == {"channel": f"group:{known['Grands']}"}
    bernard = await gateway.login("bernard@demo.test")
    assert (await fetch(gateway, bernard, media_id, "thumb")).status_code == 200


async def photo_of_lea_in_group(gateway: Gateway, tmp_path: Path) -> tuple[dict[str, int], str, str, str]:
    """A photo staff published in Léa's group, tagging her: the demo ids, the staff's and
    Léa's mother's tokens, and the media id."""
    known = await ids(gateway)
    staff = await gateway.login("staff@demo.test")
    martin = await gateway.login("martin@demo.test")
    async with media_worker(gateway):
        media_id = await ready_photo(gateway, staff, tmp_path)
    async with Client.connect(gateway.ws, staff) as client:
        await client.request(
            "publish",
            channel=f"group:{known['Bébés']}",
            msg_id=str(uuid.uuid4()),
            body=media_body(media_id),
            children=[known["Léa"]],
        )
    return known, staff, martin, media_id


@pytest.mark.rule("F9", "W1", "F7")
async def test_after_consent_revocation_the_photo_is_no_longer_served_to_guardians(
    gateway: Gateway, tmp_path: Path
) -> None:
    known, staff, martin, media_id = await photo_of_lea_in_group(gateway, tmp_path)
    assert (await fetch(gateway, martin, media_id)).status_code == 200
    revoked = await gateway.http.delete(f"/api/children/{known['Léa']}/consent", headers=bearer(martin))
    assert revoked.status_code == 200, revoked.text
    refused = await fetch(gateway, martin, media_id)
    assert (refused.status_code, refused.json()["code"]) == (410, "media_withdrawn")
    assert (await fetch(gateway, staff, media_id)).status_code == 200


async def test_staff_opening_a_photo_of_a_child_is_audited_and_thumbnails_are_not(
    gateway: Gateway, tmp_path: Path
) -> None:
    _, staff, martin, media_id = await photo_of_lea_in_group(gateway, tmp_path)
    for token, size in ((staff, "thumb"), (staff, "screen"), (martin, "screen"), (staff, "original")):
        assert (await fetch(gateway, token, media_id, size)).status_code == 200
    staff_id = (await gateway.me(staff))["user"]["id"]
    rows = await gateway.services.pool.fetch(
        "SELECT actor_id, subject_id, details->>'size' AS size FROM audit_log WHERE action = 'media.view' ORDER BY id"
    )
    assert [(r["actor_id"], r["subject_id"], r["size"]) for r in rows] == [
        (staff_id, media_id, "screen"),
        (staff_id, media_id, "original"),
    ]


async def test_a_video_is_served_remuxed_with_its_poster(gateway: Gateway, tmp_path: Path) -> None:
    staff = await gateway.login("staff@demo.test")
    clip = video(tmp_path / "clip.mov", container="mov")
    response = await upload(gateway, staff, clip.read_bytes(), filename="clip.mov", content_type="video/quicktime")
    assert response.status_code == 202, response.text
    async with media_worker(gateway):
        status = await processed(gateway, staff, response.json()["id"])
    assert status["state"] == "ready"
    assert status["type"] == "video"
    assert 800 <= status["duration_ms"] <= 1200
    original = await fetch(gateway, staff, status["id"], "original")
    assert original.headers["content-type"] == "video/mp4"
    assert b"SECRET" not in original.content
    poster = await fetch(gateway, staff, status["id"], "thumb")
    assert poster.headers["content-type"] == "image/jpeg"


async def test_file_links_cannot_be_forged(gateway: Gateway, tmp_path: Path) -> None:
    staff = await gateway.login("staff@demo.test")
    async with media_worker(gateway):
        media_id = await ready_photo(gateway, staff, tmp_path)
    link = (
        await gateway.http.get(
            f"/api/media/{media_id}", params={"size": "thumb"}, headers=bearer(staff) | {"Accept": "application/json"}
        )
    ).json()
    assert link["expires_in"] == 300
    url = httpx.URL(link["url"])
    assert (await gateway.http.get(url)).status_code == 200
    forged = url.copy_set_param("signature", "0" * 64)
    assert (await gateway.http.get(forged)).json()["code"] == "invalid_link"
    other_size = httpx.URL(str(url).replace("thumb", "original"))
    assert (await gateway.http.get(other_size)).status_code == 403
    bad_size = await gateway.http.get(f"/api/media/{media_id}", params={"size": "huge"}, headers=bearer(staff))
    assert bad_size.status_code == 400
