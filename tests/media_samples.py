"""Sample media files for the tests: small, fast to make, deterministic, and loaded with the
metadata that must never reach families (GPS, XMP, IPTC, comments, text chunks, location
atoms), each marked with a recognizable string so that a test can grep output bytes for it.

Every image has a red left half and a blue right half, so a test can tell where the left side
went once an orientation or a rotation is applied.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
import pillow_heif
from av.audio.stream import AudioStream
from av.codec import Codec
from av.container import OutputContainer
from PIL import ExifTags, Image
from PIL.PngImagePlugin import PngInfo

pillow_heif.register_heif_opener()

RED = (220, 20, 20)
BLUE = (20, 20, 220)

SECRET_EXIF = "SECRET-EXIF-DESCRIPTION"
SECRET_XMP = "SECRET-XMP"
SECRET_IPTC = b"SECRET-IPTC-CAPTION"
SECRET_COMMENT = b"SECRET-COMMENT"
SECRET_PNG_TEXT = "SECRET-PNG-TEXT"
GPS_LATITUDE = (48.0, 51.0, 30.24)
GPS_LONGITUDE = (2.0, 17.0, 40.2)

SECRET_VIDEO_TITLE = "SECRET-VIDEO-TITLE"
VIDEO_LOCATION = "+48.8584+002.2945/"
VIDEO_METADATA: Mapping[str, str] = {
    "location": VIDEO_LOCATION,
    "title": SECRET_VIDEO_TITLE,
    "comment": "SECRET-VIDEO-COMMENT",
}
VIDEO_STREAM_METADATA: Mapping[str, str] = {"title": "SECRET-STREAM-TITLE", "handler_name": "SECRET-HANDLER"}

_XMP_PACKET = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
    f"<dc:description>{SECRET_XMP}</dc:description>"
    '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
).encode()


def two_halves(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """Red left half, blue right half."""
    width, height = size
    image = Image.new(mode, size, BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


def exif_with_gps(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.ImageDescription] = SECRET_EXIF
    exif[ExifTags.Base.Make] = "SECRET-CAMERA"
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = GPS_LATITUDE
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = GPS_LONGITUDE
    return exif


def _iptc_segment(caption: bytes) -> bytes:
    """A JPEG APP13 segment: Photoshop image resources holding IPTC-IIM (resource 0x0404) with
    a caption (record 2, dataset 120). Pillow reads these but cannot write them."""
    iim = b"\x1c\x02\x78" + struct.pack(">H", len(caption)) + caption
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(iim)) + iim
    if len(iim) % 2:
        resource += b"\x00"
    payload = b"Photoshop 3.0\x00" + resource
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def _splice_after_soi(path: Path, segment: bytes) -> None:
    data = path.read_bytes()
    assert data.startswith(b"\xff\xd8")
    path.write_bytes(data[:2] + segment + data[2:])


def jpeg_with_metadata(path: Path, size: tuple[int, int] = (640, 480), orientation: int = 6) -> Path:
    """A JPEG with EXIF (GPS, orientation, description, make), XMP, IPTC and a comment."""
    two_halves(size).save(
        path,
        format="JPEG",
        quality=90,
        exif=exif_with_gps(orientation),
        xmp=_XMP_PACKET,
        comment=SECRET_COMMENT,
    )
    _splice_after_soi(path, _iptc_segment(SECRET_IPTC))
    return path


def png(path: Path, size: tuple[int, int] = (64, 48), alpha: bool = False, text: str = SECRET_PNG_TEXT) -> Path:
    """A PNG with tEXt, iTXt and eXIf chunks; with `alpha`, its right half is half transparent."""
    image = two_halves(size, "RGBA" if alpha else "RGB")
    if alpha:
        image.putalpha(Image.new("L", size, 255))
        image.paste((*BLUE, 128), (size[0] // 2, 0, size[0], size[1]))
    info = PngInfo()
    info.add_text("Comment", text)
    info.add_itxt("Description", text, lang="en", tkey="Description")
    image.save(path, format="PNG", pnginfo=info, exif=exif_with_gps())
    return path


def webp(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    """A lossy WebP with EXIF (GPS) and XMP chunks."""
    two_halves(size).save(path, format="WEBP", quality=80, exif=exif_with_gps(), xmp=_XMP_PACKET)
    return path


def heic(path: Path, size: tuple[int, int] = (128, 96)) -> Path:
    """A HEIC (x265 through pillow-heif) with EXIF (GPS) and XMP."""
    two_halves(size).save(path, format="HEIF", quality=60, exif=exif_with_gps().tobytes(), xmp=_XMP_PACKET)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, width: int = 50_000, height: int = 50_000) -> Path:
    """A PNG of a few hundred bytes whose header declares width × height RGB pixels (7.5 GB
    decoded at the default size). Its IDAT holds one row only: no decoder must get that far."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\x00" * (1 + 3 * min(width, 64)))
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", row) + _png_chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def _video_codec() -> Literal["libx264", "mpeg4"]:
    """H.264 when this PyAV build can encode it, else MPEG-4 part 2 (always built in)."""
    try:
        Codec("libx264", "w")
    except av.FFmpegError:
        return "mpeg4"
    return "libx264"


def video(
    path: Path,
    seconds: float = 1.0,
    size: tuple[int, int] = (160, 120),
    container: str = "mp4",
    metadata: Mapping[str, str] = VIDEO_METADATA,
    audio: bool = True,
    rotation: int = 0,
    hevc: bool = False,
) -> Path:
    """A video of two-halves frames at 10 fps, with mono AAC sound when `audio`, `metadata` on
    the container and VIDEO_STREAM_METADATA on each stream, and a display-matrix rotation
    (counter-clockwise degrees) when `rotation`. With `hevc`: HEVC tagged "hvc1", as iPhones
    record it, rather than H.264."""
    fps = 10
    with av.open(str(path), "w", format=container) as output:
        output.metadata.update(metadata)
        stream = output.add_stream("libx265" if hevc else _video_codec(), rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if hevc:
            stream.codec_context.codec_tag = "hvc1"
            stream.options = {"x265-params": "log-level=none"}
        stream.metadata.update(VIDEO_STREAM_METADATA)
        if rotation:
            stream.set_display_rotation(rotation)
        # Every stream must exist before the first packet is muxed (that writes the header).
        sound = output.add_stream("aac", rate=_AUDIO_RATE, layout="mono") if audio else None
        if sound is not None:
            sound.metadata.update(VIDEO_STREAM_METADATA)
        pixels = np.asarray(two_halves(size))
        for index in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
        if sound is not None:
            _encode_silence(output, sound, seconds)
    return path


_AUDIO_RATE = 16_000
_AAC_FRAME_SAMPLES = 1024


def _encode_silence(output: OutputContainer, stream: AudioStream, seconds: float) -> None:
    for start in range(0, round(seconds * _AUDIO_RATE), _AAC_FRAME_SAMPLES):
        samples = np.zeros((1, _AAC_FRAME_SAMPLES), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = _AUDIO_RATE
        frame.pts = start
        frame.time_base = Fraction(1, _AUDIO_RATE)
        output.mux(stream.encode(frame))
    output.mux(stream.encode(None))


def audio_only(path: Path, seconds: float = 0.5) -> Path:
    """An MP4 with an AAC track and no video track."""
    with av.open(str(path), "w", format="mp4") as output:
        sound = output.add_stream("aac", rate=_AUDIO_RATE, layout="mono")
        _encode_silence(output, sound, seconds)
    return path


# Hostile files (tests/test_upload_attacks.py) ----------------------------------------------------


def jpeg_bomb(path: Path, width: int = 65_000, height: int = 65_000) -> Path:
    """A small JPEG whose frame header (SOF) declares width × height pixels (12.7 GB decoded at
    the default size); the scan data is that of a 64×48 picture."""
    jpeg_with_metadata(path, size=(64, 48), orientation=1)
    data = bytearray(path.read_bytes())
    position = 2
    while data[position + 1] not in (0xC0, 0xC1, 0xC2):  # the first SOF segment
        position += 2 + struct.unpack_from(">H", data, position + 2)[0]
    # SOF: marker, length (2), precision (1), height (2), width (2).
    struct.pack_into(">HH", data, position + 5, height, width)
    path.write_bytes(bytes(data))
    return path


def webp_bomb(path: Path, edge: int = 16_384) -> Path:
    """An animated WebP of a few hundred bytes whose canvas (VP8X) is edge × edge, the largest
    the format allows (268 Mpx): its frames are 16×16, which an animation may be."""
    frames = [Image.new("RGB", (16, 16), colour) for colour in (RED, BLUE)]
    frames[0].save(path, format="WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    data = bytearray(path.read_bytes())
    vp8x = data.find(b"VP8X")
    assert vp8x == 12, "Pillow writes animations as RIFF header + VP8X"
    # VP8X payload: flags (4 bytes), then canvas width - 1 and height - 1 (24 bits each).
    data[vp8x + 12 : vp8x + 15] = (edge - 1).to_bytes(3, "little")
    data[vp8x + 15 : vp8x + 18] = (edge - 1).to_bytes(3, "little")
    path.write_bytes(bytes(data))
    return path


def png_deflate_bomb(path: Path, width: int = 10_000, height: int = 10_000) -> Path:
    """A genuine, complete PNG of width × height black RGB pixels: its IDAT is a real deflate
    stream (about 300 kB at the default size) that inflates to 300 MB."""
    row = b"\x00" * (1 + 3 * width)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def png_text_bomb(path: Path, inflated: int = 64 * 1024 * 1024) -> Path:
    """A small PNG with a zTXt chunk, before its pixels, that inflates to `inflated` bytes."""
    png(path, (32, 32))
    data = path.read_bytes()
    chunk = _png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"A" * inflated, 9))
    idat = data.find(b"IDAT") - 4
    path.write_bytes(data[:idat] + chunk + data[idat:])
    return path


def heic_bomb(path: Path, width: int = 20_000, height: int = 20_000) -> Path:
    """A small HEIC whose image spatial extents (`ispe`) declare width × height."""
    heic(path, (128, 96))
    data = bytearray(path.read_bytes())
    ispe = data.find(b"ispe")
    assert ispe != -1
    # ispe: type, version and flags (4), width (4), height (4).
    struct.pack_into(">II", data, ispe + 8, width, height)
    path.write_bytes(bytes(data))
    return path


def endless_video(path: Path) -> Path:
    """A half-second MP4 whose sample table (`stts`) gives each frame 2^31 - 1 ticks, days of
    video per frame: what its packets say, whatever its header says."""
    video(path, seconds=0.5, audio=False)
    data = bytearray(path.read_bytes())
    stts = data.find(b"stts")
    # stts: type, version and flags (4), entry count (4), then (sample count, delta) pairs.
    (entries,) = struct.unpack_from(">I", data, stts + 8)
    for entry in range(entries):
        struct.pack_into(">I", data, stts + 16 + 8 * entry, 0x7FFFFFFF)
    path.write_bytes(bytes(data))
    return path


def jpeg_javascript_polyglot(path: Path, payload: bytes) -> Path:
    """A JPEG that is also a script: its first segment (APP0) is 0x2F2A bytes long, so the file
    reads `ÿØÿà/*` to a JavaScript parser, and the segment holds `*/` + payload + `/*`; the
    rest of the file is a real 64×48 picture followed by `*/`."""
    picture = jpeg_with_metadata(path.with_suffix(".picture"), size=(64, 48), orientation=1).read_bytes()
    script = b"*/" + payload + b"/*"
    segment = b"\xff\xe0" + b"/*" + script.ljust(0x2F2A - 2, b" ")
    path.write_bytes(picture[:2] + segment + picture[2:] + b"*/")
    return path
