"""Synthetic test videos built around a real face (``skimage.data.astronaut``).

Every generator writes one file and returns its :class:`~pathlib.Path`. Frames are RGB
``uint8`` arrays of shape ``(H, W, 3)`` throughout this module's API; they are converted to BGR
only at the point where OpenCV writes them. Sizes are ``(width, height)`` like OpenCV's.

All outputs are deterministic (fixed seeds) and small: the whole set is written in a couple of
seconds on two CPU cores.

Facts verified against opencv-contrib-python 4.11 (FFmpeg backend), MediaPipe 0.10.21 and the
ffmpeg binary shipped by imageio-ffmpeg (n9.0.2):

* MediaPipe full-range detection (``model_selection=1``, ``min_detection_confidence=0.5``) finds
  exactly one face in every frame of :func:`moving_face_video` and :func:`short_video`, two in
  every frame of :func:`two_faces_video` and none in :func:`no_face_video`.
* :func:`rotated_video`: ``CAP_PROP_ORIENTATION_META`` reads back ``rotation``, i.e. the
  *clockwise* turn a player applies to the stored frames for display. The stored frames are the
  upright frames turned ``rotation`` degrees counter-clockwise. ``CAP_PROP_ORIENTATION_AUTO`` is
  *off* by default in this build: frames come back as stored (rotated) and
  ``CAP_PROP_FRAME_WIDTH``/``HEIGHT`` report the stored size. After ``set(ORIENTATION_AUTO, 1)``
  frames come back upright and width/height report the *displayed* size. The legacy
  ``-metadata:s:v:0 rotate=`` tag is ignored by this ffmpeg; ``-display_rotation``
  (counter-clockwise, an input option) is what works, hence the negated angle below.
  MediaPipe finds the face in every upright frame, but also in some raw 90/270-degree frames
  (about 1 in 3 / 1 in 10): test orientation by frame shape, not by "no face when rotated".
* :func:`truncated_video`: OpenCV's mp4v writer puts the ``moov`` atom at the end of the file,
  so the truncated file does not open at all (``isOpened()`` is False, zero frames read).
* :func:`zero_byte_file` and :func:`not_a_video` do not open either.
* :func:`huge_resolution_video`: ``cv2.VideoCapture(path, cv2.CAP_FFMPEG)`` opens it in ~1 ms
  and reports 16000 x 16000 from the header; peak RSS grows by ~10 MiB (no frame buffer is
  allocated) and ``read()`` returns False at once because the frame data is missing.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from skimage import data

from detector.training.compression import ffmpeg_binary

__all__ = [
    "astronaut_face",
    "huge_resolution_video",
    "moving_face_video",
    "no_face_video",
    "not_a_video",
    "rotated_video",
    "short_video",
    "truncated_video",
    "two_faces_video",
    "write_video",
    "zero_byte_file",
]

Frame = npt.NDArray[np.uint8]
Size = tuple[int, int]

# MediaPipe full-range detection on the 512x512 astronaut finds the face at
# x=174..278, y=68..172 (score 0.91). The crop keeps ~45% of that box as margin on every side,
# so hair, chin and some background surround the face.
_FACE_ROWS = slice(21, 219)
_FACE_COLS = slice(127, 325)


@functools.lru_cache(maxsize=1)
def _astronaut_face_cached() -> Frame:
    img = np.asarray(data.astronaut(), dtype=np.uint8)  # type: ignore[no-untyped-call]
    crop: Frame = np.ascontiguousarray(img[_FACE_ROWS, _FACE_COLS, :3])
    crop.setflags(write=False)
    return crop


def astronaut_face() -> Frame:
    """Return the astronaut's face crop with margin (RGB uint8, 198x198)."""
    return _astronaut_face_cached().copy()


def write_video(path: Path, frames: Sequence[Frame], fps: float = 25.0) -> Path:
    """Write RGB ``frames`` (all the same shape) to ``path`` as mp4v/.mp4 with OpenCV."""
    if not frames:
        raise ValueError("write_video needs at least one frame")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    fourcc = cv2.VideoWriter.fourcc(*"mp4v")
    writer = cv2.VideoWriter(str(path), fourcc, float(fps), (int(width), int(height)))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter could not open {path}")
    try:
        for frame in frames:
            if frame.shape[:2] != (height, width):
                raise ValueError(f"frame shape {frame.shape} differs from {(height, width, 3)}")
            writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


# --------------------------------------------------------------------------- frame synthesis


def _background(size: Size, seed: int = 0) -> Frame:
    """A textured (non-flat) but face-free RGB background."""
    width, height = size
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    blurred = np.asarray(cv2.GaussianBlur(noise, (0, 0), sigmaX=3.0), dtype=np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    stripes = 0.5 + 0.5 * np.sin(xx / 9.0 + yy / 23.0)
    base = np.stack(
        [
            60 + 70 * xx / max(width - 1, 1),
            90 + 50 * stripes,
            140 - 60 * yy / max(height - 1, 1),
        ],
        axis=-1,
    )
    out = np.clip(0.6 * base + 0.4 * blurred, 0, 255)
    return np.asarray(out, dtype=np.uint8)


def _scaled(face: Frame, height: int) -> Frame:
    h, w = face.shape[:2]
    new_w = max(1, round(w * height / h))
    interp = cv2.INTER_AREA if height < h else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(face, (new_w, height), interpolation=interp), dtype=np.uint8)


def _paste(canvas: Frame, patch: Frame, x: int, y: int) -> None:
    h, w = patch.shape[:2]
    ch, cw = canvas.shape[:2]
    if x < 0 or y < 0 or x + w > cw or y + h > ch:
        raise ValueError(f"patch {w}x{h} at ({x},{y}) leaves the {cw}x{ch} frame")
    canvas[y : y + h, x : x + w] = patch


def _moving_face_frames(frames: int, size: Size) -> list[Frame]:
    """One face sweeping across a textured background while zooming in and out.

    The pasted face crop's height oscillates between 35% and 60% of the frame height.
    """
    width, height = size
    face = _astronaut_face_cached()
    bg = _background(size, seed=1)
    out: list[Frame] = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        frac = 0.475 - 0.125 * np.cos(2 * np.pi * t)  # 0.35 -> 0.60 -> 0.35
        patch = _scaled(face, round(frac * height))
        ph, pw = patch.shape[:2]
        x = round((width - pw) * (0.5 - 0.45 * np.cos(np.pi * t)))  # left -> right
        y = round((height - ph) * (0.5 + 0.4 * np.sin(2 * np.pi * t)))
        canvas = bg.copy()
        _paste(canvas, patch, x, y)
        out.append(canvas)
    return out


def moving_face_video(
    path: Path, frames: int = 60, size: Size = (320, 240), fps: float = 25.0
) -> Path:
    """One face moving left to right over a textured background, zooming smoothly.

    The face crop's height varies between 35% and 60% of the frame height and it always stays
    fully inside the frame.
    """
    return write_video(path, _moving_face_frames(frames, size), fps)


def two_faces_video(
    path: Path, frames: int = 40, size: Size = (480, 240), fps: float = 25.0
) -> Path:
    """Two faces side by side (the right one mirrored and 85% as large), drifting slightly.

    Each face stays inside its own half of the frame, so they never overlap.
    """
    width, height = size
    face = _astronaut_face_cached()
    left = _scaled(face, round(0.55 * height))
    right = _scaled(np.ascontiguousarray(face[:, ::-1]), round(0.55 * 0.85 * height))
    half = width // 2
    bg = _background(size, seed=2)
    out: list[Frame] = []
    for i in range(frames):
        phase = 2 * np.pi * i / max(frames, 1)
        canvas = bg.copy()
        for patch, x0, sign in ((left, 0, 1.0), (right, half, -1.0)):
            ph, pw = patch.shape[:2]
            if pw > half:
                raise ValueError(f"frame {size} too narrow for two faces")
            x = x0 + round((half - pw) * (0.5 + 0.3 * sign * np.sin(phase)))
            y = round((height - ph) * (0.5 + 0.3 * np.cos(phase)))
            _paste(canvas, patch, x, y)
        out.append(canvas)
    return write_video(path, out, fps)


def no_face_video(path: Path, frames: int = 40, size: Size = (320, 240), fps: float = 25.0) -> Path:
    """Moving shapes and noise over a textured background; no face anywhere."""
    width, height = size
    rng = np.random.default_rng(3)
    bg = _background(size, seed=3)
    out: list[Frame] = []
    for i in range(frames):
        t = i / max(frames, 1)
        canvas = bg.copy()
        cx = round(width * (0.2 + 0.6 * t))
        cy = round(height * (0.5 + 0.3 * np.sin(2 * np.pi * t)))
        cv2.circle(canvas, (cx, cy), max(4, height // 6), (220, 40, 40), -1)
        rx = round(width * (0.8 - 0.6 * t))
        side = height // 8
        cv2.rectangle(canvas, (rx - side, side), (rx + side, height // 3), (30, 200, 60), -1)
        pts = np.array(
            [
                [width // 2, round(height * (0.9 - 0.3 * t))],
                [width // 3, height - 5],
                [2 * width // 3, height - 5],
            ],
            dtype=np.int32,
        )
        cv2.fillPoly(canvas, [pts], (40, 60, 220))
        noise = rng.integers(-20, 21, size=canvas.shape, dtype=np.int16)
        out.append(np.clip(canvas.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    return write_video(path, out, fps)


def short_video(path: Path, frames: int = 12, size: Size = (320, 240), fps: float = 25.0) -> Path:
    """A moving-face video with fewer than 20 frames."""
    if not 1 <= frames < 20:
        raise ValueError("short_video needs 1 <= frames < 20")
    return moving_face_video(path, frames=frames, size=size, fps=fps)


def rotated_video(
    path: Path,
    rotation: int = 90,
    frames: int = 40,
    size: Size = (320, 240),
    fps: float = 25.0,
) -> Path:
    """A face video stored rotated, with display-rotation metadata that makes it upright.

    ``rotation`` (a multiple of 90) is the clockwise turn a player must apply for display, the
    value ``cv2.CAP_PROP_ORIENTATION_META`` reports. The stored frames are the upright frames
    (of displayed ``size``) turned ``rotation`` degrees counter-clockwise.
    """
    if rotation % 90:
        raise ValueError("rotation must be a multiple of 90")
    rotation %= 360
    path = Path(path)
    upright = _moving_face_frames(frames, size)
    stored = [np.ascontiguousarray(np.rot90(f, k=rotation // 90)) for f in upright]
    with tempfile.TemporaryDirectory() as tmp:
        raw = write_video(Path(tmp) / "stored.mp4", stored, fps)
        path.parent.mkdir(parents=True, exist_ok=True)
        # -display_rotation is counter-clockwise; the metadata is read back as clockwise.
        cmd = [
            ffmpeg_binary(),
            "-y",
            "-loglevel",
            "error",
            "-display_rotation",
            str(-rotation),
            "-i",
            str(raw),
            "-c",
            "copy",
            str(path),
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return path


def truncated_video(path: Path) -> Path:
    """A valid moving-face mp4 cut to half its bytes (its ``moov`` atom is lost)."""
    path = Path(path)
    moving_face_video(path, frames=40)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    return path


def zero_byte_file(path: Path) -> Path:
    """An empty file (typically named ``*.mp4``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def not_a_video(path: Path) -> Path:
    """Plain text under whatever name (e.g. ``*.mp4``); OpenCV/FFmpeg refuse to open it.

    Not a PNG's bytes: FFmpeg probes content, so a PNG named ``.mp4`` opens as a 1-frame video.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a video, just some text\n" * 20)
    return path


# FFmpeg's av_image_check_size() rejects any frame with (w + 128) * (h + 128) >= 2**31 / 8,
# so e.g. 40000x40000 does not open at all (isOpened() is False, "Picture size ... is invalid").
_FFMPEG_MAX_AREA = (2**31 - 1) // 8


def huge_resolution_video(path: Path, width: int = 16000, height: int = 16000) -> Path:
    """A ~1 KiB YUV4MPEG2 file whose header declares ``width`` x ``height``.

    Only one ``FRAME`` marker and a few bytes follow, so a header-only prober sees the huge
    size (16000x16000 = 256 Mpx by default; 40000x6000 also works) while decoding fails. The
    size must pass FFmpeg's own sanity limit (see ``_FFMPEG_MAX_AREA``), otherwise OpenCV does
    not open the file at all. Name it ``*.y4m``; FFmpeg picks the demuxer by content anyway.
    """
    if (width + 128) * (height + 128) >= _FFMPEG_MAX_AREA:
        raise ValueError(f"{width}x{height} exceeds FFmpeg's limit; OpenCV would not open it")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\n".encode("ascii")
    path.write_bytes(header + b"FRAME\n" + bytes(1024))
    return path


def audio_only_video(path: Path, seconds: float = 2.0) -> Path:
    """A well-formed container with one audio track (a 440 Hz tone) and no video track.

    The container follows the suffix (``.mp4``, ``.mov``, ``.m4a``, ``.mkv``, ``.webm``...);
    WebM gets Opus, everything else AAC. OpenCV's FFmpeg backend does not open such a file at
    all (``isOpened()`` is False): it wants a video stream. ffmpeg writes the MP4's ``moov``
    after the ``mdat`` (no ``-movflags +faststart``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "libopus" if path.suffix.lower() == ".webm" else "aac"
    cmd = [
        ffmpeg_binary(),
        "-y",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:duration={seconds}",
        "-c:a",
        codec,
        str(path),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return path
