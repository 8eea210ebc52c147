"""Hostile uploads against a live gateway (and the media worker where processing decides):
decompression bombs, polyglots, disguised content, hostile file names and abused multipart
bodies. What tests/test_media_api.py already covers (a PNG declaring 50 000² pixels, a text
file named photo.jpg, an announced or streamed file over the cap, the quota) is not repeated.

Every request is bounded by a timeout: a refusal must come, not a hang. The tally of cases,
of bad files accepted and of server errors goes to tests/figures.py ("Upload attacks")."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from realtime.settings import Settings
from tests import figures
from tests import media_samples as samples
from tests.conftest import Gateway, bearer, media_worker, running_gateway
from tests.test_media_api import fetch, processed, upload

pytestmark = pytest.mark.usefixtures("demo_families")

TIMEOUT = 15.0
BOUNDARY = "b0undary"
# An object key is made of ids only (realtime.media.object_key).
OBJECT_KEY = re.compile(r"s[0-9]+/[0-9a-f-]{36}/(incoming|(original|screen|thumb)\.(jpg|png|mp4))")

TALLY = {"cases": 0, "accepted_bad": 0, "server_errors": 0}


def tally(status: int, *, bad_accepted: bool = False) -> None:
    TALLY["cases"] += 1
    TALLY["server_errors"] += status >= 500
    TALLY["accepted_bad"] += bad_accepted
    figures.report("Upload attacks", **TALLY)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def raw_post(gateway: Gateway, token: str, head: str, body: Iterable[bytes], *, chunked: bool) -> Answer:
    """POST /api/media as written here, byte for byte: `head` holds the extra header lines
    (CRLF-terminated); `body` is sent piece by piece (as chunks when `chunked`, else with
    the Content-Length of the whole) while the answer is awaited. The whole exchange is
    bounded by TIMEOUT: a server that hangs fails the test."""
    url = httpx.URL(gateway.base)
    pieces = list(body)
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection(url.host, url.port)
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {sum(map(len, pieces))}"
        writer.write(
            f"POST /api/media HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: Bearer {token}\r\n{head}{framing}\r\n"
            "Connection: close\r\n\r\n".encode()
        )

        async def send() -> None:
            # The server may answer and close before everything is sent: that is the point.
            with contextlib.suppress(ConnectionError):
                for piece in pieces:
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                    await writer.drain()
                if chunked:
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()

        sender = asyncio.create_task(send())
        try:
            status_line = await reader.readuntil(b"\r\n")
            raw_headers = await reader.readuntil(b"\r\n\r\n")
            headers = dict(
                (name.strip().lower(), value.strip())
                for name, _, value in (line.partition(":") for line in raw_headers.decode().split("\r\n") if line)
            )
            length = int(headers.get("content-length", "0"))
            content = await reader.readexactly(length)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return Answer(int(status_line.split()[1]), headers, content)


def part(disposition: str, content: bytes, *, extra: str = "", boundary: str = BOUNDARY) -> bytes:
    return f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{extra}\r\n".encode() + content + b"\r\n"


def closing(boundary: str = BOUNDARY) -> bytes:
    return f"--{boundary}--\r\n".encode()


def multipart_head(boundary: str = BOUNDARY) -> str:
    return f"Content-Type: multipart/form-data; boundary={boundary}\r\n"


def stored_files(gateway: Gateway) -> list[str]:
    root = gateway.services.settings.media_root
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".signing-key")


def leftovers(gateway: Gateway) -> list[Path]:
    """Files left in the gateway's spool and the worker's scratch folders."""
    data = gateway.services.settings.data_dir
    return [p for folder in ("uploads", "media-work") for p in (data / folder).rglob("*") if p.is_file()]


async def media_count(gateway: Gateway) -> int:
    count: int = await gateway.services.pool.fetchval("SELECT count(*) FROM media")
    return count


def photo(tmp_path: Path) -> bytes:
    folder = tmp_path / "samples"  # the gateway's data folder is tmp_path: keep out of its way
    folder.mkdir(exist_ok=True)
    return samples.jpeg_with_metadata(folder / f"{uuid.uuid4()}.jpg", size=(64, 48), orientation=1).read_bytes()


@pytest.fixture
async def staff(gateway: Gateway) -> str:
    return await gateway.login("staff@demo.test")


# Decompression bombs ------------------------------------------------------------------------------


async def test_decompression_bombs_are_rejected_with_their_code_and_nothing_is_kept(
    gateway: Gateway, staff: str, tmp_path: Path
) -> None:
    bombs = {
        "jpeg-65000²": (samples.jpeg_bomb(tmp_path / "bomb.jpg"), "media_too_many_pixels"),
        "webp-16384²": (samples.webp_bomb(tmp_path / "bomb.webp"), "media_too_many_pixels"),
        "png-deflate-300MB": (samples.png_deflate_bomb(tmp_path / "deflate.png"), "media_too_many_pixels"),
        "heic-20000²": (samples.heic_bomb(tmp_path / "bomb.heic"), "media_too_many_pixels"),
        "png-ztxt-64MB": (samples.png_text_bomb(tmp_path / "text.png"), "media_unreadable"),
        "mp4-days-per-frame": (samples.endless_video(tmp_path / "endless.mp4"), "media_too_long"),
    }
    # Small files, huge once decoded: the pixel count is read from the header.
    assert all(path.stat().st_size < 400_000 for path, _ in bombs.values())
    uploaded: dict[str, str] = {}
    for name, (path, _) in bombs.items():
        response = await upload(gateway, staff, path.read_bytes(), filename=path.name)
        assert response.status_code == 202, (name, response.text)
        uploaded[name] = response.json()["id"]
    async with media_worker(gateway) as worker:
        outcomes = {name: await processed(gateway, staff, media_id) for name, media_id in uploaded.items()}
    assert worker.failed_attempts == 0  # refused cleanly, never a crashed or killed decoder
    for name, (_, code) in bombs.items():
        media_id = uploaded[name]
        accepted = outcomes[name]["state"] != "rejected"
        tally(202, bad_accepted=accepted)
        assert outcomes[name] == {"id": media_id, "state": "rejected", "code": code}, name
        view = await gateway.http.get(f"/api/media/{media_id}", headers=bearer(staff))
        assert (view.status_code, view.json()["code"]) == (410, "media_rejected")
    # Nothing of a refused file is kept: not in the store, not in a spool or work folder.
    assert stored_files(gateway) == []
    assert leftovers(gateway) == []


# Polyglots ----------------------------------------------------------------------------------------

MARKERS = (b"POLYGLOT", b"PK\x03\x04", b"<html", b"<script", b"alert(")


def zip_archive() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("index.html", "<html><script>alert('POLYGLOT-ZIP')</script></html>")
    return out.getvalue()


HTML = b"<html><body><script>alert('POLYGLOT-HTML')</script></body></html>"


async def test_a_polyglot_is_served_re_encoded_without_its_payload(
    gateway: Gateway, staff: str, tmp_path: Path
) -> None:
    jpeg = samples.jpeg_with_metadata(tmp_path / "base.jpg", size=(64, 48), orientation=1).read_bytes()
    png = samples.png(tmp_path / "base.png", (64, 48)).read_bytes()
    webp = samples.webp(tmp_path / "base.webp").read_bytes()
    comment = tmp_path / "comment.jpg"
    with Image.open(io.BytesIO(jpeg)) as image:
        image.save(comment, format="JPEG", comment=HTML)
    polyglots = {
        "jpeg+zip": (jpeg + zip_archive(), "image/jpeg"),
        "jpeg+html": (jpeg + HTML, "image/jpeg"),
        "jpeg-with-html-comment": (comment.read_bytes(), "image/jpeg"),
        "jpeg+javascript": (
            samples.jpeg_javascript_polyglot(tmp_path / "js.jpg", b"=alert('POLYGLOT-JS');").read_bytes(),
            "image/jpeg",
        ),
        "png+html": (png + HTML, "image/jpeg"),
        "webp+zip": (webp + zip_archive(), "image/jpeg"),
    }
    assert zipfile.is_zipfile(io.BytesIO(polyglots["jpeg+zip"][0]))
    uploaded = {}
    for name, (content, _) in polyglots.items():
        response = await upload(gateway, staff, content, filename="photo.html")
        assert response.status_code == 202, (name, response.text)
        uploaded[name] = response.json()["id"]
    async with media_worker(gateway):
        outcomes = {name: await processed(gateway, staff, media_id) for name, media_id in uploaded.items()}
    for name, (content, served_type) in polyglots.items():
        assert outcomes[name]["state"] == "ready", (name, outcomes[name])
        clean = True
        for size in ("original", "screen", "thumb"):
            served = await fetch(gateway, staff, uploaded[name], size)
            assert served.status_code == 200, (name, size, served.text)
            assert served.headers["content-type"] == served_type
            assert served.headers["x-content-type-options"] == "nosniff"
            assert served.headers["content-disposition"] == "inline"
            assert served.content != content
            clean &= not any(marker in served.content for marker in MARKERS)
            clean &= not zipfile.is_zipfile(io.BytesIO(served.content))
            with Image.open(io.BytesIO(served.content)) as image:
                assert image.format == "JPEG"
                image.load()
                # Nothing after the picture: the encoder's end-of-image marker ends the file.
                assert served.content.endswith(b"\xff\xd9")
        tally(202, bad_accepted=not clean)
        assert clean, name


async def test_a_file_that_only_starts_like_a_photo_is_rejected(gateway: Gateway, staff: str) -> None:
    disguised = {
        "jpeg-magic+html": b"\xff\xd8\xff\xe0" + HTML * 4,
        "png-magic+svg": b"\x89PNG\r\n\x1a\n<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>" * 2,
        "riff-webp+js": b"RIFF\x00\x01\x00\x00WEBP" + b"alert('POLYGLOT');" * 8,
    }
    uploaded = {}
    for name, content in disguised.items():
        response = await upload(gateway, staff, content)
        assert response.status_code == 202, (name, response.text)
        uploaded[name] = response.json()["id"]
    async with media_worker(gateway):
        for name, media_id in uploaded.items():
            outcome = await processed(gateway, staff, media_id)
            tally(202, bad_accepted=outcome["state"] != "rejected")
            assert outcome == {"id": media_id, "state": "rejected", "code": "media_unreadable"}, name
    assert stored_files(gateway) == []
    assert leftovers(gateway) == []


async def test_a_served_file_keeps_the_type_it_was_signed_for(gateway: Gateway, staff: str, tmp_path: Path) -> None:
    response = await upload(gateway, staff, photo(tmp_path))
    async with media_worker(gateway):
        await processed(gateway, staff, response.json()["id"])
    link = await gateway.http.get(
        f"/api/media/{response.json()['id']}", headers=bearer(staff) | {"Accept": "application/json"}
    )
    url = httpx.URL(link.json()["url"])
    for served_as in ("text/html", "image/svg+xml", "application/javascript"):
        retyped = await gateway.http.get(url.copy_set_param("type", served_as))
        tally(retyped.status_code, bad_accepted=retyped.status_code == 200)
        assert (retyped.status_code, retyped.json()["code"]) == (403, "invalid_link")


DISGUISED = {
    "html": b"<!DOCTYPE html><html><script>alert(document.cookie)</script></html>",
    "html-after-bom-and-blanks": b"\xef\xbb\xbf \r\n\t<html><body onload=alert(1)>",
    "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    "svg-gzipped": b"\x1f\x8b\x08\x00" + b"\x00" * 60,
    "javascript": b"/*\xff\xd8\xff*/ alert('not a jpeg after all');" * 2,
    "php": b"<?php system($_GET['c']); ?>" * 3,
    "gif-javascript": b"GIF89a/*\x01\x00\x01\x00*/=alert(1);" * 3,
    "pdf": b"%PDF-1.7\n1 0 obj << /JS (alert(1)) >> endobj\n" * 2,
    "zip": zip_archive(),
    "elf": b"\x7fELF\x02\x01\x01" + b"\x00" * 64,
    "avif": b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 40,
}


async def test_html_svg_and_scripts_named_like_photos_are_refused_at_once(gateway: Gateway, staff: str) -> None:
    for name, content in DISGUISED.items():
        for filename, declared in (
            ("photo.jpg", "image/jpeg"),
            ("IMG_0001.HEIC", "image/heic"),
            ("a.png", "image/png"),
        ):
            response = await upload(gateway, staff, content, filename=filename, content_type=declared)
            tally(response.status_code, bad_accepted=response.status_code < 400)
            assert (response.status_code, response.json()["code"]) == (415, "media_type_unsupported"), name
            assert response.headers["content-type"] == "application/problem+json"
    assert await media_count(gateway) == 0
    assert stored_files(gateway) == []
    assert leftovers(gateway) == []


# Hostile file names -------------------------------------------------------------------------------

HOSTILE_NAMES = {
    "traversal": "../../../../etc/passwd",
    "traversal-windows": "..\\..\\..\\windows\\win.ini",
    "absolute": "/etc/cron.d/evil",
    "encoded-traversal": "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "nul": "photo.jpg\x00.php",
    "htaccess": ".htaccess",
    "signing-key": ".signing-key",
    "unicode-controls": "\u202egpj.exe\u200b\u2028photo\u0007.jpg",
    "html": "<img src=x onerror=alert(1)>.jpg",
    "quotes-and-semicolons": 'a\\"; name="file2"; x=".jpg',
    "long-but-fair": "x" * 250 + ".jpg",
}


async def test_a_hostile_file_name_never_decides_where_anything_is_stored(
    gateway: Gateway, staff: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    content = photo(tmp_path)
    markers = {name: f"{uuid.uuid4().hex}-{filename}" for name, filename in HOSTILE_NAMES.items()}
    for name, filename in markers.items():
        # The file name exactly as sent, in a quoted-string and as an RFC 5987 extended value.
        escaped = filename.replace("\\", "\\\\").replace('"', '\\"')
        disposition = f'form-data; name="file"; filename="{escaped}"; filename*=UTF-8\'\'{quote(filename, safe="")}'
        answer = await raw_post(
            gateway,
            staff,
            multipart_head(),
            [part(disposition, content, extra="Content-Type: text/html\r\n"), closing()],
            chunked=False,
        )
        tally(answer.status, bad_accepted=False)
        assert answer.status == 202, (name, answer)
        assert filename.encode() not in answer.body
    media = await gateway.services.pool.fetch("SELECT id, incoming_key, content_type FROM media")
    assert len(media) == len(markers)
    assert {row["content_type"] for row in media} == {"image/jpeg"}  # sniffed, not declared
    stored = stored_files(gateway)
    assert len(stored) == len(markers)
    for key in [*stored, *(row["incoming_key"] for row in media)]:
        assert OBJECT_KEY.fullmatch(key), key
    # Nothing written outside the store, the name appears in no table and no log line.
    data_dir = gateway.services.settings.data_dir
    kept = (gateway.services.settings.media_root, data_dir / "samples")
    assert [p for p in data_dir.rglob("*") if p.is_file() and not any(k in p.parents for k in kept)] == []
    rows = await gateway.services.pool.fetch(
        "SELECT row_to_json(m)::text AS t FROM media m UNION ALL SELECT row_to_json(a)::text FROM audit_log a"
    )
    for marker in markers.values():
        unique = marker.split("-", 1)[0]
        assert all(unique not in row["t"] for row in rows)
        assert unique not in caplog.text


async def test_a_file_name_that_overflows_a_part_header_is_refused(
    gateway: Gateway, staff: str, tmp_path: Path
) -> None:
    for length in (2_000, 100_000):
        disposition = f'form-data; name="file"; filename="{"A" * length}.jpg"'
        answer = await raw_post(
            gateway, staff, multipart_head(), [part(disposition, photo(tmp_path)), closing()], chunked=False
        )
        tally(answer.status, bad_accepted=answer.status < 400)
        assert answer.status == 400, answer
        assert b'"bad_request"' in answer.body
    assert await media_count(gateway) == 0
    assert leftovers(gateway) == []


# Abused multipart bodies --------------------------------------------------------------------------

FILE = 'form-data; name="file"; filename="a.jpg"'


async def test_malformed_and_abusive_multipart_bodies_get_a_clear_error(
    gateway: Gateway, staff: str, tmp_path: Path
) -> None:
    jpeg = photo(tmp_path)
    long_boundary = "B" * 2000
    cases: dict[str, tuple[str, list[bytes], int]] = {
        "nine-parts": (
            multipart_head(),
            [*(part(f'form-data; name="f{n}"', b"x") for n in range(8)), part(FILE, jpeg), closing()],
            400,
        ),
        "file-twice": (multipart_head(), [part(FILE, jpeg), part(FILE, jpeg), closing()], 400),
        "no-file-field": (multipart_head(), [part('form-data; name="photo"; filename="a.jpg"', jpeg), closing()], 400),
        "no-disposition": (
            multipart_head(),
            [f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n\r\n".encode() + jpeg + b"\r\n", closing()],
            400,
        ),
        "empty-file": (multipart_head(), [part(FILE, b""), closing()], 400),
        "huge-header-value": (multipart_head(), [part(FILE, jpeg, extra=f"X-Pad: {'p' * 5000}\r\n"), closing()], 400),
        "huge-header-name": (multipart_head(), [part(FILE, jpeg, extra=f"X-{'p' * 5000}: 1\r\n"), closing()], 400),
        "many-headers": (
            multipart_head(),
            [part(FILE, jpeg, extra="".join(f"X-H{n}: v\r\n" for n in range(50))), closing()],
            400,
        ),
        "big-ignored-field": (
            multipart_head(),
            [part('form-data; name="caption"', b"c" * 10_000), part(FILE, jpeg), closing()],
            400,
        ),
        "not-multipart": ("Content-Type: application/octet-stream\r\n", [jpeg], 400),
        "no-boundary": ("Content-Type: multipart/form-data\r\n", [part(FILE, jpeg), closing()], 400),
        "empty-boundary": ('Content-Type: multipart/form-data; boundary=""\r\n', [part(FILE, jpeg), closing()], 400),
        "other-boundary": (multipart_head("other"), [part(FILE, jpeg), closing()], 400),
        "preamble-only": (multipart_head(), [b"no boundary anywhere " * 100], 400),
        "no-closing-boundary": (multipart_head(), [part(FILE, jpeg)], 400),
        "garbage-after-boundary": (multipart_head(), [f"--{BOUNDARY}xyz\r\n".encode() + jpeg], 400),
        "boundary-of-2000": (
            multipart_head(long_boundary),
            [part(FILE, jpeg, boundary=long_boundary), closing(long_boundary)],
            400,
        ),
        # Longer than RFC 2046's 70, still accepted: what python-multipart can parse.
        "boundary-of-256": (
            multipart_head(long_boundary[:256]),
            [part(FILE, jpeg, boundary=long_boundary[:256]), closing(long_boundary[:256])],
            202,
        ),
        # The file name is not looked at (docs/protocol.md §1.3a): a part without one is a file.
        "file-without-filename": (multipart_head(), [part('form-data; name="file"', jpeg), closing()], 202),
    }
    accepted = 0
    for name, (head, body, expected) in cases.items():
        for chunked in (False, True):
            answer = await raw_post(gateway, staff, head, body, chunked=chunked)
            tally(answer.status, bad_accepted=expected >= 400 and answer.status < 400)
            assert answer.status == expected, (name, chunked, answer)
            assert answer.headers["content-type"] == (
                "application/json" if expected < 400 else "application/problem+json"
            )
            accepted += expected < 400
    assert await media_count(gateway) == accepted
    assert len(stored_files(gateway)) == accepted
    assert leftovers(gateway) == []


@contextlib.asynccontextmanager
async def small_cap(settings: Settings, max_bytes: int) -> AsyncIterator[tuple[Gateway, str]]:
    async with running_gateway(replace(settings, media_max_bytes=max_bytes)) as gateway:
        yield gateway, await gateway.login("staff@demo.test")


async def test_a_body_without_length_is_bounded_even_after_its_closing_boundary(
    settings: Settings, tmp_path: Path
) -> None:
    """The cap holds for the body, not only for the file: bytes streamed after the closing
    boundary are counted too, and the answer comes while the client is still sending."""
    jpeg = photo(tmp_path)
    megabyte = b"e" * (1024 * 1024)
    async with small_cap(settings, 200_000) as (gateway, staff):
        # A whole upload, then 64 MB of epilogue (which RFC 2046 lets a parser skip).
        body = [part(FILE, jpeg), closing(), *([megabyte] * 64)]
        answer = await raw_post(gateway, staff, multipart_head(), body, chunked=True)
        tally(answer.status, bad_accepted=answer.status < 400)
        assert (answer.status, b'"media_too_large"' in answer.body) == (413, True), answer
        assert await media_count(gateway) == 0
        assert stored_files(gateway) == []
        assert leftovers(gateway) == []


async def test_abusive_uploads_do_not_stop_the_gateway_serving(gateway: Gateway, staff: str, tmp_path: Path) -> None:
    """A burst of broken uploads in parallel: each refused, none kept, and a good upload
    right after goes through."""
    jpeg = photo(tmp_path)
    bad = [
        [part(FILE, jpeg), part(FILE, jpeg), closing()],
        [part(FILE, DISGUISED["html"]), closing()],
        [part(FILE, jpeg)],
        [f"--{BOUNDARY}\r\n".encode() + b"X" * 10_000],
    ] * 5
    answers = await asyncio.gather(
        *(raw_post(gateway, staff, multipart_head(), body, chunked=n % 2 == 0) for n, body in enumerate(bad))
    )
    for answer in answers:
        tally(answer.status, bad_accepted=answer.status < 400)
    assert sorted({a.status for a in answers}) == [400, 415]
    good = await upload(gateway, staff, jpeg)
    assert good.status_code == 202, good.text
    assert await media_count(gateway) == 1
    assert leftovers(gateway) == []
