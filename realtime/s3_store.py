"""Media as objects in an S3 bucket (AWS, or any S3-compatible service), through aioboto3.

The store owns one client for its life. Every call is bounded by botocore's timeouts and
retried by its standard retry mode; what still fails is `Unavailable`. Objects are
private: uploaded with no ACL, in a bucket that blocks public access when the store
created it. Clients get presigned GET links, never a public URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.manager import TransferConfig

from realtime.errors import Unavailable
from realtime.media_store import MissingObject, check_content_type, check_expires, check_key
from realtime.settings import Settings

if TYPE_CHECKING:
    from aiobotocore.response import StreamingBody
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.literals import BucketLocationConstraintType
    from types_aiobotocore_s3.type_defs import ObjectIdentifierTypeDef

log = logging.getLogger("procreche.media")

CONNECT_TIMEOUT = 5
READ_TIMEOUT = 60
DELETE_BATCH = 1000  # the most DeleteObjects takes at once
_CHUNK = 1024 * 1024
# Uploads from 8 MiB on go in 8 MiB parts. aioboto3 reads parts ahead of the network into
# a queue, 100 deep by default: a short queue keeps a large video out of memory
# (at most about (4 + 4 + 1) × 8 MiB per upload).
# (s3transfer's TransferConfig, not boto3's subclass: that one has no type stubs, and adds
# only aliases of these names.)
_TRANSFER = TransferConfig(
    multipart_threshold=8 * 1024 * 1024,
    multipart_chunksize=8 * 1024 * 1024,
    max_request_concurrency=4,
    max_io_queue_size=4,
)
_NO_OBJECT = frozenset({"404", "NoSuchKey", "NotFound"})
_NO_BUCKET = frozenset({"404", "NoSuchBucket", "NotFound"})


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _service(action: str) -> Iterator[None]:
    """Turn a failure of the storage service into Unavailable. The message names the kind of
    failure, not its text (which can hold the endpoint's address): clients see it."""
    try:
        yield
    except ClientError as exc:
        raise Unavailable(f"media storage is unavailable: {action} failed ({_code(exc) or 'error'})") from exc
    except BotoCoreError as exc:
        raise Unavailable(f"media storage is unavailable: {action} failed ({type(exc).__name__})") from exc


class S3Store:
    """Implements realtime.media_store.MediaStore on one bucket. Open it with `open_s3_store`."""

    def __init__(self, client: S3Client, bucket: str, signer: S3Client | None = None) -> None:
        self._client = client
        # Links are signed for the host clients will use (S3_PUBLIC_URL), which may not be
        # the endpoint the servers reach (a reverse proxy in front of MinIO).
        self._signer = signer or client
        self._bucket = bucket

    @property
    def bucket(self) -> str:
        return self._bucket

    async def put(self, key: str, source: Path, content_type: str) -> None:
        check_key(key)
        check_content_type(content_type)
        with _service("upload"):
            # Streamed from the file (aiofiles, in threads), in parts when large. No ACL: private.
            await self._client.upload_file(
                str(source), self._bucket, key, ExtraArgs={"ContentType": content_type}, Config=_TRANSFER
            )

    async def fetch(self, key: str, destination: Path) -> None:
        check_key(key)
        with _service("download"):
            try:
                response = await self._client.get_object(Bucket=self._bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in _NO_OBJECT:
                    raise MissingObject(key) from None
                raise
        body = response["Body"]
        # Not `async with … as body`: that binds the raw aiohttp response, without the
        # timeout and length checks of `body.read`.
        async with body:
            out, temp = await asyncio.to_thread(_open_beside, destination)
            try:
                while chunk := await _read_chunk(body):
                    await asyncio.to_thread(out.write, chunk)
                await asyncio.to_thread(_finish, out, temp, destination)
            except BaseException:
                await asyncio.to_thread(_discard, out, temp)
                raise

    async def delete(self, keys: Collection[str]) -> None:
        if isinstance(keys, str):
            raise TypeError("delete takes a collection of keys, not one key")
        checked = [check_key(key) for key in keys]  # every key checked before any request
        targets: list[ObjectIdentifierTypeDef] = []
        for key in dict.fromkeys(checked):
            targets.extend(await self._versions(key))
        for start in range(0, len(targets), DELETE_BATCH):
            await self._delete_batch(targets[start : start + DELETE_BATCH])

    async def url(self, key: str, content_type: str, expires: int) -> str:
        check_key(key)
        check_content_type(content_type)
        check_expires(expires)
        with _service("signing a link"):
            return await self._signer.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self._bucket,
                    "Key": key,
                    "ResponseContentType": content_type,
                    "ResponseContentDisposition": "inline",
                },
                ExpiresIn=expires,
            )

    async def size(self, key: str) -> int | None:
        check_key(key)
        with _service("reading an object's size"):
            try:
                response = await self._client.head_object(Bucket=self._bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in _NO_OBJECT:
                    return None
                raise
        return response["ContentLength"]

    async def _versions(self, key: str) -> list[ObjectIdentifierTypeDef]:
        """Every version and delete marker of exactly `key`: deleting only the current
        version of a versioned bucket would keep the photo, hidden behind a marker."""
        found: list[ObjectIdentifierTypeDef] = []
        paginator = self._client.get_paginator("list_object_versions")
        with _service("listing versions"):
            try:
                # The delimiter folds keys under `key/` into one prefix instead of listing them.
                async for page in paginator.paginate(Bucket=self._bucket, Prefix=key, Delimiter="/"):
                    found.extend(
                        {"Key": key, "VersionId": version["VersionId"]}
                        for version in page.get("Versions", [])
                        if version.get("Key") == key and "VersionId" in version
                    )
                    found.extend(
                        {"Key": key, "VersionId": marker["VersionId"]}
                        for marker in page.get("DeleteMarkers", [])
                        if marker.get("Key") == key and "VersionId" in marker
                    )
            except ClientError as exc:
                if _code(exc) != "NotImplemented":
                    raise
                # A service without versioning: the key is the only version.
                return [{"Key": key}]
        return found

    async def _delete_batch(self, batch: list[ObjectIdentifierTypeDef]) -> None:
        with _service("delete"):
            response = await self._client.delete_objects(Bucket=self._bucket, Delete={"Objects": batch, "Quiet": True})
        # Gone already (another delete got there first) is what we wanted.
        errors = [e for e in response.get("Errors", []) if e.get("Code") not in ("NoSuchKey", "NoSuchVersion")]
        if errors:
            log.warning("S3 DeleteObjects refused %d objects, first: %s", len(errors), errors[0])
            raise Unavailable(f"media storage is unavailable: delete failed ({errors[0].get('Code', 'error')})")

    async def _ensure_bucket(self, region: str) -> None:
        """Create the bucket if it does not exist, blocking all public access to it."""
        with _service("opening the bucket"):
            try:
                await self._client.head_bucket(Bucket=self._bucket)
                return
            except ClientError as exc:
                if _code(exc) not in _NO_BUCKET:
                    raise
            try:
                if region == "us-east-1":  # the one region that refuses to be named
                    await self._client.create_bucket(Bucket=self._bucket)
                else:
                    await self._client.create_bucket(
                        Bucket=self._bucket,
                        CreateBucketConfiguration={"LocationConstraint": cast("BucketLocationConstraintType", region)},
                    )
            except ClientError as exc:
                # Another process created it at the same moment: block public access anyway.
                if _code(exc) != "BucketAlreadyOwnedByYou":
                    raise
            await self._client.put_public_access_block(
                Bucket=self._bucket,
                PublicAccessBlockConfiguration={
                    "BlockPublicAcls": True,
                    "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True,
                    "RestrictPublicBuckets": True,
                },
            )
        log.info("created the S3 bucket %s, with all public access blocked", self._bucket)


@asynccontextmanager
async def open_s3_store(settings: Settings) -> AsyncIterator[S3Store]:
    """The store on `settings.s3_bucket`, its bucket created if need be; Unavailable if the
    service cannot be reached."""
    if not settings.s3_bucket:
        raise ValueError("no S3 bucket is configured (S3_BUCKET)")
    config = AioConfig(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"max_attempts": 3, "mode": "standard"},
        signature_version="s3v4",
        # S3-compatible services (MinIO, Ceph…) seldom resolve bucket subdomains.
        s3={"addressing_style": "path"} if settings.s3_endpoint_url else None,
    )
    # No credentials given: boto's usual chain (environment, config files, instance profile).
    session = aioboto3.Session()

    def client(endpoint_url: str | None) -> Any:
        return session.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key,
            config=config,
        )

    async with contextlib.AsyncExitStack() as stack:
        servers: S3Client = await stack.enter_async_context(client(settings.s3_endpoint_url))
        signer: S3Client | None = None
        if settings.s3_public_url:
            # Presigning makes no request: this client only signs links for the public host.
            signer = await stack.enter_async_context(client(settings.s3_public_url))
        store = S3Store(servers, settings.s3_bucket, signer)
        await store._ensure_bucket(settings.s3_region)
        yield store


async def _read_chunk(body: StreamingBody) -> bytes:
    """Up to _CHUNK bytes (b"" at the end): aiohttp hands out far smaller pieces, and each
    write costs a trip to a thread."""
    chunk = bytearray()
    with _service("download"):
        while len(chunk) < _CHUNK and (piece := await body.read(_CHUNK - len(chunk))):
            chunk += piece
    return bytes(chunk)


def _open_beside(destination: Path) -> tuple[IO[bytes], str]:
    # Beside the destination, so that os.replace is a rename: a failed download leaves no half file.
    fd, temp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    return os.fdopen(fd, "wb"), temp


def _finish(out: IO[bytes], temp: str, destination: Path) -> None:
    with out:
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, destination)


def _discard(out: IO[bytes], temp: str) -> None:
    out.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
