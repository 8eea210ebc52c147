"""Media as files under one folder: the embedded default, and single-host deployments.

An object is the file ROOT/KEY. Links are signed gateway paths,
`/media/files/KEY?expires=…&type=…&signature=…`, that the gateway checks with
`open_signed` before streaming the file. The HMAC secret lives in ROOT/.signing-key, so
every gateway sharing the folder accepts the others' links. Names starting with a dot
(the key, temporary files) can never be keys, so no link ever reaches them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import hmac
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlencode

from realtime.media_store import MissingObject, check_content_type, check_expires, check_key

SIGNING_KEY_FILE = ".signing-key"
SECRET_BYTES = 32
URL_PREFIX = "/media/files/"
# Children's photos: readable by the service's user only.
FILE_MODE = 0o600
DIR_MODE = 0o700
_COPY_BUFFER = 1024 * 1024
_UNIX_TIME = re.compile(r"[0-9]{1,12}")


class InvalidLink(PermissionError):
    """A media link that is forged, altered, malformed or expired."""


class FilesystemStore:
    """Implements realtime.media_store.MediaStore on a local (or shared) folder."""

    def __init__(self, root: Path) -> None:
        """Blocking: creates ROOT and its signing key if need be. From async code, use `create`."""
        self.root = root
        root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self._secret = _load_or_create_secret(root / SIGNING_KEY_FILE)

    @classmethod
    async def create(cls, root: Path) -> FilesystemStore:
        return await asyncio.to_thread(cls, root)

    async def put(self, key: str, source: Path, content_type: str) -> None:
        # The type is not stored: every link states the type it serves (`url`).
        check_content_type(content_type)
        path = self._path(key)
        await asyncio.to_thread(self._put, path, source)

    async def fetch(self, key: str, destination: Path) -> None:
        path = self._path(key)
        await asyncio.to_thread(_fetch, key, path, destination)

    async def delete(self, keys: Collection[str]) -> None:
        if isinstance(keys, str):
            raise TypeError("delete takes a collection of keys, not one key")
        paths = [self._path(key) for key in keys]  # every key checked before any file is touched
        await asyncio.to_thread(_unlink_all, paths)

    async def url(self, key: str, content_type: str, expires: int) -> str:
        check_key(key)
        check_content_type(content_type)
        check_expires(expires)
        expires_at = str(int(time.time()) + expires)
        query = urlencode(
            {"expires": expires_at, "type": content_type, "signature": self._sign(key, expires_at, content_type)}
        )
        return f"{URL_PREFIX}{key}?{query}"

    async def size(self, key: str) -> int | None:
        path = self._path(key)
        return await asyncio.to_thread(_size, path)

    def open_signed(self, key: str, expires: str, content_type: str, signature: str, now: float | None = None) -> Path:
        """The file a link made by `url` (of any store on this folder) serves.

        `expires`, `content_type` and `signature` are the link's query parameters, as
        received. InvalidLink unless the link is intact and unexpired; MissingObject if the
        object has been deleted since. Only I/O: one stat of the file.
        """
        try:
            check_key(key)
        except ValueError:
            raise InvalidLink("not a media link") from None
        if _UNIX_TIME.fullmatch(expires) is None or not content_type.isascii() or not signature.isascii():
            raise InvalidLink("not a media link")
        if not hmac.compare_digest(self._sign(key, expires, content_type), signature):
            raise InvalidLink("this media link has been altered")
        if (time.time() if now is None else now) >= int(expires):
            raise InvalidLink("this media link has expired")
        path = self.root / key
        if not path.is_file():
            raise MissingObject(key)
        return path

    def _sign(self, key: str, expires: str, content_type: str) -> str:
        # Unambiguous: neither a key nor a unix time can hold a newline.
        message = f"{key}\n{expires}\n{content_type}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _put(self, path: Path, source: Path) -> None:
        # Opened first: a missing source fails before anything is created.
        with source.open("rb") as src:
            self._make_dirs(path.parent)
            _write_atomically(path, lambda out: shutil.copyfileobj(src, out, _COPY_BUFFER))

    def _make_dirs(self, directory: Path) -> None:
        # Not os.makedirs: it gives its `mode` to the last folder only, the others get the umask's.
        current = self.root
        for part in directory.relative_to(self.root).parts:
            current = current / part
            with contextlib.suppress(FileExistsError):
                current.mkdir(mode=DIR_MODE)


def _fetch(key: str, path: Path, destination: Path) -> None:
    try:
        src = path.open("rb")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise MissingObject(key) from None
    with src:
        _write_atomically(destination, lambda out: shutil.copyfileobj(src, out, _COPY_BUFFER))


def _size(path: Path) -> int | None:
    try:
        status = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        # A folder under that name holds other keys, not this one: nothing to delete.
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
            path.unlink()


def _write_atomically(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Write `path` through a temporary file beside it: readers see the old file or the
    whole new one, never half of it, and a crash leaves no half file under the name."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0o600
    try:
        with os.fdopen(fd, "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _load_or_create_secret(path: Path) -> bytes:
    """The folder's signing secret, made on first use. Of several processes starting at once
    exactly one secret wins, and every process reads that one."""
    if path.exists():
        return _read_secret(path)
    fd, temp = tempfile.mkstemp(prefix=f"{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0o600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(SECRET_BYTES))
            out.flush()
            os.fsync(out.fileno())
        try:
            # Exclusive like O_EXCL (fails if the name exists), but the file appears complete:
            # a process that loses the race never reads a half-written secret.
            os.link(temp, path)
        except FileExistsError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            # A filesystem without hard links (some FUSE and SMB mounts).
            _create_exclusive(path)
    finally:
        os.unlink(temp)
    return _read_secret(path)


def _create_exclusive(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.write(fd, secrets.token_bytes(SECRET_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_secret(path: Path) -> bytes:
    for _ in range(50):
        secret = path.read_bytes()
        if len(secret) == SECRET_BYTES:
            return secret
        if len(secret) > SECRET_BYTES:
            break
        # Created with O_EXCL by another process that has not written it yet.
        time.sleep(0.02)
    raise RuntimeError(
        f"{path} is not a {SECRET_BYTES}-byte signing key: remove it to have a new one made "
        "(links already given out then stop working)"
    )
