"""The type of an upload is decided from its first bytes, never from its name or declared type."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from realtime.media_types import SNIFF_BYTES, MediaType, sniff


def encoded(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, fmt)
    return out.getvalue()[:SNIFF_BYTES]


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\x00" * 16


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (encoded("JPEG"), MediaType.JPEG),
        (encoded("PNG"), MediaType.PNG),
        (encoded("WEBP"), MediaType.WEBP),
        (ftyp(b"heic", b"mif1", b"heic"), MediaType.HEIC),
        (ftyp(b"mif1", b"mif1", b"heix"), MediaType.HEIC),
        (ftyp(b"isom", b"isom", b"avc1"), MediaType.MP4),
        (ftyp(b"mp42", b"mp41"), MediaType.MP4),
        (ftyp(b"XAVC", b"mp42"), MediaType.MP4),
        (ftyp(b"qt  ", b"qt  "), MediaType.MOV),
        (b"\x00\x00\x00\x08wide\x00\x00\x00\x10mdat", MediaType.MOV),
    ],
)
def test_accepted_types_are_recognised_by_content(head: bytes, expected: MediaType) -> None:
    assert sniff(head) is expected


@pytest.mark.parametrize(
    "head",
    [
        b"GIF89a\x01\x00\x01\x00",
        b"%PDF-1.7\n",
        b"hello, this is a text file named photo.jpg\n",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        ftyp(b"avif", b"mif1", b"avif"),
        ftyp(b"mif1", b"mif1", b"avif"),
        ftyp(b"M4A ", b"M4A "),
        b"\x00\x00\x00\x07ftypxx",
        b"",
        b"\xff\xd8",
    ],
)
def test_everything_else_is_refused(head: bytes) -> None:
    assert sniff(head) is None


def test_kinds() -> None:
    assert {t.kind for t in MediaType} == {"image", "video"}
    assert MediaType.HEIC.kind == "image"
    assert MediaType.MOV.kind == "video"
