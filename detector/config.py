"""Tunable limits and knobs of the video → verdict pipeline, in one frozen object.

Every limit exists because the input is untrusted: a video over any of them is
`unreadable` with a reason code, never a crash or an unbounded allocation.

These defaults are the only ones: the service's settings (`consumer.settings`)
and its fetch policy take theirs from here, so a default is changed here alone.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from schemas.verdict import Action

# The default model shipped inside the package (`deepscreen model ...` makes others).
PACKAGED_MODEL = Path(__file__).with_name("models") / "default.pt"


@dataclass(frozen=True)
class MediaLimits:
    """Refuse before decoding (bytes, pixels, duration, frames) and bound decoding time."""

    max_bytes: int = 2 * 1024**3
    max_pixels: int = 3840 * 2160
    max_duration_s: float = 3 * 3600.0
    max_frames: int = 3 * 3600 * 60
    decode_timeout_s: float = 300.0


@dataclass(frozen=True)
class SamplingConfig:
    """Windows of `clip_length` consecutive frames, spread over the whole video.

    `windows` is the default count; at most `max_windows`; never more than the
    video holds without overlap.
    """

    windows: int = 8
    max_windows: int = 32


@dataclass(frozen=True)
class DecodingConfig:
    """How windows are decoded: the decoder's threads, and whether gaps are sought over.

    With `seek` (the default) the decoder jumps to the keyframe before a window when
    that is cheaper than decoding through the gap, so a video costs what its windows
    cost; without it every frame from the start is decoded (the sequential pass, kept
    for comparison: both give the same frames). One thread a decoder by default: the
    service decodes several videos at once and the model wants the other cores.
    """

    threads: int = 1
    seek: bool = True


@dataclass(frozen=True)
class FaceConfig:
    """MediaPipe face detection and linking of detections into tracks within a window."""

    model_selection: int = 1  # 1: full-range model (faces up to ~5 m); 0: short-range (~2 m)
    min_confidence: float = 0.5
    detect_max_side: int = 1280  # frames are downscaled to this before detection
    link_iou: float = 0.3  # detections in consecutive frames with IoU >= this are one face
    max_gap: int = 5  # frames a track may go undetected before it ends
    min_coverage: float = 0.5  # share of a window's frames a track must be detected in
    min_face_px: int = 24  # faces smaller than this (short side, in the frame) are ignored
    crop_scale: float = 1.3  # square crop side = scale * max(face width, face height)
    window_link_iou: float = 0.2  # tracks of different windows with IoU >= this are one face
    # MediaPipe runs on every k-th frame of a window (and its last); boxes between are
    # interpolated along the track. 1 = every frame. 3: the figures are in bench/README.md.
    detect_every: int = 3


@dataclass(frozen=True)
class BatchingConfig:
    """Clips of concurrent videos are scored together: up to `batch_size`, waiting `wait_s`."""

    batch_size: int = 32
    wait_s: float = 0.02


# How the model runs on the CPU (`detector.backends`): today's TorchScript module, or a form
# derived from the artifact (frozen, quantised, exported to ONNX Runtime or OpenVINO).
CpuBackend = Literal[
    "torchscript",
    "torchscript-frozen",
    "torchscript-bf16",
    "torchscript-int8",
    "onnxruntime",
    "onnxruntime-int8",
    "openvino",
    "openvino-int8",
]
CPU_BACKENDS: tuple[CpuBackend, ...] = get_args(CpuBackend)
# `auto`: the fastest backend whose scores agree with `torchscript` on the shared clips,
# `openvino-int8` (bench/README.md), where its int8 form can be had: cached already, or
# calibration videos given; else the fastest fp32 one that agrees, `openvino`.
CpuBackendChoice = CpuBackend | Literal["auto"]
AUTO_BACKENDS: tuple[CpuBackend, CpuBackend] = ("openvino-int8", "openvino")


def default_derived_dir() -> Path:
    """`$XDG_CACHE_HOME/deepscreen/derived` (`~/.cache/...` without it): derived model forms."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "deepscreen" / "derived"


@dataclass(frozen=True)
class CpuInferenceConfig:
    """The model on the CPU: which backend, where derived forms are kept, how int8 calibrates.

    The default, `auto`, runs the fastest backend whose scores agree with the TorchScript
    module's on the shared clips (`python -m bench.backends`; figures in bench/README.md).
    An int8 form is calibrated on `calibration_clips` face clips cut from the operator's
    videos; without them (and with `self_calibrate`), `auto` starts on fp32 and calibrates
    the int8 form on the first `calibration_clips` face clips it scores.

    A batch (`BatchingConfig.batch_size` clips) runs `clips_per_run` clips at a time: a
    runtime's activation memory grows with the clips it is given at once, its throughput on
    the CPU hardly does (a 32-clip batch, OpenVINO int8 at 112 px: the process peaked at
    1624 MiB run whole, 913 MiB run 4 at a time, at the same ms a clip;
    `python -m bench.clips_per_run`).
    """

    backend: CpuBackendChoice = "auto"
    derived_dir: Path = field(default_factory=default_derived_dir)
    calibration_clips: int = 16
    self_calibrate: bool = True
    clips_per_run: int = 4

    def __post_init__(self) -> None:
        if self.clips_per_run < 1:
            raise ValueError("clips_per_run is at least 1")


@dataclass(frozen=True)
class IsolationConfig:
    """Decoder worker processes: how many videos are decoded at once, and their memory cap."""

    workers: int = 2
    memory_limit_mb: int = 4096


@dataclass(frozen=True)
class ImageLimits:
    """Still images: refused over these before their pixels are decoded."""

    max_bytes: int = 64 * 1024**2
    max_pixels: int = 50_000_000  # a decompression bomb declares far more


@dataclass(frozen=True)
class CredentialsConfig:
    """Reading content credentials (C2PA): trust, and the bounds on untrusted manifests.

    `trust_anchors_pem` holds the PEM certificates a signer must chain to for
    `trusted` (the C2PA conformance trust list in production); without it every
    valid signer is untrusted.
    """

    enabled: bool = True
    trust_anchors_pem: str | None = None
    read_timeout_s: float = 30.0
    max_manifest_mb: int = 16  # decompressed manifest store


@dataclass(frozen=True)
class HashingConfig:
    """Which frames are hashed and how pictures are prepared for PDQ."""

    frame_stride: int = 5  # hash frame numbers divisible by this
    # A bank entry (`hash_whole_video`) hashes every frame, so that a copy's frames, wherever
    # a trim or a new frame rate puts them, meet one of its own; above this many frames,
    # every k-th (cost and record size stay bounded). Measured in bench/README.md.
    entry_max_frames: int = 1800
    max_side: int = 640  # whole frames are downscaled to this before PDQ
    face_size: int = 256  # face tiles are resized to this square before PDQ
    tile_rungs: int = 10  # face tile sides: short side * 2^(-k/2), k = 0 .. tile_rungs - 1
    tile_grid: float = 0.25  # face tile centres lie on a grid of this share of the side
    probe_margin: float = 0.3  # within this share of a step of a boundary, probe both sides
    trim_borders: bool = True  # cut uniform letterbox/pillarbox borders off whole frames
    mirrored: bool = True  # also hash the pictures mirrored (to query for flipped copies)
    border_tolerance: int = 16  # a border row/column differs from black by at most this
    border_max_share: float = 0.25  # at most this share of a side is cut as border


@dataclass(frozen=True)
class MatchRule:
    """When a query matches an entry. The defaults are measured on the shared clips."""

    frame_distance: int = 31  # vPDQ's
    min_frame_share: float = 0.5
    face_distance: int = 24
    min_face_share: float = 0.3
    min_quality: int = 50  # of whole frames (vPDQ's own default)
    min_face_quality: int = 20  # of face tiles: small or dim faces' tiles score 20-35
    mirrored: bool = True  # also try the query's mirrored features (flipped copies)

    def __post_init__(self) -> None:
        if not 0 <= self.face_distance <= self.frame_distance <= 128:
            raise ValueError("distances satisfy 0 <= face_distance <= frame_distance <= 128")
        if not (0 < self.min_frame_share <= 1 and 0 < self.min_face_share <= 1):
            raise ValueError("shares are in (0, 1]")


@dataclass(frozen=True)
class KnownFakesConfig:
    """The bank of known fakes: whether uploads are hashed, how, and when they match an entry.

    `detector.hashing` and `detector.bank` use these; they live here, with the
    other defaults, so that the settings can take them without importing PDQ
    or FAISS.
    """

    enabled: bool = True  # hash every upload while it is decoded, and look it up in the bank
    hashing: HashingConfig = field(default_factory=HashingConfig)
    rule: MatchRule = field(default_factory=MatchRule)


@dataclass(frozen=True)
class ActionPolicy:
    """The action each signal asks for: a platform labels declared AI rather than removing it."""

    declared_ai: Action = Action.LABEL
    declared_composite: Action = Action.LABEL
    invalid_credentials: Action = Action.NONE
    model_review: Action = Action.REVIEW  # score at or above the review threshold
    model_block: Action = Action.BLOCK  # score at or above the block threshold
    # a match on a `confirmed_fake` entry of the bank; `block` is block pending review
    known_fake: Action = Action.BLOCK


@dataclass(frozen=True)
class DetectorConfig:
    limits: MediaLimits = field(default_factory=MediaLimits)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    faces: FaceConfig = field(default_factory=FaceConfig)
    images: ImageLimits = field(default_factory=ImageLimits)
    credentials: CredentialsConfig = field(default_factory=CredentialsConfig)
    actions: ActionPolicy = field(default_factory=ActionPolicy)
    known_fakes: KnownFakesConfig = field(default_factory=KnownFakesConfig)

    def policy_fingerprint(self) -> str:
        """A short hash of what turns findings into actions.

        The actions, the trust list, and which signals are read at all. Part of
        the verdict cache key: after an operator changes any of them, a cached
        verdict decided under the old policy is never served. (The bank's match
        rule is not here: a cache hit is matched against the bank again anyway.)
        """
        material = repr((self.actions, self.credentials, self.known_fakes.enabled))
        return hashlib.sha256(material.encode()).hexdigest()[:16]
