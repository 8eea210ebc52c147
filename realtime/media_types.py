"""What an uploaded file is, decided from its first bytes (magic numbers), never from its
name or the type its uploader declared. Pure.

A file the sniffer accepts is only a candidate: the processing worker decodes it fully
with the decoder of that type and re-encodes it, so a file that merely starts like a JPEG
(a polyglot, a truncated file) is rejected there.
"""

from __future__ import annotations

from enum import StrEnum

# Enough for every signature below: an ISO-BMFF `ftyp` box lists its brands in its first
# few dozen bytes.
SNIFF_BYTES = 64

_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"})
_HEIF_GENERIC = frozenset({b"mif1", b"msf1"})
_MP4_BRANDS = frozenset(
    {b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"M4V ", b"M4VH", b"mmp4"}
)
# QuickTime files written before `ftyp` existed start directly with one of these atoms.
_QUICKTIME_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})


class MediaType(StrEnum):
    """The accepted types; the value is the MIME type."""

    JPEG = "image/jpeg"
    PNG = "image/png"
    WEBP = "image/webp"
    HEIC = "image/heic"
    MP4 = "video/mp4"
    MOV = "video/quicktime"

    @property
    def kind(self) -> str:
        """ "image" or "video"."""
        return self.value.split("/", 1)[0]


def _brands(head: bytes) -> tuple[bytes, frozenset[bytes]] | None:
    """An ISO-BMFF file's major and compatible brands, from its leading `ftyp` box."""
    if len(head) < 12 or head[4:8] != b"ftyp":
        return None
    size = int.from_bytes(head[0:4], "big")
    if size < 16:
        return None
    end = min(size, len(head))
    compatible = frozenset(head[i : i + 4] for i in range(16, end - 3, 4))
    return head[8:12], compatible


def sniff(head: bytes) -> MediaType | None:
    """The type of a file that starts with `head` (its first SNIFF_BYTES bytes), or None
    if it is none of the accepted types."""
    if head.startswith(b"\xff\xd8\xff"):
        return MediaType.JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return MediaType.PNG
    if head[0:4] == b"RIFF" and head[8:12] == b"WEBP":
        return MediaType.WEBP
    brands = _brands(head)
    if brands is not None:
        major, compatible = brands
        every = compatible | {major}
        if b"avif" in every or b"avis" in every:
            # AVIF shares HEIF's container; it is not one of the accepted types.
            return None
        if major in _HEIC_BRANDS or (major in _HEIF_GENERIC and every & _HEIC_BRANDS):
            return MediaType.HEIC
        if major == b"qt  ":
            return MediaType.MOV
        if major in _MP4_BRANDS or every & _MP4_BRANDS:
            return MediaType.MP4
        return None
    if len(head) >= 8 and head[4:8] in _QUICKTIME_ATOMS:
        return MediaType.MOV
    return None
