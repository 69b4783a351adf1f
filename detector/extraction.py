"""Video file → face clips and perceptual hashes, window by window; the types it returns.

This is the stage that touches untrusted media. It is a plain function over a
path so that the service can run it in an isolated worker process; the model
never runs here. Memory stays bounded by one window of frames: each window is
decoded, searched for faces, cut into clips, hashed and dropped before the
next. Which frames get decoded on the way is `detector.decoding`'s business.

The known-fakes signal hashes the same frames (`detector.hashing`): every
`frame_stride`-th frame of a window and the square crops of its face tracks,
so the bank lookup costs PDQ and never a second decode. `hash_whole_video`
walks every frame instead, for a bank entry.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from detector.arrays import Boxes, Clips, Frame
from detector.clips import cut_clip, square_crops
from detector.config import DetectorConfig
from detector.decoding import Window, WindowReader
from detector.faces import Detection, FaceDetector
from detector.hashing import VideoHasher, VideoHashes
from detector.probe import Unreadable, open_video
from detector.sampling import plan_windows
from detector.tracking import TrackRegistry, WindowTrack, link_window
from schemas.verdict import ImageProperties, Reason, VideoProperties


@dataclass(frozen=True)
class FaceClip:
    """One face track through one window: what the model scores and the timeline shows."""

    pixels: Clips  # (T, S, S, 3) uint8 RGB
    start_frame: int
    end_frame: int  # exclusive
    track_id: int
    box: tuple[float, float, float, float]  # mean face box x, y, w, h normalised to the frame
    coverage: float
    crops: Boxes | None = None  # (T, 4) the square crop of each frame, x0, y0, x1, y1 pixels


@dataclass
class StageTimes:
    """Seconds spent decoding and finding faces, and when (for the stages' busy shares).

    `spans` are (stage, start, end) in `time.monotonic()` seconds, a clock shared by
    the processes of one machine, so spans recorded in a decoder process line up with
    the model's in the parent.
    """

    decode_s: float = 0.0
    faces_s: float = 0.0
    hash_s: float = 0.0  # PDQ of frames and face tiles (the known-fakes signal)
    spans: list[tuple[str, float, float]] = field(default_factory=list)

    def record(self, stage: str, start: float, end: float) -> None:
        if stage == "decode":
            self.decode_s += end - start
        elif stage == "faces":
            self.faces_s += end - start
        elif stage == "hash":
            self.hash_s += end - start
        else:
            raise ValueError(f"unknown stage {stage!r}")
        self.spans.append((stage, start, end))

    def __iadd__(self, other: StageTimes) -> StageTimes:
        self.decode_s += other.decode_s
        self.faces_s += other.faces_s
        self.hash_s += other.hash_s
        self.spans.extend(other.spans)
        return self


class MediaProbe(Protocol):
    """What the probe of a video (`Probe`) or of a still (`ImageProbe`) tells a verdict."""

    @property
    def size_bytes(self) -> int: ...

    def properties(self) -> VideoProperties | ImageProperties: ...


@dataclass(frozen=True)
class Extraction:
    probe: MediaProbe
    clips: list[FaceClip]
    frames_analyzed: int
    faces_detected: int  # detections summed over the analysed frames
    tracks: int
    warnings: list[str] = field(default_factory=list)
    times: StageTimes = field(default_factory=StageTimes)
    hashes: VideoHashes | None = None  # None: hashing is off (`KnownFakesConfig.enabled`)


def new_hasher(config: DetectorConfig) -> VideoHasher | None:
    """A hasher for one upload, or None when the known-fakes signal is off."""
    return VideoHasher(config.known_fakes.hashing) if config.known_fakes.enabled else None


def hash_window(
    hasher: VideoHasher, window: Window, tracks: list[WindowTrack], crop_scale: float
) -> None:
    """Offer a decoded window's frames, with each frame's face crops, to the hasher.

    The crops are the clips' own (`square_crops` of each track), so the faces
    hashed are the faces scored.
    """
    crops = [square_crops(track.boxes, crop_scale) for track in tracks]
    for t, frame in enumerate(window.frames):
        number = window.start + t
        if hasher.wants(number):
            faces = np.stack([track[t] for track in crops]) if crops else None
            hasher.add_frame(frame, number, window.seconds[t], faces)


def extract_face_clips(
    path: Path,
    *,
    clip_length: int,
    input_size: int,
    config: DetectorConfig,
    faces: FaceDetector,
) -> Extraction:
    """Face clips of `path`; `Unreadable` when it is refused or cannot be decoded."""
    started = time.monotonic()
    deadline = started + config.limits.decode_timeout_s
    decoding = config.decoding
    with open_video(path, config.limits, threads=decoding.threads, deadline=deadline) as video:
        info = video.probe
        starts = plan_windows(info.frame_count, clip_length, config.sampling)
        if not starts:
            raise Unreadable(
                Reason.TOO_SHORT,
                f"{info.frame_count} frames; a clip needs {clip_length} consecutive frames",
            )
        reader = WindowReader(
            video,
            clip_length,
            seek=decoding.seek,
            deadline=deadline,
            timeout_s=config.limits.decode_timeout_s,
        )
        registry = TrackRegistry(config.faces)
        hasher = new_hasher(config)
        times = StageTimes()
        clips: list[FaceClip] = []
        warnings: list[str] = []
        frames_analyzed = faces_detected = 0
        windows = reader.windows(starts)
        while True:
            tick = time.monotonic()
            window = next(windows, None)
            times.record("decode", tick, time.monotonic())
            if window is None:
                break
            tick = time.monotonic()
            frames = window.frames
            detections = detect_strided(faces, frames, config.faces.detect_every)
            frames_analyzed += len(frames)
            faces_detected += sum(len(found) for found in detections if found)
            tracks = link_window(detections, config.faces)
            for track, track_id in zip(tracks, registry.assign(tracks), strict=True):
                crops = square_crops(track.boxes, config.faces.crop_scale)
                clips.append(
                    FaceClip(
                        pixels=cut_clip(frames, crops, input_size),
                        start_frame=window.start,
                        end_frame=window.start + clip_length,
                        track_id=track_id,
                        box=normalised_box(track.mean_box(), info.width, info.height),
                        coverage=track.coverage,
                        crops=crops,
                    )
                )
            times.record("faces", tick, time.monotonic())
            if hasher is not None:
                tick = time.monotonic()
                hash_window(hasher, window, tracks, config.faces.crop_scale)
                times.record("hash", tick, time.monotonic())
            _check_deadline(deadline, config.limits.decode_timeout_s)
        read = len(starts) - len(reader.stats.broken_windows)
        if frames_analyzed < read * clip_length:
            warnings.append(
                f"stream ended after {frames_analyzed // clip_length} of {len(starts)} windows "
                f"({info.frame_count} frames indexed)"
            )
        if reader.stats.broken_windows:
            warnings.append(
                f"windows at frames {reader.stats.broken_windows} skipped: a frame did not decode"
            )

    if frames_analyzed == 0:
        raise Unreadable(
            Reason.DECODE_FAILED,
            f"no complete {clip_length}-frame window could be decoded "
            f"({info.frame_count} frames indexed)",
        )
    return Extraction(
        probe=info,
        clips=clips,
        frames_analyzed=frames_analyzed,
        faces_detected=faces_detected,
        tracks=registry.count,
        warnings=warnings,
        times=times,
        hashes=hasher.hashes() if hasher is not None else None,
    )


def hash_whole_video(
    path: Path, *, clip_length: int, config: DetectorConfig, faces: FaceDetector
) -> VideoHashes:
    """The hashes of every frame of a video (every k-th beyond `entry_max_frames`), faces
    tracked as in screening; `Unreadable` when it is refused or nothing decodes.

    What a bank entry holds: a re-upload that was trimmed or had its frame rate
    changed samples other moments than the original's windows, so the entry
    covers them all, every frame, so that each frame a copy samples meets one
    of its own. Frames are walked in consecutive windows of `clip_length`
    (a tail shorter than one is not hashed), within the decode time limit.
    """
    started = time.monotonic()
    deadline = started + config.limits.decode_timeout_s
    hashing = config.known_fakes.hashing
    threads = config.decoding.threads
    with open_video(path, config.limits, threads=threads, deadline=deadline) as video:
        count = video.probe.frame_count
        stride = max(1, math.ceil(count / hashing.entry_max_frames))
        hasher = VideoHasher(replace(hashing, frame_stride=stride))
        starts = list(range(0, count - clip_length + 1, clip_length))
        if not starts:
            raise Unreadable(
                Reason.TOO_SHORT, f"{count} frames; hashing walks {clip_length}-frame windows"
            )
        reader = WindowReader(
            video, clip_length, deadline=deadline, timeout_s=config.limits.decode_timeout_s
        )
        hashed = 0
        for window in reader.windows(starts):
            detections = detect_strided(faces, window.frames, config.faces.detect_every)
            tracks = link_window(detections, config.faces)
            hash_window(hasher, window, tracks, config.faces.crop_scale)
            hashed += 1
            _check_deadline(deadline, config.limits.decode_timeout_s)
    if hashed == 0:
        raise Unreadable(Reason.DECODE_FAILED, "no window of the video could be decoded")
    return hasher.hashes(whole=True)


def detect_strided(
    faces: FaceDetector, frames: list[Frame], every: int
) -> list[list[Detection] | None]:
    """Detections on every `every`-th frame and the last (None on the frames skipped)."""
    last = len(frames) - 1
    return [
        faces.detect(frame) if t % every == 0 or t == last else None
        for t, frame in enumerate(frames)
    ]


def _check_deadline(deadline: float, limit_s: float) -> None:
    if time.monotonic() > deadline:
        raise Unreadable(Reason.DECODE_TIMEOUT, f"decoding took longer than {limit_s:.0f} s")


def normalised_box(box: Boxes, width: int, height: int) -> tuple[float, float, float, float]:
    x0 = min(max(float(box[0]) / width, 0.0), 1.0)
    y0 = min(max(float(box[1]) / height, 0.0), 1.0)
    x1 = min(max(float(box[2]) / width, 0.0), 1.0)
    y1 = min(max(float(box[3]) / height, 0.0), 1.0)
    return (round(x0, 4), round(y0, 4), round(x1 - x0, 4), round(y1 - y0, 4))
