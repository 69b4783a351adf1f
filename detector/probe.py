"""Look at a video before decoding it, and refuse what is over the limits.

The probe reads only the container's header (OpenCV's FFmpeg backend) and the
file size. Anything it cannot vouch for becomes an `Unreadable` with a reason
code, so the decoder never sees a file we already know it should not open.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2

from detector.config import MediaLimits
from schemas.verdict import Reason, VideoProperties

# Leading bytes of containers FFmpeg reads; a file with one of them that still
# fails to open is corrupt rather than "not a video".
_CONTAINER_MAGIC: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"),  # MP4, MOV, 3GP
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"free"),
    (4, b"wide"),
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska, WebM
    (0, b"RIFF"),  # AVI
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),  # MPEG program stream
    (0, b"\x47"),  # MPEG transport stream (sync byte)
    (0, b"YUV4MPEG2"),
    (0, b"OggS"),
)


class Unreadable(Exception):
    """The video cannot or must not be decoded; `reason` is the verdict's reason code."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Probe:
    """Header facts of a video, in displayed orientation (after rotation)."""

    width: int
    height: int
    fps: float
    frame_count: int
    rotation: int
    size_bytes: int

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps

    def properties(self) -> VideoProperties:
        return VideoProperties(
            width=self.width,
            height=self.height,
            fps=round(self.fps, 3),
            frame_count=self.frame_count,
            duration_s=round(self.duration_s, 3),
            rotation=self.rotation,
            size_bytes=self.size_bytes,
        )


def looks_like_container(head: bytes) -> bool:
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _CONTAINER_MAGIC)


def open_capture(path: Path) -> cv2.VideoCapture:
    """An FFmpeg-backed capture that applies the container's rotation to the frames."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if capture.isOpened():
        capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    return capture


def probe(path: Path, limits: MediaLimits) -> Probe:
    """Header facts of `path`, or `Unreadable` when it is empty, over a limit or not a video."""
    size = path.stat().st_size
    if size == 0:
        raise Unreadable(Reason.EMPTY_FILE, "the file is empty")
    if size > limits.max_bytes:
        raise Unreadable(Reason.FILE_TOO_LARGE, f"{size} bytes > limit {limits.max_bytes}")
    with path.open("rb") as file:
        head = file.read(16)

    capture = open_capture(path)
    try:
        if not capture.isOpened():
            if looks_like_container(head):
                raise Unreadable(
                    Reason.CORRUPT_CONTAINER, "a video container that cannot be opened"
                )
            raise Unreadable(Reason.NOT_A_VIDEO, "no video container recognised")
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        rotation = int(capture.get(cv2.CAP_PROP_ORIENTATION_META)) % 360
    finally:
        capture.release()

    if width <= 0 or height <= 0:
        raise Unreadable(Reason.NO_VIDEO_STREAM, "the container has no decodable video stream")
    if width * height > limits.max_pixels:
        raise Unreadable(
            Reason.RESOLUTION_TOO_LARGE,
            f"{width}x{height} > limit of {limits.max_pixels} pixels",
        )
    if not math.isfinite(fps) or fps <= 0 or fps > 1000:
        raise Unreadable(Reason.NO_VIDEO_STREAM, f"implausible frame rate {fps}")
    if frame_count <= 0:
        raise Unreadable(Reason.NO_VIDEO_STREAM, "the video stream declares no frames")
    if frame_count > limits.max_frames:
        raise Unreadable(
            Reason.TOO_MANY_FRAMES, f"{frame_count} frames > limit {limits.max_frames}"
        )
    if frame_count / fps > limits.max_duration_s:
        raise Unreadable(
            Reason.TOO_LONG,
            f"{frame_count / fps:.1f} s > limit {limits.max_duration_s:.0f} s",
        )
    # With auto-orientation on, OpenCV reports the displayed (rotated) size.
    return Probe(width, height, fps, frame_count, rotation, size)
