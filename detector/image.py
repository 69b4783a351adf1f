"""Still image → face clips: the same model screens photos as it screens videos.

An upload whose bytes are a still image (JPEG, PNG, WebP, GIF, TIFF, BMP,
AVIF; decided by `detector.sniff`) is screened here. The header is read first
and the image refused over `ImageLimits` before any pixel is decoded, so a
decompression bomb (a small file that declares billions of pixels) is
`unreadable` / `resolution_too_large`. Each face found on the still becomes a
clip of that face repeated `clip_length` times, as the model saw stills in
training. Like video decoding, this runs in the isolated decoder workers.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from detector.arrays import Frame
from detector.clips import cut_clip, square_crops
from detector.config import DetectorConfig, ImageLimits
from detector.extraction import Extraction, FaceClip, StageTimes, new_hasher, normalised_box
from detector.faces import FaceDetector
from detector.hashing import VideoHasher, VideoHashes
from detector.probe import Unreadable
from schemas.verdict import ImageProperties, Reason

# Our own pixel limit is checked from the header before any decoding; Pillow's
# bomb check (a warning, then an error at twice its limit) stays as a backstop,
# without the warning noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


@dataclass(frozen=True)
class ImageProbe:
    """Header facts of a still image, in displayed orientation (EXIF applied)."""

    format: str
    width: int
    height: int
    size_bytes: int
    frames: int  # animated GIF / WebP: only the first is screened

    def properties(self) -> ImageProperties:
        return ImageProperties(
            format=self.format, width=self.width, height=self.height, size_bytes=self.size_bytes
        )


def probe_image(path: Path, limits: ImageLimits) -> ImageProbe:
    """The header of `path`, or `Unreadable` when it is empty, too large or not an image."""
    size = path.stat().st_size
    if size == 0:
        raise Unreadable(Reason.EMPTY_FILE, "the file is empty")
    if size > limits.max_bytes:
        raise Unreadable(Reason.FILE_TOO_LARGE, f"{size} bytes > {limits.max_bytes}")
    try:
        with Image.open(path) as image:
            width, height = image.size
            image_format = image.format or "unknown"
            frames = int(getattr(image, "n_frames", 1))
            transposed = _exif_transposes(image)
    except Image.DecompressionBombError as error:
        raise Unreadable(Reason.RESOLUTION_TOO_LARGE, str(error)) from error
    except MemoryError:
        raise
    except Exception as error:  # Pillow's parsers raise TypeError, KeyError, ... on hostile bytes
        raise Unreadable(
            Reason.CORRUPT_CONTAINER, f"the image header does not parse: {error}"
        ) from error
    if width <= 0 or height <= 0:
        raise Unreadable(Reason.CORRUPT_CONTAINER, f"the image declares {width}x{height} pixels")
    _refuse_over_pixels(width, height, limits)
    if transposed:
        width, height = height, width
    return ImageProbe(image_format, width, height, size, frames)


def decode_image(path: Path, limits: ImageLimits) -> Frame:
    """The first frame of `path` as RGB uint8 (H, W, 3), EXIF orientation applied."""
    try:
        with Image.open(path) as image:
            _refuse_over_pixels(*image.size, limits)  # the header again: never decode past it
            image.seek(0)
            upright = ImageOps.exif_transpose(image)
            if upright.mode.startswith("I;16"):  # 16-bit grey: `convert` would clip it at 255
                grey = (np.asarray(upright) >> 8).astype(np.uint8)
                return np.repeat(grey[:, :, np.newaxis], 3, axis=2)
            return np.asarray(upright.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError as error:
        raise Unreadable(Reason.RESOLUTION_TOO_LARGE, str(error)) from error
    except (MemoryError, Unreadable):
        raise
    except Exception as error:  # as in `probe_image`: any parser failure is this file's outcome
        raise Unreadable(Reason.DECODE_FAILED, f"the image does not decode: {error}") from error


def extract_image_clips(
    path: Path,
    *,
    clip_length: int,
    input_size: int,
    config: DetectorConfig,
    faces: FaceDetector,
) -> Extraction:
    """One clip per face on the still: the face crop repeated `clip_length` times."""
    info = probe_image(path, config.images)
    times = StageTimes()
    tick = time.monotonic()
    frame = decode_image(path, config.images)
    times.record("decode", tick, time.monotonic())
    tick = time.monotonic()
    height, width = frame.shape[:2]
    min_side = config.faces.min_face_px
    detections = [d for d in faces.detect(frame) if min(d.width, d.height) >= min_side]
    frames = [frame] * clip_length
    clips = []
    crops = []
    for track_id, face in enumerate(detections):
        boxes = np.tile(np.array([[face.x0, face.y0, face.x1, face.y1]]), (clip_length, 1))
        crops.append(square_crops(boxes, config.faces.crop_scale)[0])
        clips.append(
            FaceClip(
                pixels=cut_clip(frames, square_crops(boxes, config.faces.crop_scale), input_size),
                start_frame=0,
                end_frame=1,
                track_id=track_id,
                box=normalised_box(boxes[0], width, height),
                coverage=1.0,
            )
        )
    times.record("faces", tick, time.monotonic())
    hasher = new_hasher(config)
    if hasher is not None:  # a still is a one-frame video to the bank
        tick = time.monotonic()
        hasher.add_frame(frame, 0, 0.0, np.stack(crops) if crops else None)
        times.record("hash", tick, time.monotonic())
    notes = [f"animated image: only the first of {info.frames} frames is screened"]
    return Extraction(
        probe=info,
        clips=clips,
        frames_analyzed=1,
        faces_detected=len(detections),
        tracks=len(clips),
        warnings=notes if info.frames > 1 else [],
        times=times,
        hashes=hasher.hashes(whole=True) if hasher is not None else None,
    )


def hash_image(path: Path, *, config: DetectorConfig, faces: FaceDetector) -> VideoHashes:
    """The hashes of a still as a bank entry holds them: one frame and its faces."""
    probe_image(path, config.images)
    frame = decode_image(path, config.images)
    min_side = config.faces.min_face_px
    detections = [d for d in faces.detect(frame) if min(d.width, d.height) >= min_side]
    boxes = np.array([[d.x0, d.y0, d.x1, d.y1] for d in detections]).reshape(-1, 4)
    hasher = VideoHasher(config.known_fakes.hashing)
    crops = square_crops(boxes, config.faces.crop_scale) if len(boxes) else None
    hasher.add_frame(frame, 0, 0.0, crops)
    return hasher.hashes(whole=True)


def _refuse_over_pixels(width: int, height: int, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise Unreadable(
            Reason.RESOLUTION_TOO_LARGE,
            f"{width}x{height} = {width * height} pixels > {limits.max_pixels}",
        )


def _exif_transposes(image: object) -> bool:
    """Whether the EXIF orientation swaps width and height (orientations 5 to 8)."""
    getexif = getattr(image, "getexif", None)
    if getexif is None:
        return False
    try:
        orientation = getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block changes nothing but the orientation
        return False
    return orientation in (5, 6, 7, 8)
