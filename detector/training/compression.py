"""Frames through an H.264 encoder and back, as an uploaded video's frames are.

Uploads reach the detector as H.264 (or similar) at whatever bitrate the
uploader's phone or editor chose, often low: block edges, smeared texture and
frame-to-frame "breathing" of detail. Training clips made from still images
never went through a video codec, and per-frame JPEG does not make those
traces (no motion compensation, no shared references between frames), so a
model trained on them can read a heavily compressed real face as "not like
the real training faces", which is "fake". Training clips are therefore
encoded with libx264 at a random constant rate factor and decoded again, the
real clip and its pseudo-fake at the same setting, so compression is never a
cue for the label.

The encoder is the ffmpeg binary that `imageio-ffmpeg` ships (it has libx264);
it runs as a subprocess on raw frames through pipes, with no temporary files.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import numpy as np

from detector.arrays import Frame

CRF_RANGE = (18, 38)  # x264: 18 is visually lossless, 23 FaceForensics++ "c23", 38 blocky


class CompressionFailed(RuntimeError):
    pass


def ffmpeg_binary() -> str:
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def h264_round_trip(frames: Sequence[Frame], crf: int, fps: float = 25.0) -> list[Frame]:
    """`frames` (same-size RGB uint8) after H.264 at `crf` (4:2:0) and decoding.

    Odd widths or heights are padded by one edge pixel for 4:2:0 and cropped
    back, so the result has the input's size. The first frame is a key frame,
    the rest are predicted from it, as in the opening second of an upload.
    """
    if not frames:
        return []
    if not 0 <= crf <= 51:
        raise ValueError(f"an x264 rate factor is 0 to 51, not {crf}")
    height, width = frames[0].shape[:2]
    if any(frame.shape != (height, width, 3) for frame in frames):
        raise ValueError("all frames must be RGB of one size")
    even_h, even_w = height + height % 2, width + width % 2
    raw = b"".join(
        np.ascontiguousarray(
            np.pad(f, ((0, even_h - height), (0, even_w - width), (0, 0)), mode="edge")
        ).tobytes()
        for f in frames
    )
    binary = ffmpeg_binary()
    encode = [
        binary, "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
        "-s", f"{even_w}x{even_h}", "-r", f"{fps}", "-i", "pipe:0",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", str(int(crf)),
        "-pix_fmt", "yuv420p", "-threads", "1", "-f", "h264", "pipe:1",
    ]  # fmt: skip
    decode = [
        binary, "-loglevel", "error", "-f", "h264", "-i", "pipe:0",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-threads", "1", "pipe:1",
    ]  # fmt: skip
    encoded = _run(encode, raw)
    decoded = _run(decode, encoded)
    frame_bytes = even_h * even_w * 3
    if len(decoded) != frame_bytes * len(frames):
        raise CompressionFailed(
            f"decoded {len(decoded)} bytes, expected {len(frames)} frames of {frame_bytes}"
        )
    video = np.frombuffer(decoded, dtype=np.uint8).reshape(len(frames), even_h, even_w, 3)
    return [np.ascontiguousarray(frame[:height, :width]) for frame in video]


def _run(command: list[str], data: bytes) -> bytes:
    result = subprocess.run(command, input=data, capture_output=True, timeout=60, check=False)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip()
        raise CompressionFailed(f"ffmpeg exited {result.returncode}: {message}")
    return result.stdout
