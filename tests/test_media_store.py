"""The media store contract, run against both stores: files under a folder, and S3 (moto's
server on 127.0.0.1). Then what only one of them promises: signed gateway links and private
files on disk; a private bucket, and versions deleted with the object, on S3."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import stat
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import aioboto3
import httpx
import pytest
import pytest_asyncio
from moto.server import ThreadedMotoServer

from realtime.errors import Unavailable
from realtime.fs_store import SIGNING_KEY_FILE, URL_PREFIX, FilesystemStore, InvalidLink
from realtime.media_store import MAX_LINK_SECONDS, MediaStore, MissingObject, check_key, open_media_store
from realtime.s3_store import S3Store, open_s3_store
from realtime.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

BAD_KEYS = ["../etc/passwd", "a/../b", "/abs", "A", "a//b", "", "x" * 600, "a\\b", "a/b\x00", "a/", ".hidden", "a\n"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_settings(tmp_path: Path, endpoint: str, bucket: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        s3_bucket=bucket,
        s3_endpoint_url=endpoint,
        s3_region="us-east-1",
        s3_access_key_id="test",
        s3_secret_access_key="test",
    )


def new_bucket() -> str:
    # Each test its own bucket: moto's server keeps every bucket for the module's life.
    return f"test-{secrets.token_hex(6)}"


@pytest_asyncio.fixture(params=["filesystem", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, moto_endpoint: str) -> AsyncIterator[MediaStore]:
    if request.param == "filesystem":
        settings = Settings(data_dir=tmp_path)
    else:
        settings = s3_settings(tmp_path, moto_endpoint, new_bucket())
    async with open_media_store(settings) as opened:
        yield opened


@asynccontextmanager
async def raw_s3(endpoint: str) -> AsyncIterator[S3Client]:
    """A client of our own, to look at the bucket behind the store's back."""
    async with aioboto3.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ) as client:
        yield client


def write_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def served(store: MediaStore, link: str) -> tuple[bytes, str]:
    """What a client holding `link` gets: the body and its Content-Type."""
    if isinstance(store, FilesystemStore):
        parts = urlsplit(link)
        assert parts.path.startswith(URL_PREFIX)
        query = parse_qs(parts.query)
        path = store.open_signed(
            parts.path.removeprefix(URL_PREFIX), query["expires"][0], query["type"][0], query["signature"][0]
        )
        return path.read_bytes(), query["type"][0]
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(link)
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == "inline"
    return response.content, response.headers["content-type"]


# The contract, on both stores.


# aioboto3's upload_file hands each part (and a whole file under the multipart threshold)
# to aiohttp as a bytearray; aiohttp warns of any raw body above 1 MiB, in case writing it
# stalls the loop. Only a copy into the socket's buffer: ignored for the uploads of over
# 1 MiB, the only ones that warn.
LARGE_BODY = "ignore:Sending a large body directly with raw bytes might lock the event loop:ResourceWarning"


# 9 MiB: a multipart upload on S3 (aioboto3's threshold: 8 MiB).
@pytest.mark.parametrize(
    "length", [0, 100_000, pytest.param(9 * 1024 * 1024, marks=pytest.mark.filterwarnings(LARGE_BODY))]
)
async def test_put_then_fetch_gives_the_same_bytes(
    store: MediaStore, tmp_path: Path, moto_endpoint: str, length: int
) -> None:
    data = os.urandom(length)
    await store.put("media/p1/original", write_file(tmp_path / "upload", data), "video/mp4")
    if isinstance(store, S3Store):
        async with raw_s3(moto_endpoint) as client:
            head = await client.head_object(Bucket=store.bucket, Key="media/p1/original")
        assert head["ContentType"] == "video/mp4"
        # The ETag of a multipart upload ends with its number of parts.
        assert head["ETag"].endswith('-2"') == (length > 8 * 1024 * 1024)
    destination = tmp_path / "download"
    await store.fetch("media/p1/original", destination)
    assert destination.read_bytes() == data
    assert await store.size("media/p1/original") == length


async def test_put_overwrites(store: MediaStore, tmp_path: Path) -> None:
    await store.put("m1", write_file(tmp_path / "first", b"first version, longer"), "image/jpeg")
    await store.put("m1", write_file(tmp_path / "second", b"second"), "image/jpeg")
    await store.fetch("m1", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"second"
    assert await store.size("m1") == len(b"second")


async def test_fetch_replaces_the_destination(store: MediaStore, tmp_path: Path) -> None:
    await store.put("m1", write_file(tmp_path / "source", b"new"), "image/png")
    destination = write_file(tmp_path / "out", b"an older, longer file")
    await store.fetch("m1", destination)
    assert destination.read_bytes() == b"new"


async def test_a_missing_object(store: MediaStore, tmp_path: Path) -> None:
    with pytest.raises(MissingObject):
        await store.fetch("nothing/here", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert await store.size("nothing/here") is None
    await store.delete(["nothing/here", "nothing/either"])
    await store.delete([])


async def test_delete(store: MediaStore, tmp_path: Path) -> None:
    source = write_file(tmp_path / "source", b"photo")
    await store.put("s1/m1", source, "image/jpeg")
    await store.put("s1/m2", source, "image/jpeg")
    await store.put("s1/m3", source, "image/jpeg")
    await store.delete(["s1/m1", "s1/m2", "s1/never"])
    for key in ("s1/m1", "s1/m2"):
        with pytest.raises(MissingObject):
            await store.fetch(key, tmp_path / "out")
        assert await store.size(key) is None
    assert await store.size("s1/m3") == len(b"photo")
    await store.delete(["s1/m1"])  # again: nothing to do, and no error


async def test_a_link_serves_the_object_with_its_type(store: MediaStore, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    await store.put("s1/m1/poster", write_file(tmp_path / "source", data), "application/octet-stream")
    body, content_type = await served(store, await store.url("s1/m1/poster", "image/webp", 300))
    assert body == data
    assert content_type == "image/webp"


async def test_a_link_to_a_deleted_object_serves_nothing(store: MediaStore, tmp_path: Path) -> None:
    await store.put("m1", write_file(tmp_path / "source", b"photo"), "image/jpeg")
    link = await store.url("m1", "image/jpeg", 300)
    await store.delete(["m1"])
    if isinstance(store, FilesystemStore):
        with pytest.raises(MissingObject):
            await served(store, link)
    else:
        async with httpx.AsyncClient(trust_env=False) as http:
            # 404, or 403 where the signer may not list the bucket (moto answers 403).
            assert (await http.get(link)).status_code in (403, 404)


@pytest.mark.parametrize("key", BAD_KEYS)
def test_check_key_refuses(key: str) -> None:
    with pytest.raises(ValueError, match="not a valid media key"):
        check_key(key)


@pytest.mark.parametrize("key", ["a", "0", "s1/m1/original", "media/01jd-x_y.v2/poster.jpg", "x" * 512])
def test_check_key_accepts(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_every_method_refuses_a_bad_key_before_any_io(store: MediaStore, tmp_path: Path, key: str) -> None:
    kept = write_file(tmp_path / "source", b"kept")
    await store.put("kept", kept, "image/jpeg")
    # A source that does not exist and a destination in no folder: I/O would fail otherwise.
    with pytest.raises(ValueError, match="not a valid media key"):
        await store.put(key, tmp_path / "no-such-file", "image/jpeg")
    with pytest.raises(ValueError, match="not a valid media key"):
        await store.fetch(key, tmp_path / "no-such-folder" / "out")
    with pytest.raises(ValueError, match="not a valid media key"):
        await store.size(key)
    with pytest.raises(ValueError, match="not a valid media key"):
        await store.url(key, "image/jpeg", 60)
    with pytest.raises(ValueError, match="not a valid media key"):
        await store.delete(["kept", key])
    assert await store.size("kept") == len(b"kept")  # the good key was not deleted either


@pytest.mark.parametrize("content_type", ["image/jpeg\r\nSet-Cookie: x=1", "jpeg", "", "image/jpé"])
async def test_a_bad_content_type_is_refused(store: MediaStore, tmp_path: Path, content_type: str) -> None:
    source = write_file(tmp_path / "source", b"photo")
    with pytest.raises(ValueError, match="not a content type"):
        await store.put("m1", source, content_type)
    assert await store.size("m1") is None
    await store.put("m1", source, "image/jpeg")
    with pytest.raises(ValueError, match="not a content type"):
        await store.url("m1", content_type, 60)


@pytest.mark.parametrize("expires", [0, -5, MAX_LINK_SECONDS + 1])
async def test_a_link_lasts_a_second_to_a_week(store: MediaStore, expires: int) -> None:
    with pytest.raises(ValueError, match="seconds"):
        await store.url("m1", "image/jpeg", expires)
    assert await store.url("m1", "image/jpeg", MAX_LINK_SECONDS)


async def test_delete_takes_a_collection_not_a_key(store: MediaStore) -> None:
    with pytest.raises(TypeError):
        await store.delete("m1")


async def test_open_media_store_picks_the_store(tmp_path: Path, moto_endpoint: str) -> None:
    async with open_media_store(Settings(data_dir=tmp_path)) as on_disk:
        assert isinstance(on_disk, FilesystemStore)
        assert on_disk.root == tmp_path / "media"
    async with open_media_store(s3_settings(tmp_path, moto_endpoint, new_bucket())) as on_s3:
        assert isinstance(on_s3, S3Store)


# The filesystem store.


@pytest_asyncio.fixture
async def fs_store(tmp_path: Path) -> FilesystemStore:
    return await FilesystemStore.create(tmp_path / "media")


def link_parts(link: str) -> tuple[str, str, str, str]:
    parts = urlsplit(link)
    query = parse_qs(parts.query, strict_parsing=True)
    assert sorted(query) == ["expires", "signature", "type"]
    return parts.path.removeprefix(URL_PREFIX), query["expires"][0], query["type"][0], query["signature"][0]


async def test_fs_link_expires(fs_store: FilesystemStore, tmp_path: Path) -> None:
    await fs_store.put("m1", write_file(tmp_path / "source", b"photo"), "image/jpeg")
    key, expires, content_type, signature = link_parts(await fs_store.url("m1", "image/jpeg", 1))
    assert int(expires) <= time.time() + 1
    assert fs_store.open_signed(key, expires, content_type, signature, now=time.time()) == fs_store.root / "m1"
    with pytest.raises(InvalidLink, match="expired"):
        fs_store.open_signed(key, expires, content_type, signature, now=time.time() + 2)


async def test_fs_refuses_an_altered_link(fs_store: FilesystemStore, tmp_path: Path) -> None:
    source = write_file(tmp_path / "source", b"photo")
    await fs_store.put("s1/m1", source, "image/jpeg")
    await fs_store.put("s1/m2", source, "image/jpeg")
    key, expires, content_type, signature = link_parts(await fs_store.url("s1/m1", "image/jpeg", 300))
    fs_store.open_signed(key, expires, content_type, signature)  # intact: accepted
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    later = str(int(expires) + 3600)
    for altered in [
        (key, expires, content_type, flipped),
        (key, expires, content_type, signature.upper()),
        (key, expires, content_type, signature[:-1]),
        (key, expires, content_type, ""),
        (key, expires, content_type, "é" * 64),
        ("s1/m2", expires, content_type, signature),  # another object
        (key, expires, "text/html", signature),  # another type
        (key, later, content_type, signature),  # a longer life
        (key, "0" + expires, content_type, signature),
        (key, "soon", content_type, signature),
        (key, "-1", content_type, signature),
        (key, "", content_type, signature),
        ("../s1/m1", expires, content_type, signature),
        ("s1/../s1/m1", expires, content_type, signature),
    ]:
        with pytest.raises(InvalidLink):
            fs_store.open_signed(*altered)


async def test_fs_refuses_a_link_from_another_folder(tmp_path: Path) -> None:
    source = write_file(tmp_path / "source", b"photo")
    ours = await FilesystemStore.create(tmp_path / "ours")
    theirs = await FilesystemStore.create(tmp_path / "theirs")
    await ours.put("m1", source, "image/jpeg")
    await theirs.put("m1", source, "image/jpeg")
    with pytest.raises(InvalidLink):
        ours.open_signed(*link_parts(await theirs.url("m1", "image/jpeg", 300)))


async def test_fs_stores_on_one_folder_share_the_signing_key(tmp_path: Path) -> None:
    root = tmp_path / "media"
    # Several gateways starting at once: exactly one key is made, and all of them use it.
    stores = await asyncio.gather(*(FilesystemStore.create(root) for _ in range(8)))
    later = await FilesystemStore.create(root)
    await stores[0].put("m1", write_file(tmp_path / "source", b"photo"), "image/jpeg")
    for signer in [*stores, later]:
        link = link_parts(await signer.url("m1", "image/jpeg", 300))
        for verifier in [*stores, later]:
            assert verifier.open_signed(*link) == root / "m1"
    assert sorted(p.name for p in root.iterdir()) == [SIGNING_KEY_FILE, "m1"]  # no temporary file left


async def test_fs_files_are_private(fs_store: FilesystemStore, tmp_path: Path) -> None:
    source = write_file(tmp_path / "source", b"photo")
    source.chmod(0o644)
    await fs_store.put("s1/g2/m3", source, "image/jpeg")

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(fs_store.root / "s1/g2/m3") == 0o600
    assert mode(fs_store.root / "s1/g2") == 0o700
    assert mode(fs_store.root / "s1") == 0o700
    assert mode(fs_store.root) == 0o700
    assert mode(fs_store.root / SIGNING_KEY_FILE) == 0o600
    assert len((fs_store.root / SIGNING_KEY_FILE).read_bytes()) == 32


async def test_fs_put_of_a_missing_source_creates_nothing(fs_store: FilesystemStore, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await fs_store.put("s1/m1", tmp_path / "no-such-file", "image/jpeg")
    assert sorted(p.name for p in fs_store.root.iterdir()) == [SIGNING_KEY_FILE]


# The S3 store.


async def test_s3_link_states_its_life(tmp_path: Path, moto_endpoint: str) -> None:
    async with open_s3_store(s3_settings(tmp_path, moto_endpoint, new_bucket())) as store:
        assert "X-Amz-Expires=300" in await store.url("m1", "image/jpeg", 300)


async def test_s3_links_are_signed_for_the_public_host(tmp_path: Path, moto_endpoint: str) -> None:
    # The same moto server under another loopback name stands for the public host.
    public = moto_endpoint.replace("127.0.0.1", "localhost")
    settings = replace(s3_settings(tmp_path, moto_endpoint, new_bucket()), s3_public_url=public)
    async with open_s3_store(settings) as store:
        await store.put("s1/m1", write_file(tmp_path / "source", b"photo"), "image/jpeg")
        link = await store.url("s1/m1", "image/jpeg", 300)
    assert link.startswith(f"{public}/")
    async with httpx.AsyncClient() as http:
        served = await http.get(link)
    assert (served.status_code, served.content) == (200, b"photo")


async def test_s3_bucket_is_private(tmp_path: Path, moto_endpoint: str) -> None:
    bucket = new_bucket()
    async with open_s3_store(s3_settings(tmp_path, moto_endpoint, bucket)) as store:
        await store.put("s1/m1", write_file(tmp_path / "source", b"photo"), "image/jpeg")
        async with raw_s3(moto_endpoint) as client:
            block = (await client.get_public_access_block(Bucket=bucket))["PublicAccessBlockConfiguration"]
        assert block == {
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        }
        async with httpx.AsyncClient(trust_env=False) as http:
            anonymous = await http.get(f"{moto_endpoint}/{bucket}/s1/m1")
            signed = await http.get(await store.url("s1/m1", "image/jpeg", 60))
        assert anonymous.status_code == 403
        assert signed.status_code == 200  # the same request, signed: the object is there


async def test_s3_opens_an_existing_bucket(tmp_path: Path, moto_endpoint: str) -> None:
    bucket = new_bucket()
    async with open_s3_store(s3_settings(tmp_path, moto_endpoint, bucket)) as first:
        await first.put("m1", write_file(tmp_path / "source", b"photo"), "image/jpeg")
    async with open_s3_store(s3_settings(tmp_path, moto_endpoint, bucket)) as second:
        assert await second.size("m1") == len(b"photo")


async def test_s3_delete_removes_every_version(tmp_path: Path, moto_endpoint: str) -> None:
    bucket = new_bucket()
    async with raw_s3(moto_endpoint) as client:
        await client.create_bucket(Bucket=bucket)
        await client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        async with open_s3_store(s3_settings(tmp_path, moto_endpoint, bucket)) as store:
            await store.put("m1", write_file(tmp_path / "v1", b"first"), "image/jpeg")
            await store.put("m1", write_file(tmp_path / "v2", b"second"), "image/jpeg")
            await client.delete_object(Bucket=bucket, Key="m1")  # a delete marker
            await store.put("m1", write_file(tmp_path / "v3", b"third"), "image/jpeg")
            # Keys the prefix `m1` also matches: not to be touched.
            await store.put("m10", write_file(tmp_path / "other", b"other"), "image/jpeg")
            await store.put("m1/poster", write_file(tmp_path / "other", b"other"), "image/jpeg")
            before = await client.list_object_versions(Bucket=bucket, Prefix="m1")
            assert len([v for v in before.get("Versions", []) if v.get("Key") == "m1"]) == 3
            assert len([m for m in before.get("DeleteMarkers", []) if m.get("Key") == "m1"]) == 1

            await store.delete(["m1"])

            after = await client.list_object_versions(Bucket=bucket, Prefix="m1")
            assert [v.get("Key") for v in after.get("Versions", [])] == ["m1/poster", "m10"]
            assert after.get("DeleteMarkers", []) == []
            assert await store.size("m1") is None


async def test_s3_unreachable_is_unavailable(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unavailable, match="media storage is unavailable") as raised:
        async with open_s3_store(s3_settings(tmp_path, closed, new_bucket())):
            pass
    assert closed not in str(raised.value)  # clients see the message: no internal address
