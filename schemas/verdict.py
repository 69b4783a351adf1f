"""The result of screening one video: what was found, where, by which model, how sure.

A verdict is never a silent 0.5: a video that cannot be decoded is
`unreadable`, one without a usable face is `no_face`, each with a reason code;
only `suspected_deepfake` and `likely_real` carry a score.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.model import ModelInfo, Probability, Thresholds
from schemas.upload import Sha256Hex, VideoId

MAX_TIMELINE = 4096

# The shape of a stored `ScreeningVerdict`. Bump it with every change of the model:
# it is part of the verdict cache key, so entries of another shape are never read.
VERDICT_SCHEMA_VERSION: Final = 1


class Outcome(str, Enum):
    SUSPECTED_DEEPFAKE = "suspected_deepfake"
    LIKELY_REAL = "likely_real"
    NO_FACE = "no_face"
    UNREADABLE = "unreadable"


class Action(str, Enum):
    """What a moderator should do: `review` and `block` come from the model's thresholds."""

    NONE = "none"
    REVIEW = "review"
    BLOCK = "block"


class Reason(str, Enum):
    """Why a video is `unreadable` or `no_face` (machine-readable, stable)."""

    # unreadable: refused before decoding
    EMPTY_FILE = "empty_file"
    FILE_TOO_LARGE = "file_too_large"
    NOT_A_VIDEO = "not_a_video"
    CORRUPT_CONTAINER = "corrupt_container"
    NO_VIDEO_STREAM = "no_video_stream"
    RESOLUTION_TOO_LARGE = "resolution_too_large"
    TOO_LONG = "too_long"
    TOO_MANY_FRAMES = "too_many_frames"
    TOO_SHORT = "too_short"
    # unreadable: failed while decoding
    DECODE_FAILED = "decode_failed"
    DECODE_TIMEOUT = "decode_timeout"
    DECODER_CRASHED = "decoder_crashed"
    # no_face
    NO_FACE_DETECTED = "no_face_detected"
    NO_STABLE_FACE_TRACK = "no_stable_face_track"


UNREADABLE_REASONS = frozenset(
    {
        Reason.EMPTY_FILE,
        Reason.FILE_TOO_LARGE,
        Reason.NOT_A_VIDEO,
        Reason.CORRUPT_CONTAINER,
        Reason.NO_VIDEO_STREAM,
        Reason.RESOLUTION_TOO_LARGE,
        Reason.TOO_LONG,
        Reason.TOO_MANY_FRAMES,
        Reason.TOO_SHORT,
        Reason.DECODE_FAILED,
        Reason.DECODE_TIMEOUT,
        Reason.DECODER_CRASHED,
    }
)
NO_FACE_REASONS = frozenset({Reason.NO_FACE_DETECTED, Reason.NO_STABLE_FACE_TRACK})

UnitInterval = Annotated[float, Field(ge=0.0, le=1.0)]


class FaceBox(BaseModel):
    """A face box in the displayed (rotation-corrected) frame, normalised to [0, 1]."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x: UnitInterval
    y: UnitInterval
    width: UnitInterval
    height: UnitInterval


class ClipScore(BaseModel):
    """One scored 20-frame clip of one face track: a line of the moderator's timeline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start_s: float = Field(ge=0.0)
    end_s: float = Field(ge=0.0)
    start_frame: int = Field(ge=0)
    end_frame: int = Field(ge=0, description="exclusive")
    track_id: int = Field(ge=0)
    score: Probability
    box: FaceBox
    face_coverage: UnitInterval = Field(
        description="share of the clip's frames where the face was detected (others interpolated)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> ClipScore:
        if self.end_s < self.start_s or self.end_frame <= self.start_frame:
            raise ValueError("a clip must end after it starts")
        return self


class VideoProperties(BaseModel):
    """What the probe read from the container, after rotation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(ge=0)
    height: int = Field(ge=0)
    fps: float = Field(ge=0.0)
    frame_count: int = Field(ge=0)
    duration_s: float = Field(ge=0.0)
    rotation: int = Field(description="degrees clockwise applied to display the frames")
    size_bytes: int = Field(ge=0)


class ScreeningVerdict(BaseModel):
    """The verdict on one video, with the evidence a moderator needs."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    video_id: VideoId
    uri: str = Field(max_length=4096)
    content_sha256: Sha256Hex
    outcome: Outcome
    reason: Reason | None = None
    reason_detail: str | None = Field(default=None, max_length=1024)
    score: Probability | None = Field(
        default=None, description="calibrated P(fake) of the most suspicious face track"
    )
    action: Action = Action.NONE
    thresholds: Thresholds
    model: ModelInfo
    timeline: list[ClipScore] = Field(default_factory=list, max_length=MAX_TIMELINE)
    faces_tracked: int = Field(ge=0)
    frames_analyzed: int = Field(ge=0)
    video: VideoProperties | None = None
    warnings: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list, max_length=32
    )
    cache_hit: bool = False
    screened_at: datetime
    processing_ms: int = Field(ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> ScreeningVerdict:
        scored = self.outcome in (Outcome.SUSPECTED_DEEPFAKE, Outcome.LIKELY_REAL)
        if scored and (self.score is None or not self.timeline):
            raise ValueError(f"{self.outcome.value} needs a score and a timeline")
        if not scored and self.score is not None:
            raise ValueError(f"{self.outcome.value} must not carry a score")
        if self.outcome is Outcome.UNREADABLE and self.reason not in UNREADABLE_REASONS:
            raise ValueError("unreadable needs an unreadable reason code")
        if self.outcome is Outcome.NO_FACE and self.reason not in NO_FACE_REASONS:
            raise ValueError("no_face needs a no-face reason code")
        if self.outcome is not Outcome.SUSPECTED_DEEPFAKE and self.action is not Action.NONE:
            raise ValueError("only a suspected deepfake carries a review or block action")
        if self.outcome is Outcome.SUSPECTED_DEEPFAKE and self.action is Action.NONE:
            raise ValueError("a suspected deepfake must carry review or block")
        return self
