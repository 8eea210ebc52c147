"""Strips every metadata block from one uploaded photo or video and produces its renditions.

Children's photos are uploaded by nursery staff, and a photo's metadata says where and when it
was taken (GPS in EXIF, location atoms in QuickTime), by which device, sometimes who is on it
(IPTC captions, XMP). Nothing of it may reach families, so nothing is copied: images are decoded
to pixels and re-encoded from a fresh image, videos are remuxed stream by stream into a new MP4
whose container and streams carry no metadata at all.

The worker runs this module as a fresh subprocess per file (`main`, below), because decoders are
large C libraries fed with untrusted bytes: a crash, a hang (the worker kills the process on
timeout) or a memory blow-up ends with that process. Within it, the cheap checks come before any
decoding: the pixel count read from the header (decompression bombs), the declared duration.

Outputs, in `out_dir`:
- images: `original`, `screen` (longest side ≤ SCREEN_EDGE) and `thumb` (≤ THUMB_EDGE), JPEG,
  or PNG when the image has transparency; orientation applied, never upscaled;
- videos: `original.mp4` (the first video and audio streams, not re-encoded) and a poster frame
  as `screen.jpg` and `thumb.jpg`.

A file that does not decode as the type sniffed from its magic bytes (realtime/media_types.py)
is rejected here: the sniffer only looks at the first bytes, this is where a polyglot or a
truncated file shows.
"""

from __future__ import annotations

import argparse
import json
import resource
import struct
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import pillow_heif
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.packet import Packet
from av.stream import Disposition, Stream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image, ImageOps

from realtime.media_types import MediaType

pillow_heif.register_heif_opener()

# The decoders of one upload get this much, no more; see `_lower_memory_ceiling`.
MEMORY_LIMIT = 3 * 1024**3

SCREEN_EDGE = 1600
THUMB_EDGE = 400

TOO_MANY_PIXELS = "media_too_many_pixels"
TOO_LONG = "media_too_long"
UNREADABLE = "media_unreadable"

_QUALITY_ORIGINAL = 88
_QUALITY_DERIVED = 82

# The Pillow plugin that opens each type, and the formats it may report: phones write many
# JPEGs as MPO (a JPEG followed by more pictures), which the JPEG plugin opens as "MPO".
_PILLOW_FORMATS: Mapping[MediaType, tuple[str, frozenset[str]]] = {
    MediaType.JPEG: ("JPEG", frozenset({"JPEG", "MPO"})),
    MediaType.PNG: ("PNG", frozenset({"PNG"})),
    MediaType.WEBP: ("WEBP", frozenset({"WEBP"})),
    MediaType.HEIC: ("HEIF", frozenset({"HEIF"})),
}

# What Pillow's plugins raise on malformed input: anything else is a bug of ours and propagates.
_DECODE_ERRORS: tuple[type[Exception], ...] = (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError)

# A remux may follow a header that under-declares the duration by this much before it is
# rejected: packet timestamps of a valid file overshoot the declared duration slightly.
_DURATION_SLACK_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_pixels: int  # width × height, of an image or of a video frame
    max_seconds: float  # duration of a video


class Rejected(Exception):
    """The upload is refused; `code` is one of TOO_MANY_PIXELS, TOO_LONG, UNREADABLE."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Rendition:
    name: str  # "original" | "screen" | "thumb"
    path: Path
    content_type: str  # "image/jpeg" | "image/png" | "video/mp4"
    width: int
    height: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "content_type": self.content_type,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Rendition:
        return cls(
            name=str(data["name"]),
            path=Path(data["path"]),
            content_type=str(data["content_type"]),
            width=int(data["width"]),
            height=int(data["height"]),
            bytes=int(data["bytes"]),
        )


@dataclass(frozen=True, slots=True)
class Processed:
    kind: str  # "image" | "video"
    width: int  # as displayed: after the EXIF orientation, or the video's rotation
    height: int
    duration_ms: int | None  # videos only
    renditions: tuple[Rendition, ...]  # original, screen, thumb

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "width": self.width,
            "height": self.height,
            "duration_ms": self.duration_ms,
            "renditions": [rendition.to_json() for rendition in self.renditions],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Processed:
        duration_ms = data["duration_ms"]
        return cls(
            kind=str(data["kind"]),
            width=int(data["width"]),
            height=int(data["height"]),
            duration_ms=None if duration_ms is None else int(duration_ms),
            renditions=tuple(Rendition.from_json(item) for item in data["renditions"]),
        )


def process(source: Path, media_type: MediaType, out_dir: Path, limits: Limits) -> Processed:
    """The metadata-free renditions of `source`, written to `out_dir`; raises Rejected."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if media_type.kind == "video":
        return _process_video(source, out_dir, limits)
    return _process_image(source, media_type, out_dir, limits)


# Images ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Encoding:
    pillow_format: str
    extension: str
    content_type: str


_JPEG = _Encoding("JPEG", "jpg", "image/jpeg")
_PNG = _Encoding("PNG", "png", "image/png")


def _process_image(source: Path, media_type: MediaType, out_dir: Path, limits: Limits) -> Processed:
    picture = _decode_image(source, media_type, limits)
    renditions = _image_renditions(picture, out_dir)
    return Processed(kind="image", width=picture.width, height=picture.height, duration_ms=None, renditions=renditions)


def _decode_image(source: Path, media_type: MediaType, limits: Limits) -> Image.Image:
    """The upright pixels of `source`, in a fresh RGB or RGBA image that carries nothing else.

    Animated images (WebP, APNG) keep their first frame only: families see a photo."""
    plugin, formats = _PILLOW_FORMATS[media_type]
    try:
        # Only the plugin of the sniffed type may open the file: a PNG sent as JPEG is refused.
        with _pillow_pixel_cap(limits.max_pixels), Image.open(source, formats=[plugin]) as image:
            # Image.open has read the header only: refuse a bomb before a byte is decoded.
            _check_pixels(image.width, image.height, limits)
            if image.format not in formats:
                raise Rejected(UNREADABLE, f"the file is not a {media_type.value} image")
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            return _pixels_only(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise Rejected(TOO_MANY_PIXELS, "the image has too many pixels") from error
    except _DECODE_ERRORS as error:
        raise Rejected(UNREADABLE, f"the file does not decode as {media_type.value}") from error


@contextmanager
def _pillow_pixel_cap(max_pixels: int) -> Iterator[None]:
    """Pillow's own bomb check at our limit, as an error: by default it only warns up to twice
    its limit. Our explicit check after `Image.open` stays: it does not depend on a global."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _check_pixels(width: int, height: int, limits: Limits) -> None:
    if width <= 0 or height <= 0:
        raise Rejected(UNREADABLE, "the media has no pixels")
    if width * height > limits.max_pixels:
        raise Rejected(TOO_MANY_PIXELS, f"{width}×{height} exceeds {limits.max_pixels} pixels")


def _pixels_only(image: Image.Image) -> Image.Image:
    """A new image holding the pixels of `image` and nothing of its `info` (EXIF, XMP, ICC,
    comments, text chunks...): Pillow's encoders write some of `info` back when saving.

    The ICC profile is dropped too, not converted: it can carry identifying text (device,
    software), and renditions are displayed as sRGB, which nearly every photo already is."""
    mode = "RGBA" if image.has_transparency_data else "RGB"
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        # 16-bit greyscale (PNG): scaled to 8 bits; a plain convert would clip it to white.
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    converted = image if image.mode == mode else image.convert(mode)
    clean = Image.new(mode, converted.size)
    clean.paste(converted)
    return clean


def _image_renditions(picture: Image.Image, out_dir: Path) -> tuple[Rendition, ...]:
    # Transparency would be lost in JPEG; PNG keeps it (stickers, drawings scanned to PNG).
    encoding = _PNG if picture.mode == "RGBA" else _JPEG
    original = _save_image(picture, "original", out_dir, encoding, _QUALITY_ORIGINAL)
    return (original, *_derived_renditions(picture, out_dir, encoding))


def _derived_renditions(picture: Image.Image, out_dir: Path, encoding: _Encoding) -> tuple[Rendition, Rendition]:
    """The screen and thumb renditions, scaled from the full-size pixels. No JPEG draft() mode
    here: it saves decoding work only when the full size is not needed, and the original is."""
    screen_image = _fit(picture, SCREEN_EDGE)
    screen = _save_image(screen_image, "screen", out_dir, encoding, _QUALITY_DERIVED)
    # From the screen image, not the original: fewer pixels to resample, same result.
    thumb = _save_image(_fit(screen_image, THUMB_EDGE), "thumb", out_dir, encoding, _QUALITY_DERIVED)
    return screen, thumb


def _fit(image: Image.Image, edge: int) -> Image.Image:
    """`image` scaled so that its longest side is at most `edge`; never upscaled."""
    longest = max(image.size)
    if longest <= edge:
        return image
    scale = edge / longest
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # reducing_gap: a fast integer reduce() first, then LANCZOS on the remainder.
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _save_image(image: Image.Image, name: str, out_dir: Path, encoding: _Encoding, quality: int) -> Rendition:
    path = out_dir / f"{name}.{encoding.extension}"
    # No exif=, icc_profile=, comment= or xmp=: `image` is fresh (`_pixels_only`), so the
    # encoders find nothing to write either in these arguments or in `image.info`.
    if encoding is _PNG:
        # optimize=False: the extra compression passes cost seconds on a large image.
        image.save(path, format=encoding.pillow_format, optimize=False)
    else:
        image.save(path, format=encoding.pillow_format, quality=quality, optimize=False, progressive=True)
    return Rendition(name, path, encoding.content_type, image.width, image.height, path.stat().st_size)


# Videos ---------------------------------------------------------------------------------------


# The template resets the codec tag and the MP4 muxer then picks its default, "hev1" for HEVC,
# which Apple's players refuse: iPhone videos (HEVC tagged "hvc1") would no longer play there.
_KEPT_CODEC_TAGS = frozenset({"hvc1"})

_DEMUXER = "mov"  # FFmpeg's demuxer of MOV, MP4 and their ISO-BMFF relatives


def _process_video(source: Path, out_dir: Path, limits: Limits) -> Processed:
    try:
        # The QuickTime/MP4 demuxer only, whatever FFmpeg's probing would pick: a JPEG sent as a
        # video would otherwise open as a one-frame MJPEG stream.
        with av.open(str(source), format=_DEMUXER) as container:
            return _remux_video(container, out_dir, limits)
    except av.FFmpegError as error:
        raise Rejected(UNREADABLE, "the file does not decode as a video") from error


def _remux_video(container: InputContainer, out_dir: Path, limits: Limits) -> Processed:
    # A cover picture (an MJPEG "video" stream flagged attached_pic) is not the video.
    videos = [stream for stream in container.streams.video if not stream.disposition & Disposition.attached_pic]
    if not videos:
        raise Rejected(UNREADABLE, "the file has no video stream")
    video = videos[0]
    audio = container.streams.audio[0] if container.streams.audio else None
    _check_pixels(video.codec_context.width, video.codec_context.height, limits)
    declared = _declared_seconds(container, video)
    if declared is not None and declared > limits.max_seconds:
        raise Rejected(TOO_LONG, f"{declared:.1f} s exceeds {limits.max_seconds:.1f} s")

    path = out_dir / "original.mp4"
    try:
        poster, elapsed = _copy_streams(container, video, audio, path, limits)
    except BaseException:
        # A rejected or failed remux leaves no half-written file behind.
        path.unlink(missing_ok=True)
        raise
    seconds = declared if declared is not None else elapsed
    image = _upright(poster)
    original = Rendition("original", path, "video/mp4", image.width, image.height, path.stat().st_size)
    screen, thumb = _derived_renditions(image, out_dir, _JPEG)
    return Processed(
        kind="video",
        width=image.width,
        height=image.height,
        duration_ms=round(seconds * 1000),
        renditions=(original, screen, thumb),
    )


def _declared_seconds(container: InputContainer, video: VideoStream) -> float | None:
    """The duration the header declares, which may lie: `_copy_streams` checks the packets."""
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    if video.duration is not None and video.time_base is not None:
        return float(video.duration * video.time_base)
    return None


def _open_output(path: Path) -> OutputContainer:
    # faststart: the index (moov) before the data, so that playback starts while downloading.
    # bitexact: no `encoder` tag naming the FFmpeg version, no creation time.
    return av.open(str(path), "w", format="mp4", container_options={"movflags": "+faststart", "fflags": "+bitexact"})


def _copy_streams(
    container: InputContainer, video: VideoStream, audio: AudioStream | None, path: Path, limits: Limits
) -> tuple[VideoFrame, float]:
    """Remuxes `video` and `audio` into the MP4 at `path`, and returns the first decoded frame
    and the time the packets span. Every other stream (data, subtitles, timecode, the location
    track of some phones) is left out.

    The rotation survives: it is display-matrix side data of the codec parameters, which
    `add_stream_from_template` copies; stream metadata is not copied (and cleared anyway)."""
    with _open_output(path) as output:
        output.metadata.clear()
        try:
            out_video = output.add_stream_from_template(video)
        except ValueError as error:
            raise Rejected(UNREADABLE, f"the video codec {video.codec_context.name} cannot be stored in MP4") from error
        if video.codec_context.codec_tag in _KEPT_CODEC_TAGS:
            out_video.codec_context.codec_tag = video.codec_context.codec_tag
        targets: dict[int, VideoStream | AudioStream] = {video.index: out_video}
        if audio is not None:
            out_audio = _audio_target(output, audio)
            if out_audio is not None:
                targets[audio.index] = out_audio
        for target in targets.values():
            target.metadata.clear()
        sources = tuple(stream for stream in (video, audio) if stream is not None and stream.index in targets)
        poster: VideoFrame | None = None
        span = _Span(limits.max_seconds + _DURATION_SLACK_SECONDS)
        for packet in container.demux(sources):
            if packet.dts is None:  # the empty packets that flush the demuxer
                continue
            span.add(packet)
            if poster is None and packet.stream.index == video.index:
                poster = _first_frame(video, packet)
            packet.stream = targets[packet.stream.index]
            output.mux(packet)
    if poster is None:
        poster = _first_frame(video, None)
    if poster is None:
        raise Rejected(UNREADABLE, "the video has no decodable frame")
    return poster, span.seconds


def _audio_target(output: OutputContainer, audio: AudioStream) -> AudioStream | None:
    """The output stream for `audio`, or None when MP4 cannot carry its codec (some codecs of
    old cameras' MOV files): the video without its sound beats no video."""
    try:
        return output.add_stream_from_template(audio)
    except ValueError:
        return None


def _first_frame(video: VideoStream, packet: Packet[Stream] | None) -> VideoFrame | None:
    """The first frame `packet` completes (None: flush the decoder), if any."""
    frames = video.decode(packet)
    return frames[0] if frames else None


class _Span:
    """The time the packets of each stream span, against a cap: the declared duration was
    checked before remuxing, but only the packets tell the truth."""

    def __init__(self, cap_seconds: float) -> None:
        self._cap = cap_seconds
        self._first: dict[int, float] = {}
        self.seconds = 0.0

    def add(self, packet: Packet[Stream]) -> None:
        timestamp = packet.pts if packet.pts is not None else packet.dts
        if timestamp is None:
            return
        end = float((timestamp + (packet.duration or 0)) * packet.time_base)
        first = self._first.setdefault(packet.stream.index, float(timestamp * packet.time_base))
        self.seconds = max(self.seconds, end - first)
        if self.seconds > self._cap:
            raise Rejected(TOO_LONG, f"the video runs past {self._cap:.1f} s")


def _upright(frame: VideoFrame) -> Image.Image:
    """The frame as displayed: rotated as the container's display matrix says (a phone held
    upright records landscape frames and a 90° rotation). Flips in the matrix are ignored:
    cameras do not write them."""
    image = Image.fromarray(frame.to_ndarray(format="rgb24"))
    quarter_turns = round(frame.rotation / 90) % 4  # counter-clockwise, like Image.Transpose
    if quarter_turns == 1:
        image = image.transpose(Image.Transpose.ROTATE_90)
    elif quarter_turns == 2:
        image = image.transpose(Image.Transpose.ROTATE_180)
    elif quarter_turns == 3:
        image = image.transpose(Image.Transpose.ROTATE_270)
    return _pixels_only(image)


# Command line ---------------------------------------------------------------------------------


def _lower_memory_ceiling() -> None:
    """Caps this process's heap so that a decoder blowing up fails with MemoryError (or
    ENOMEM inside C) instead of pushing the machine into swap or the OOM killer.

    RLIMIT_DATA rather than RLIMIT_AS: the address space also counts reservations that use no
    memory (glibc reserves 64 MiB per malloc arena and thread, codecs start a thread per core),
    so an AS cap tight enough to matter fails healthy processes on machines with many cores.
    Since Linux 4.7 RLIMIT_DATA counts every private writable mapping, i.e. mmap'd buffers too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    new_hard = MEMORY_LIMIT if hard == resource.RLIM_INFINITY else min(hard, MEMORY_LIMIT)
    new_soft = new_hard if soft == resource.RLIM_INFINITY else min(soft, new_hard)
    resource.setrlimit(resource.RLIMIT_DATA, (new_soft, new_hard))


def _parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers.media_processing", description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("media_type", type=MediaType, help="the sniffed type's value, e.g. image/jpeg")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("max_pixels", type=int)
    parser.add_argument("max_seconds", type=float)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Processes one file and prints one line of JSON: {"processed": ...} or {"rejected":
    {"code", "message"}}, exit status 0 for both. Any other failure raises (non-zero status)."""
    _lower_memory_ceiling()
    arguments = _parse_arguments(argv)
    limits = Limits(max_pixels=arguments.max_pixels, max_seconds=arguments.max_seconds)
    try:
        processed = process(arguments.source, arguments.media_type, arguments.out_dir, limits)
    except Rejected as rejected:
        result: dict[str, Any] = {"rejected": {"code": rejected.code, "message": rejected.message}}
    else:
        result = {"processed": processed.to_json()}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
