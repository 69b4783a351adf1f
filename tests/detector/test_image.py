"""Still images: routed by their bytes, refused over the limits before decoding, faces → clips."""

from __future__ import annotations

import shutil
import struct
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from detector import image as image_module
from detector.config import DetectorConfig, ImageLimits
from detector.extraction import Extraction
from detector.faces import MediaPipeFaceDetector
from detector.image import ImageProbe, decode_image, probe_image
from detector.probe import Probe, Unreadable
from detector.routing import extract_clips
from schemas import Reason
from tests.conftest import SyntheticVideos
from tests.support.credentials import astronaut_photo

CLIP_LENGTH = 20
INPUT_SIZE = 112
CONFIG = DetectorConfig()
# MediaPipe finds the astronaut's face at x=174..278, y=68..172 of the 512 x 512 photo.
FACE_CENTRE = (226 / 512, 120 / 512)


@pytest.fixture(scope="module")
def faces() -> Iterator[MediaPipeFaceDetector]:
    detector = MediaPipeFaceDetector(CONFIG.faces)
    yield detector
    detector.close()


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return astronaut_photo(tmp_path_factory.mktemp("stills") / "astronaut.jpg")


def extract(
    path: Path, faces: MediaPipeFaceDetector, config: DetectorConfig = CONFIG
) -> Extraction:
    return extract_clips(
        path, clip_length=CLIP_LENGTH, input_size=INPUT_SIZE, config=config, faces=faces
    )


def refusal(
    path: Path, faces: MediaPipeFaceDetector, config: DetectorConfig = CONFIG
) -> Unreadable:
    with pytest.raises(Unreadable) as refused:
        extract(path, faces, config)
    return refused.value


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A valid PNG header declaring `width` x `height` RGB pixels, with almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(1024)))
        + chunk(b"IEND", b"")
    )
    return path


def tiff_with_a_broken_second_page(path: Path) -> Path:
    """A 1-pixel grey TIFF whose second page (IFD) declares no dimensions.

    Pillow opens it, then raises TypeError ("Missing dimensions") while
    counting its pages: not one of the exceptions it documents for bad files.
    """

    def ifd(tags: list[tuple[int, int, int]], next_offset: int) -> bytes:
        body = struct.pack("<H", len(tags))
        for tag, kind, value in tags:
            body += struct.pack("<HHII", tag, kind, 1, value)
        return body + struct.pack("<I", next_offset)

    short, long = 3, 4
    first_at = 8
    second_at = first_at + 2 + 8 * 12 + 4
    pixel_at = second_at + 2 + 12 + 4
    first = ifd(
        [
            (256, short, 1),  # ImageWidth
            (257, short, 1),  # ImageLength
            (258, short, 8),  # BitsPerSample
            (259, short, 1),  # Compression: none
            (262, short, 1),  # PhotometricInterpretation: black is zero
            (273, long, pixel_at),  # StripOffsets
            (278, short, 1),  # RowsPerStrip
            (279, long, 1),  # StripByteCounts
        ],
        second_at,
    )
    second = ifd([(262, short, 1)], 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", first_at) + first + second + b"\x80")
    return path


def faceless_still(path: Path) -> Path:
    """A smooth, textured scene without anyone in it."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:384, 0:512].astype(np.float32)
    base = 90 + 60 * np.sin(xx / 17.0) * np.cos(yy / 29.0)
    scene = np.stack([base, base * 0.8 + 30, 200 - base * 0.5], axis=-1)
    scene += rng.normal(0, 6, scene.shape)
    Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------- routing


def test_a_jpeg_named_like_a_video_is_screened_as_a_still(
    photo: Path, faces: MediaPipeFaceDetector, tmp_path: Path
) -> None:
    disguised = shutil.copyfile(photo, tmp_path / "holiday.mp4")
    extraction = extract(disguised, faces)
    assert isinstance(extraction.probe, ImageProbe)
    assert extraction.probe.format == "JPEG"
    assert extraction.frames_analyzed == 1
    assert len(extraction.clips) == 1


def test_a_video_named_like_a_jpeg_is_screened_as_a_video(
    synthetic: SyntheticVideos, faces: MediaPipeFaceDetector, tmp_path: Path
) -> None:
    disguised = shutil.copyfile(synthetic.moving_face, tmp_path / "portrait.jpg")
    extraction = extract(disguised, faces)
    assert isinstance(extraction.probe, Probe)
    assert extraction.frames_analyzed == 60
    assert [(c.start_frame, c.end_frame) for c in extraction.clips] == [(0, 20), (20, 40), (40, 60)]


# --------------------------------------------------------------------------- faces


def test_each_face_on_a_still_is_one_clip_of_its_crop_repeated(
    photo: Path, faces: MediaPipeFaceDetector
) -> None:
    extraction = extract(photo, faces)
    assert extraction.probe.properties().model_dump() == {
        "format": "JPEG",
        "width": 512,
        "height": 512,
        "size_bytes": photo.stat().st_size,
    }
    assert (extraction.faces_detected, extraction.tracks, extraction.frames_analyzed) == (1, 1, 1)
    assert extraction.warnings == []
    [clip] = extraction.clips
    assert clip.pixels.shape == (CLIP_LENGTH, INPUT_SIZE, INPUT_SIZE, 3)
    assert clip.pixels.dtype == np.uint8
    assert (clip.pixels == clip.pixels[0]).all()  # a still: every frame is the same crop
    assert clip.pixels[0].std() > 20  # and that crop is a picture, not a blank
    assert (clip.start_frame, clip.end_frame, clip.track_id, clip.coverage) == (0, 1, 0, 1.0)
    x, y, width, height = clip.box
    assert all(0.0 <= v <= 1.0 for v in clip.box)
    assert x + width <= 1.0 and y + height <= 1.0
    assert x < FACE_CENTRE[0] < x + width and y < FACE_CENTRE[1] < y + height
    assert 0.1 < width < 0.4 and 0.1 < height < 0.4


def test_a_still_without_a_face_has_no_clips(faces: MediaPipeFaceDetector, tmp_path: Path) -> None:
    extraction = extract(faceless_still(tmp_path / "landscape.png"), faces)
    assert isinstance(extraction.probe, ImageProbe) and extraction.probe.format == "PNG"
    assert extraction.clips == []
    assert (extraction.faces_detected, extraction.tracks, extraction.frames_analyzed) == (0, 0, 1)


def test_the_exif_orientation_is_applied_before_faces_are_searched(
    faces: MediaPipeFaceDetector, tmp_path: Path
) -> None:
    """Stored on its side (512 wide, 400 high) with orientation 6: displayed 400 x 512, upright."""
    upright = np.asarray(data.astronaut(), dtype=np.uint8)[:, :400]  # type: ignore[no-untyped-call]
    sideways = np.ascontiguousarray(np.rot90(upright, k=1))  # turned 90 degrees anticlockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "sideways.jpg"
    Image.fromarray(sideways).save(path, quality=92, exif=exif)

    info = probe_image(path, CONFIG.images)
    assert (info.width, info.height) == (400, 512)  # stored 512 x 400, swapped for display
    assert decode_image(path, CONFIG.images).shape == (512, 400, 3)
    [clip] = extract(path, faces).clips
    x, y, width, height = clip.box  # in the displayed frame: where the face is upright
    assert x < 226 / 400 < x + width and y < 120 / 512 < y + height


def test_only_the_first_frame_of_an_animated_image_is_screened(
    faces: MediaPipeFaceDetector, tmp_path: Path
) -> None:
    face = Image.fromarray(np.asarray(data.astronaut(), dtype=np.uint8))  # type: ignore[no-untyped-call]
    dark, light = (Image.new("RGB", face.size, (grey,) * 3) for grey in (40, 200))
    path = tmp_path / "animated.gif"
    face.save(path, save_all=True, append_images=[dark, light], duration=100)

    extraction = extract(path, faces)
    assert isinstance(extraction.probe, ImageProbe) and extraction.probe.format == "GIF"
    assert extraction.probe.frames == 3
    assert extraction.warnings == ["animated image: only the first of 3 frames is screened"]
    assert extraction.frames_analyzed == 1
    assert len(extraction.clips) == 1  # the face of frame 0


def test_a_16_bit_grey_still_is_screened_at_its_true_brightness(
    faces: MediaPipeFaceDetector, tmp_path: Path
) -> None:
    """Pillow's own conversion clips 16-bit values at 255: the face would vanish into white."""
    rgb = np.asarray(data.astronaut(), dtype=np.float64)  # type: ignore[no-untyped-call]
    grey = np.round(rgb @ [0.299, 0.587, 0.114]).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(grey * 257).save(path)  # 0..255 stretched over 0..65535
    with Image.open(path) as opened:
        assert opened.mode == "I;16"

    frame = decode_image(path, CONFIG.images)
    assert frame.shape == (512, 512, 3) and frame.dtype == np.uint8
    assert np.abs(frame[..., 0].astype(int) - grey).max() <= 1
    assert len(extract(path, faces).clips) == 1


# --------------------------------------------------------------------------- refusals


def test_a_decompression_bomb_is_refused_from_its_header_before_any_pixel_is_decoded(
    faces: MediaPipeFaceDetector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = png_declaring(tmp_path / "bomb.png", 100_000, 100_000)  # 10^10 pixels, 30 TB of RGB
    assert bomb.stat().st_size < 1024

    def never(*_: object, **__: object) -> None:
        raise AssertionError("the bomb's pixels were decoded")

    monkeypatch.setattr(image_module, "decode_image", never)
    refused = refusal(bomb, faces)
    assert refused.reason is Reason.RESOLUTION_TOO_LARGE
    assert "10000000000" in refused.detail


@pytest.mark.parametrize("max_pixels", [512 * 512 - 1, 100_000])  # just over it; over twice it
def test_a_still_over_the_pixel_limit_is_resolution_too_large(
    photo: Path, faces: MediaPipeFaceDetector, max_pixels: int
) -> None:
    config = replace(CONFIG, images=ImageLimits(max_pixels=max_pixels))
    assert refusal(photo, faces, config).reason is Reason.RESOLUTION_TOO_LARGE
    assert (
        len(extract(photo, faces, replace(CONFIG, images=ImageLimits(max_pixels=512 * 512))).clips)
        == 1
    )


def test_a_still_over_the_byte_limit_is_refused_unopened(
    photo: Path, faces: MediaPipeFaceDetector
) -> None:
    size = photo.stat().st_size
    too_small = replace(CONFIG, images=ImageLimits(max_bytes=size - 1))
    refused = refusal(photo, faces, too_small)
    assert refused.reason is Reason.FILE_TOO_LARGE
    assert str(size) in refused.detail
    just_enough = replace(CONFIG, images=ImageLimits(max_bytes=size))
    assert probe_image(photo, just_enough.images).size_bytes == size


def test_an_empty_still_is_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.touch()
    with pytest.raises(Unreadable) as refused:
        probe_image(empty, CONFIG.images)
    assert refused.value.reason is Reason.EMPTY_FILE


@pytest.mark.parametrize(
    ("keep_bytes", "reason"),
    [
        (200, Reason.CORRUPT_CONTAINER),  # the header itself is cut short
        (20_000, Reason.DECODE_FAILED),  # the header parses; the scan ends early
    ],
)
def test_a_truncated_jpeg_is_unreadable(
    photo: Path, faces: MediaPipeFaceDetector, tmp_path: Path, keep_bytes: int, reason: Reason
) -> None:
    whole = photo.read_bytes()
    assert len(whole) > 2 * keep_bytes
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(whole[:keep_bytes])
    refused = refusal(truncated, faces)
    assert refused.reason is reason
    assert refused.detail


def test_a_header_that_breaks_the_image_library_is_corrupt_container_not_a_crash(
    faces: MediaPipeFaceDetector, tmp_path: Path
) -> None:
    broken = tiff_with_a_broken_second_page(tmp_path / "two_pages.tif")
    refused = refusal(broken, faces)
    assert refused.reason is Reason.CORRUPT_CONTAINER
    assert "Missing dimensions" in refused.detail
