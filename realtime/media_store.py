"""Where media files live: the interface every store offers, and the choice of store.

Two stores implement it: `FilesystemStore` (realtime/fs_store.py), files under a folder,
for the embedded default and single-host deployments; and `S3Store` (realtime/s3_store.py),
objects in an S3 bucket. Neither ever makes an object public: clients get a link that
expires (`url`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

from realtime.settings import Settings

MAX_KEY_LENGTH = 512
# The longest a link may last: the most an S3 presigned URL allows (SigV4). The filesystem
# store keeps to it too, so that the choice of store changes nothing for callers.
MAX_LINK_SECONDS = 7 * 24 * 3600
# Lower case only: keys must mean the same on case-insensitive filesystems and in S3.
_KEY = re.compile(r"[a-z0-9][a-z0-9._-]*(?:/[a-z0-9][a-z0-9._-]*)*")
# type/subtype and parameters, in printable ASCII: the type ends up in a response header.
_CONTENT_TYPE = re.compile(r"[!-~]+/[!-~]+(?:;[ -~]*)?")


class MissingObject(LookupError):
    """No object is stored under that key."""


def check_key(key: str) -> str:
    """The key itself, if it is one a store may use; ValueError otherwise.

    Keys are built by the server from ids, never from file names: this is defence in
    depth against path traversal (a `..` segment, an absolute path, a backslash, a NUL).
    """
    # fullmatch, not `$`: `$` also matches before a trailing newline.
    if len(key) > MAX_KEY_LENGTH or _KEY.fullmatch(key) is None or ".." in key.split("/"):
        raise ValueError(f"not a valid media key: {key[:80]!r}")
    return key


def check_content_type(content_type: str) -> str:
    """The type itself, if it can be sent as a Content-Type header; ValueError otherwise."""
    if _CONTENT_TYPE.fullmatch(content_type) is None:
        raise ValueError(f"not a content type: {content_type[:80]!r}")
    return content_type


def check_expires(expires: int) -> int:
    """The life of a link, in seconds, if a store can make one that long; ValueError otherwise."""
    if not 0 < expires <= MAX_LINK_SECONDS:
        raise ValueError(f"a link lasts from 1 to {MAX_LINK_SECONDS} seconds, not {expires}")
    return expires


class MediaStore(Protocol):
    """Every method checks its arguments (`check_key`, `check_content_type`,
    `check_expires`) before any I/O, and raises ValueError for a bad one."""

    async def put(self, key: str, source: Path, content_type: str) -> None:
        """Store the local file `source` under `key`, replacing any object there."""
        ...

    async def fetch(self, key: str, destination: Path) -> None:
        """Copy the object into the local file `destination`; MissingObject if there is none."""
        ...

    async def delete(self, keys: Collection[str]) -> None:
        """Remove these objects (every version of them); keys with no object are ignored."""
        ...

    async def url(self, key: str, content_type: str, expires: int) -> str:
        """A link serving the object, to whoever holds it, for `expires` seconds, with that
        Content-Type and `Content-Disposition: inline`."""
        ...

    async def size(self, key: str) -> int | None:
        """The object's size in bytes, or None if there is none."""
        ...


@asynccontextmanager
async def open_media_store(settings: Settings) -> AsyncIterator[MediaStore]:
    """The S3 store when a bucket is configured, the filesystem store otherwise."""
    # Imported here: the stores import this module (a cycle otherwise), and a deployment
    # on disk need not load aioboto3.
    if settings.s3_bucket:
        from realtime.s3_store import open_s3_store

        async with open_s3_store(settings) as store:
            yield store
    else:
        from realtime.fs_store import FilesystemStore

        yield await FilesystemStore.create(settings.media_root)
