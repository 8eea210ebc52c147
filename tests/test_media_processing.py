"""workers/media_processing.py: what reaches families of an uploaded photo or video carries no
metadata (location above all), is upright and of the promised sizes, and hostile or broken
files are refused without exhausting the machine."""

from __future__ import annotations

import json
import resource
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import av
import pytest
from PIL import ExifTags, Image

from realtime.media_types import MediaType
from tests import media_samples
from workers.media_processing import (
    SCREEN_EDGE,
    THUMB_EDGE,
    Limits,
    Processed,
    Rejected,
    Rendition,
    process,
)

LIMITS = Limits(max_pixels=50_000_000, max_seconds=60.0)
PROJECT = Path(__file__).resolve().parent.parent

# What betrays metadata in the bytes of an image: our markers, the EXIF and XMP headers, the
# Photoshop resources that carry IPTC, PNG text chunks.
IMAGE_TELLTALES = (
    b"SECRET",
    b"Exif",
    b"http://ns.adobe.com/xap",
    b"Photoshop 3.0",
    b"8BIM",
    b"tEXt",
    b"iTXt",
    b"zTXt",
    b"eXIf",
)
INFO_KEYS_OF_METADATA = ("exif", "xmp", "XML:com.adobe.xmp", "comment", "icc_profile", "photoshop", "Comment")
# In MP4: our markers, the QuickTime location string and the ISO-BMFF location atom.
VIDEO_TELLTALES = (b"SECRET", media_samples.VIDEO_LOCATION[:8].encode(), b"\xa9xyz", b"loci", b"Lavf")


def renditions_by_name(processed: Processed) -> dict[str, Rendition]:
    assert [rendition.name for rendition in processed.renditions] == ["original", "screen", "thumb"]
    return {rendition.name: rendition for rendition in processed.renditions}


def is_red(pixel: tuple[int, ...]) -> bool:
    return pixel[0] > 150 and pixel[2] < 100


def is_blue(pixel: tuple[int, ...]) -> bool:
    return pixel[2] > 150 and pixel[0] < 100


def pixel(image: Image.Image, x: int, y: int) -> tuple[int, ...]:
    value = image.getpixel((x, y))
    assert isinstance(value, tuple)
    return value


def assert_image_carries_no_metadata(rendition: Rendition) -> None:
    data = rendition.path.read_bytes()
    for telltale in IMAGE_TELLTALES:
        assert telltale not in data, f"{rendition.name} carries {telltale!r}"
    with Image.open(rendition.path) as image:
        exif = image.getexif()
        assert len(exif) == 0
        assert len(exif.get_ifd(ExifTags.IFD.GPSInfo)) == 0
        for key in INFO_KEYS_OF_METADATA:
            assert key not in image.info, f"{rendition.name} carries {key}"
        assert getattr(image, "text", {}) == {}


def assert_rendition_matches_file(rendition: Rendition, pillow_format: str) -> None:
    with Image.open(rendition.path) as image:
        assert image.format == pillow_format
        assert image.size == (rendition.width, rendition.height)
    assert rendition.bytes == rendition.path.stat().st_size


# Photos ---------------------------------------------------------------------------------------


def test_a_photo_loses_its_gps_exif_xmp_iptc_and_comment_at_every_size(tmp_path: Path) -> None:
    source = media_samples.jpeg_with_metadata(tmp_path / "photo.jpg")
    raw = source.read_bytes()
    for marker in (b"SECRET-XMP", media_samples.SECRET_IPTC, media_samples.SECRET_COMMENT, b"Exif", b"8BIM"):
        assert marker in raw  # the sample does carry what must go
    with Image.open(source) as sample:
        assert sample.getexif().get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitude] == media_samples.GPS_LATITUDE

    processed = process(source, MediaType.JPEG, tmp_path / "out", LIMITS)

    assert processed.kind == "image"
    assert processed.duration_ms is None
    for rendition in processed.renditions:
        assert rendition.content_type == "image/jpeg"
        assert rendition.path.parent == tmp_path / "out"
        assert_rendition_matches_file(rendition, "JPEG")
        assert_image_carries_no_metadata(rendition)


def test_the_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Orientation 6: the camera was turned clockwise; the stored left edge is the top.
    source = media_samples.jpeg_with_metadata(tmp_path / "photo.jpg", size=(640, 480), orientation=6)

    processed = process(source, MediaType.JPEG, tmp_path / "out", LIMITS)

    assert (processed.width, processed.height) == (480, 640)
    for rendition in processed.renditions:
        with Image.open(rendition.path) as image:
            assert image.height > image.width
            assert is_red(pixel(image, image.width // 2, image.height // 8))
            assert is_blue(pixel(image, image.width // 2, image.height * 7 // 8))


def test_a_large_photo_gets_screen_and_thumbnail_sizes(tmp_path: Path) -> None:
    source = media_samples.jpeg_with_metadata(tmp_path / "big.jpg", size=(4000, 3000), orientation=1)

    renditions = renditions_by_name(process(source, MediaType.JPEG, tmp_path / "out", LIMITS))

    assert (renditions["original"].width, renditions["original"].height) == (4000, 3000)
    assert (renditions["screen"].width, renditions["screen"].height) == (SCREEN_EDGE, 1200)
    assert (renditions["thumb"].width, renditions["thumb"].height) == (THUMB_EDGE, 300)
    for rendition in renditions.values():
        assert_rendition_matches_file(rendition, "JPEG")


def test_a_small_photo_is_never_upscaled(tmp_path: Path) -> None:
    source = media_samples.jpeg_with_metadata(tmp_path / "small.jpg", size=(300, 200), orientation=1)

    processed = process(source, MediaType.JPEG, tmp_path / "out", LIMITS)

    for rendition in processed.renditions:
        assert (rendition.width, rendition.height) == (300, 200)
        assert_rendition_matches_file(rendition, "JPEG")


def test_a_png_with_transparency_stays_a_png_with_transparency_and_no_text(tmp_path: Path) -> None:
    source = media_samples.png(tmp_path / "sticker.png", size=(64, 48), alpha=True)
    with Image.open(source) as sample:
        assert sample.info["Comment"] == media_samples.SECRET_PNG_TEXT

    processed = process(source, MediaType.PNG, tmp_path / "out", LIMITS)

    for rendition in processed.renditions:
        assert rendition.content_type == "image/png"
        assert rendition.path.suffix == ".png"
        assert_rendition_matches_file(rendition, "PNG")
        assert_image_carries_no_metadata(rendition)
        with Image.open(rendition.path) as image:
            assert image.mode == "RGBA"
            assert pixel(image, 5, 5)[3] == 255
            assert 100 < pixel(image, 60, 5)[3] < 160


def test_a_png_without_transparency_becomes_a_jpeg(tmp_path: Path) -> None:
    source = media_samples.png(tmp_path / "drawing.png", size=(64, 48), alpha=False)

    processed = process(source, MediaType.PNG, tmp_path / "out", LIMITS)

    for rendition in processed.renditions:
        assert rendition.content_type == "image/jpeg"
        assert_rendition_matches_file(rendition, "JPEG")
        assert_image_carries_no_metadata(rendition)


@pytest.mark.parametrize(
    ("make", "media_type"),
    [(media_samples.webp, MediaType.WEBP), (media_samples.heic, MediaType.HEIC)],
    ids=["webp", "heic"],
)
def test_webp_and_heic_become_jpegs_without_metadata(
    tmp_path: Path, make: Callable[[Path, tuple[int, int]], Path], media_type: MediaType
) -> None:
    source = make(tmp_path / "photo", (128, 96))
    assert b"SECRET" in source.read_bytes()

    processed = process(source, media_type, tmp_path / "out", LIMITS)

    assert (processed.width, processed.height) == (128, 96)
    for rendition in processed.renditions:
        assert rendition.content_type == "image/jpeg"
        assert_rendition_matches_file(rendition, "JPEG")
        assert_image_carries_no_metadata(rendition)
        with Image.open(rendition.path) as image:
            assert is_red(pixel(image, 10, 48))
            assert is_blue(pixel(image, 118, 48))


def test_an_animated_webp_gives_its_first_frame(tmp_path: Path) -> None:
    source = tmp_path / "animated.webp"
    frames = [Image.new("RGB", (64, 48), colour) for colour in (media_samples.RED, media_samples.BLUE)]
    frames[0].save(source, format="WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)

    processed = process(source, MediaType.WEBP, tmp_path / "out", LIMITS)

    for rendition in processed.renditions:
        assert_rendition_matches_file(rendition, "JPEG")
        with Image.open(rendition.path) as image:
            assert is_red(pixel(image, 32, 24))


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    source = media_samples.png_bomb(tmp_path / "bomb.png", width=50_000, height=50_000)
    assert source.stat().st_size < 10_000
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    with pytest.raises(Rejected) as rejected:
        process(source, MediaType.PNG, tmp_path / "out", Limits(max_pixels=100_000_000, max_seconds=60.0))

    assert rejected.value.code == "media_too_many_pixels"
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before_kib
    assert grown_kib < 200 * 1024  # decoded, it would take 7.5 GB
    assert list((tmp_path / "out").iterdir()) == []


def test_a_photo_over_the_pixel_limit_is_refused(tmp_path: Path) -> None:
    source = media_samples.jpeg_with_metadata(tmp_path / "photo.jpg", size=(640, 480))

    with pytest.raises(Rejected) as rejected:
        process(source, MediaType.JPEG, tmp_path / "out", Limits(max_pixels=640 * 480 - 1, max_seconds=60.0))

    assert rejected.value.code == "media_too_many_pixels"


def _text_file(path: Path) -> Path:
    path.write_text("not a photo at all\n" * 20)
    return path


def _jpeg_head(path: Path) -> Path:
    whole = media_samples.jpeg_with_metadata(path.with_suffix(".whole"), orientation=1)
    path.write_bytes(whole.read_bytes()[:200])
    return path


def _jpeg_cut_in_the_middle(path: Path) -> Path:
    whole = media_samples.jpeg_with_metadata(path.with_suffix(".whole"), orientation=1)
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _png_sent_as_jpeg(path: Path) -> Path:
    return media_samples.png(path)


@pytest.mark.parametrize(
    "make",
    [_text_file, _jpeg_head, _jpeg_cut_in_the_middle, _png_sent_as_jpeg],
    ids=["text", "first-200-bytes", "cut-in-the-middle", "png-as-jpeg"],
)
def test_a_file_that_does_not_decode_as_a_jpeg_is_unreadable(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    source = make(tmp_path / "upload")

    with pytest.raises(Rejected) as rejected:
        process(source, MediaType.JPEG, tmp_path / "out", LIMITS)

    assert rejected.value.code == "media_unreadable"


# Videos ---------------------------------------------------------------------------------------


def _assert_sample_carries_metadata(source: Path) -> None:
    with av.open(str(source)) as sample:
        assert sample.metadata["title"] == media_samples.SECRET_VIDEO_TITLE
        assert sample.metadata["location"] == media_samples.VIDEO_LOCATION
        assert all(stream.metadata["handler_name"] == "SECRET-HANDLER" for stream in sample.streams)


@pytest.mark.parametrize("container", ["mp4", "mov"])
def test_a_video_is_remuxed_without_metadata_and_gets_posters(tmp_path: Path, container: str) -> None:
    source = media_samples.video(tmp_path / f"clip.{container}", seconds=1.0, size=(160, 120), container=container)
    _assert_sample_carries_metadata(source)
    media_type = MediaType.MP4 if container == "mp4" else MediaType.MOV

    processed = process(source, media_type, tmp_path / "out", LIMITS)

    assert (processed.kind, processed.width, processed.height) == ("video", 160, 120)
    assert processed.duration_ms is not None
    assert abs(processed.duration_ms - 1000) <= 200
    renditions = renditions_by_name(processed)
    original = renditions["original"]
    assert (original.path.name, original.content_type) == ("original.mp4", "video/mp4")
    assert original.bytes == original.path.stat().st_size
    data = original.path.read_bytes()
    for telltale in VIDEO_TELLTALES:
        assert telltale not in data, f"original.mp4 carries {telltale!r}"
    with av.open(str(original.path)) as output:
        # What FFmpeg reports of the `ftyp` box, and the handler names every track must have.
        assert set(output.metadata) <= {"major_brand", "minor_version", "compatible_brands"}
        for stream in output.streams:
            assert set(stream.metadata) <= {"language", "handler_name", "vendor_id"}
            assert "SECRET" not in "".join(stream.metadata.values())
        assert [stream.type for stream in output.streams] == ["video", "audio"]
        assert output.duration is not None
        assert abs(output.duration / av.time_base - 1.0) <= 0.2
        assert sum(1 for _ in output.decode(video=0)) == 10
    for name in ("screen", "thumb"):
        assert renditions[name].content_type == "image/jpeg"
        assert (renditions[name].width, renditions[name].height) == (160, 120)
        assert_rendition_matches_file(renditions[name], "JPEG")
        assert_image_carries_no_metadata(renditions[name])


def test_a_large_video_gets_posters_of_screen_and_thumbnail_sizes(tmp_path: Path) -> None:
    source = media_samples.video(tmp_path / "clip.mp4", seconds=0.2, size=(2000, 1000), audio=False)

    processed = process(source, MediaType.MP4, tmp_path / "out", LIMITS)

    renditions = renditions_by_name(processed)
    assert (renditions["original"].width, renditions["original"].height) == (2000, 1000)
    assert (renditions["screen"].width, renditions["screen"].height) == (SCREEN_EDGE, 800)
    assert (renditions["thumb"].width, renditions["thumb"].height) == (THUMB_EDGE, 200)
    with av.open(str(renditions["original"].path)) as output:
        assert [stream.type for stream in output.streams] == ["video"]


def test_a_rotated_video_keeps_its_rotation_and_gets_upright_posters(tmp_path: Path) -> None:
    # 90° counter-clockwise: the left edge of the stored frames is displayed at the bottom.
    source = media_samples.video(tmp_path / "clip.mov", seconds=0.3, container="mov", rotation=90)

    processed = process(source, MediaType.MOV, tmp_path / "out", LIMITS)

    assert (processed.width, processed.height) == (120, 160)
    renditions = renditions_by_name(processed)
    with av.open(str(renditions["original"].path)) as output:
        assert next(output.decode(video=0)).rotation == 90
    with Image.open(renditions["screen"].path) as poster:
        assert poster.size == (120, 160)
        assert is_blue(pixel(poster, 60, 10))
        assert is_red(pixel(poster, 60, 150))


def test_an_iphone_hevc_video_stays_playable_by_apple_players(tmp_path: Path) -> None:
    source = media_samples.video(tmp_path / "clip.mov", seconds=0.3, container="mov", audio=False, hevc=True)

    processed = process(source, MediaType.MOV, tmp_path / "out", LIMITS)

    original = renditions_by_name(processed)["original"]
    with av.open(str(original.path)) as output:
        video = output.streams.video[0]
        assert (video.codec_context.name, video.codec_context.codec_tag) == ("hevc", "hvc1")
        assert sum(1 for _ in output.decode(video)) == 3


def test_a_video_over_the_duration_limit_is_refused_before_remuxing(tmp_path: Path) -> None:
    source = media_samples.video(tmp_path / "clip.mp4", seconds=1.0)

    with pytest.raises(Rejected) as rejected:
        process(source, MediaType.MP4, tmp_path / "out", Limits(max_pixels=50_000_000, max_seconds=0.5))

    assert rejected.value.code == "media_too_long"
    assert not (tmp_path / "out" / "original.mp4").exists()


def _understate_duration(data: bytes, factor: int) -> bytes:
    """`data` (an MP4 with version-0 boxes) with the durations in its movie, track and media
    headers divided by `factor`: a header that lies."""
    patched = bytearray(data)
    for box, offset in ((b"mvhd", 16), (b"tkhd", 20), (b"mdhd", 16)):
        start = 0
        while (found := patched.find(box, start)) != -1:
            assert patched[found + 4] == 0  # version 0: 32-bit durations
            position = found + 4 + offset
            (duration,) = struct.unpack_from(">I", patched, position)
            struct.pack_into(">I", patched, position, duration // factor)
            start = found + 4
    return bytes(patched)


def test_a_video_whose_header_understates_its_duration_is_refused_while_remuxing(tmp_path: Path) -> None:
    source = media_samples.video(tmp_path / "clip.mp4", seconds=3.0, audio=False)
    source.write_bytes(_understate_duration(source.read_bytes(), factor=30))
    with av.open(str(source)) as sample:
        assert sample.duration is not None
        assert sample.duration / av.time_base < 0.5  # the lie is believed

    with pytest.raises(Rejected) as rejected:
        process(source, MediaType.MP4, tmp_path / "out", Limits(max_pixels=50_000_000, max_seconds=0.5))

    assert rejected.value.code == "media_too_long"
    assert not (tmp_path / "out" / "original.mp4").exists()


def test_a_video_over_the_pixel_limit_is_refused(tmp_path: Path) -> None:
    source = media_samples.video(tmp_path / "clip.mp4", seconds=0.3, size=(160, 120))

    with pytest.raises(Rejected) as rejected:
        process(source, MediaType.MP4, tmp_path / "out", Limits(max_pixels=160 * 120 - 1, max_seconds=60.0))

    assert rejected.value.code == "media_too_many_pixels"


def _photo_sent_as_video(path: Path) -> Path:
    return media_samples.jpeg_with_metadata(path)


@pytest.mark.parametrize(
    "make",
    [media_samples.audio_only, _text_file, _photo_sent_as_video],
    ids=["no-video-stream", "text", "jpeg-as-mp4"],
)
def test_a_file_without_a_decodable_video_stream_is_unreadable(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    source = make(tmp_path / "upload")

    with pytest.raises(Rejected) as rejected:
        process(source, MediaType.MP4, tmp_path / "out", LIMITS)

    assert rejected.value.code == "media_unreadable"
    assert not (tmp_path / "out" / "original.mp4").exists()


# The command line -----------------------------------------------------------------------------


def run_main(source: Path, media_type: MediaType, out_dir: Path) -> dict[str, object]:
    arguments = [str(source), media_type.value, str(out_dir), str(LIMITS.max_pixels), str(LIMITS.max_seconds)]
    completed = subprocess.run(
        [sys.executable, "-m", "workers.media_processing", *arguments],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert len(lines) == 1, completed.stdout
    result = json.loads(lines[0])
    assert isinstance(result, dict)
    return result


def test_the_command_prints_the_renditions_of_a_good_file(tmp_path: Path) -> None:
    source = media_samples.jpeg_with_metadata(tmp_path / "photo.jpg")

    result = run_main(source, MediaType.JPEG, tmp_path / "out")

    assert set(result) == {"processed"}
    processed = result["processed"]
    assert isinstance(processed, dict)
    parsed = Processed.from_json(processed)
    assert (parsed.kind, parsed.width, parsed.height) == ("image", 480, 640)
    for rendition in parsed.renditions:
        assert rendition.path.parent == tmp_path / "out"
        assert rendition.bytes == rendition.path.stat().st_size


def test_the_command_prints_the_rejection_of_a_bomb(tmp_path: Path) -> None:
    source = media_samples.png_bomb(tmp_path / "bomb.png")

    result = run_main(source, MediaType.PNG, tmp_path / "out")

    assert set(result) == {"rejected"}
    rejected = result["rejected"]
    assert isinstance(rejected, dict)
    assert rejected["code"] == "media_too_many_pixels"
    assert isinstance(rejected["message"], str)


def test_processed_round_trips_through_json(tmp_path: Path) -> None:
    source = media_samples.video(tmp_path / "clip.mp4", seconds=0.3)
    processed = process(source, MediaType.MP4, tmp_path / "out", LIMITS)

    assert Processed.from_json(json.loads(json.dumps(processed.to_json()))) == processed
