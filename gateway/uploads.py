"""An upload received as it streams: the multipart body is parsed chunk by chunk and the
part `file` written to a spool file on disk, so no upload is ever held whole in memory.

The type is sniffed from the file's first bytes as soon as they arrive; an unsupported
type, or a file over the size cap, is refused at that moment, without reading the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MAX_BOUNDARY_LENGTH, MultipartParser, parse_options_header
from starlette.requests import Request

from realtime.errors import BadRequest, TooLarge, UnsupportedType
from realtime.media_types import SNIFF_BYTES, MediaType, sniff

FILE_FIELD = "file"
# Written to disk in slices of this size: few thread hops, bounded memory per upload.
FLUSH_BYTES = 1024 * 1024
MAX_PARTS = 8
MAX_FIELD_BYTES = 1024
# What multipart framing adds to a file, at most: a body declared larger than the cap by
# more than this is refused before it is read.
MULTIPART_SLACK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Upload:
    path: Path
    size: int
    media_type: MediaType


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"the file is larger than {limit} bytes", code="media_too_large")


@dataclass
class _Receiver:
    """The parser's callbacks: they only collect; the awaiting happens in `receive`."""

    max_bytes: int
    parts: int = 0
    header_name: bytes = b""
    header_value: bytes = b""
    disposition: bytes = b""
    in_file: bool = False
    field_bytes: int = 0
    files: int = 0
    size: int = 0
    head: bytearray = field(default_factory=bytearray)
    pending: bytearray = field(default_factory=bytearray)
    media_type: MediaType | None = None
    ended: bool = False

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise BadRequest(f"at most {MAX_PARTS} parts in an upload", code="bad_request")
        self.disposition, self.in_file, self.field_bytes = b"", False, 0

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]
        if len(self.header_value) > MAX_FIELD_BYTES:
            raise BadRequest("a part header is too long", code="bad_request")

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        # The file name and declared Content-Type are not looked at: the content decides.
        self.in_file = options.get(b"name") == FILE_FIELD.encode()
        if self.in_file:
            self.files += 1
            if self.files > 1:
                raise BadRequest("one file per upload", code="bad_request")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self.in_file:
            # Other fields are ignored, but bounded.
            self.field_bytes += end - start
            if self.field_bytes > MAX_FIELD_BYTES:
                raise BadRequest("a form field is too long", code="bad_request")
            return
        self.size += end - start
        if self.size > self.max_bytes:
            raise _too_large(self.max_bytes)
        self.pending += data[start:end]
        if self.media_type is None and len(self.head) < SNIFF_BYTES:
            self.head += data[start : start + SNIFF_BYTES - len(self.head)]
            if len(self.head) >= SNIFF_BYTES:
                self._sniff()

    def on_part_end(self) -> None:
        if self.in_file and self.size == 0:
            raise BadRequest("the file is empty", code="bad_request")
        if self.in_file and self.media_type is None:
            self._sniff()

    def on_end(self) -> None:
        self.ended = True

    def _sniff(self) -> None:
        self.media_type = sniff(bytes(self.head))
        if self.media_type is None:
            raise UnsupportedType(
                "the file is not a JPEG, PNG, WebP or HEIC photo, nor an MP4 or MOV video",
                code="media_type_unsupported",
            )


def _open_spool(directory: Path) -> tuple[BinaryIO, Path]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(dir=directory, prefix="upload-")
    return os.fdopen(fd, "wb"), Path(name)


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def receive(request: Request, spool_dir: Path, max_bytes: int) -> AsyncIterator[Upload]:
    """The request's file, spooled to disk; the spool file is deleted on exit."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    # RFC 2046 allows 70 characters; python-multipart refuses more than 256 when constructed.
    if content_type != b"multipart/form-data" or not boundary or len(boundary) > MAX_BOUNDARY_LENGTH:
        raise BadRequest("send the file as multipart/form-data, in the field 'file'", code="bad_request")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + MULTIPART_SLACK:
        # Refused before a byte of the body is read.
        raise _too_large(max_bytes)
    receiver = _Receiver(max_bytes)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": receiver.on_part_begin,
            "on_part_data": receiver.on_part_data,
            "on_part_end": receiver.on_part_end,
            "on_header_field": receiver.on_header_field,
            "on_header_value": receiver.on_header_value,
            "on_header_end": receiver.on_header_end,
            "on_headers_finished": receiver.on_headers_finished,
            "on_end": receiver.on_end,
        },
    )
    # The whole body is bounded like a declared one: without a Content-Length, headers of
    # parts, ignored fields or an epilogue after the closing boundary must not stream forever.
    body_cap, received = max_bytes + MULTIPART_SLACK, 0
    spool, path = await asyncio.to_thread(_open_spool, spool_dir)
    try:
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > body_cap:
                    raise _too_large(max_bytes)
                parser.write(chunk)
                if len(receiver.pending) >= FLUSH_BYTES:
                    data, receiver.pending = bytes(receiver.pending), bytearray()
                    await asyncio.to_thread(spool.write, data)
            parser.finalize()
            if not receiver.ended:
                # python-multipart's finalize() does not check it: a body cut before its
                # closing boundary would pass for a whole file.
                raise BadRequest("the multipart body is incomplete", code="bad_request")
        except FormParserError:
            raise BadRequest("the multipart body is malformed", code="bad_request") from None
        if receiver.files == 0 or receiver.media_type is None:
            raise BadRequest("no file in the field 'file'", code="bad_request")
        await asyncio.to_thread(spool.write, bytes(receiver.pending))
        await asyncio.to_thread(spool.close)
        yield Upload(path, receiver.size, receiver.media_type)
    finally:
        await asyncio.to_thread(spool.close)
        await asyncio.to_thread(_unlink, path)
