"""The result of screening one upload: what was found, by which signal, where, how sure.

A verdict combines independent signals (the upload's own content credentials,
the bank of known fakes, the model), each reported in `signals` with its own
outcome and action; the verdict's action is the strictest of them and
`action_signal` names the one that set it. An allow-list entry of the bank
(a moderator ruled the content real) silences the model's action, never the
credentials': the model's result is then marked `suppressed` and still shown.
A verdict is never a silent 0.5: media that cannot be decoded is
`unreadable`, media without a usable face is `no_face`, each with a reason
code; only the model's `suspected_deepfake` and `likely_real` carry a score.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.model import ModelInfo, Probability, Thresholds
from schemas.provenance import Provenance
from schemas.upload import Sha256Hex, VideoId

MAX_TIMELINE = 4096

# The shape of a stored `ScreeningVerdict`. Bump it with every change of the model:
# it is part of the verdict cache key, so entries of another shape are never read.
VERDICT_SCHEMA_VERSION: Final = 4


class Outcome(str, Enum):
    SUSPECTED_DEEPFAKE = "suspected_deepfake"
    LIKELY_REAL = "likely_real"
    NO_FACE = "no_face"
    UNREADABLE = "unreadable"
    DECLARED_SYNTHETIC = "declared_synthetic"  # its own valid credentials declare generative AI
    CREDENTIALS_INVALID = "credentials_invalid"  # only when the operator asks to review those


class Action(str, Enum):
    """What the platform should do, mildest first.

    `label`: publish with a visible "AI-generated" label; `review`: a moderator
    looks before anything else happens; `block`: take it down pending review.
    """

    NONE = "none"
    LABEL = "label"
    REVIEW = "review"
    BLOCK = "block"


_SEVERITY: Final = {Action.NONE: 0, Action.LABEL: 1, Action.REVIEW: 2, Action.BLOCK: 3}


def severity(action: Action) -> int:
    """Order of strictness: none < label < review < block."""
    return _SEVERITY[action]


class Signal(str, Enum):
    """Where a finding came from. Ties in strictness go to the earlier one."""

    CONTENT_CREDENTIALS = "content_credentials"
    KNOWN_FAKES = "known_fakes"  # the bank of moderators' rulings, matched by perceptual hashes
    MODEL = "model"


SIGNAL_PRIORITY: Final = (Signal.CONTENT_CREDENTIALS, Signal.KNOWN_FAKES, Signal.MODEL)


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
    # content credentials
    DECLARED_AI_GENERATED = "declared_ai_generated"
    DECLARED_AI_COMPOSITE = "declared_ai_composite"
    INVALID_CONTENT_CREDENTIALS = "invalid_content_credentials"
    # known fakes
    MATCHES_CONFIRMED_FAKE = "matches_confirmed_fake"  # a moderator confirmed it a deepfake
    ALLOW_LISTED = "allow_listed"  # a moderator ruled it real: the model's flag is silenced


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
DECLARED_REASONS = frozenset({Reason.DECLARED_AI_GENERATED, Reason.DECLARED_AI_COMPOSITE})
KNOWN_FAKES_REASONS = frozenset({Reason.MATCHES_CONFIRMED_FAKE, Reason.ALLOW_LISTED})
# The reasons each outcome may carry (None: no reason).
_OUTCOME_REASONS: Final[dict[Outcome, frozenset[Reason | None]]] = {
    Outcome.SUSPECTED_DEEPFAKE: frozenset({None, Reason.MATCHES_CONFIRMED_FAKE}),
    Outcome.LIKELY_REAL: frozenset({None, Reason.ALLOW_LISTED}),
    Outcome.UNREADABLE: frozenset(UNREADABLE_REASONS),
    Outcome.NO_FACE: frozenset(NO_FACE_REASONS),
    Outcome.DECLARED_SYNTHETIC: frozenset(DECLARED_REASONS),
    Outcome.CREDENTIALS_INVALID: frozenset({Reason.INVALID_CONTENT_CREDENTIALS}),
}
_SIGNAL_OUTCOMES: Final = {
    Signal.MODEL: frozenset(
        {Outcome.SUSPECTED_DEEPFAKE, Outcome.LIKELY_REAL, Outcome.NO_FACE, Outcome.UNREADABLE}
    ),
    Signal.CONTENT_CREDENTIALS: frozenset(
        {Outcome.DECLARED_SYNTHETIC, Outcome.CREDENTIALS_INVALID}
    ),
    Signal.KNOWN_FAKES: frozenset({Outcome.SUSPECTED_DEEPFAKE, Outcome.LIKELY_REAL}),
}
SCORED_OUTCOMES = frozenset({Outcome.SUSPECTED_DEEPFAKE, Outcome.LIKELY_REAL})

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


class SignalResult(BaseModel):
    """What one signal found on its own, and the action it asks for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signal: Signal
    outcome: Outcome | None = Field(description="None: this signal found nothing to report")
    reason: Reason | None = None
    action: Action = Action.NONE
    summary: str = Field(max_length=512)
    suppressed: bool = Field(
        default=False,
        description="the model's action, silenced by an allow-list entry of the bank "
        "(the known_fakes result says which); it does not count towards the verdict's action",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SignalResult:
        if self.suppressed and (self.signal is not Signal.MODEL or self.action is Action.NONE):
            raise ValueError("only the model's action can be suppressed, and only when it has one")
        if self.outcome is None:
            if self.reason is not None or self.action is not Action.NONE:
                raise ValueError("a signal that found nothing carries no reason and no action")
            return self
        if self.outcome not in _SIGNAL_OUTCOMES[self.signal]:
            raise ValueError(f"{self.signal.value} does not conclude {self.outcome.value}")
        if self.reason not in _OUTCOME_REASONS[self.outcome]:
            raise ValueError(f"{self.outcome.value} does not go with reason {self.reason}")
        if (self.signal is Signal.KNOWN_FAKES) != (self.reason in KNOWN_FAKES_REASONS):
            raise ValueError(f"only known_fakes gives, and always gives, reasons {_KNOWN_NAMES}")
        if self.signal is Signal.KNOWN_FAKES and (
            (self.outcome is Outcome.SUSPECTED_DEEPFAKE)
            != (self.reason is Reason.MATCHES_CONFIRMED_FAKE)
        ):
            raise ValueError("known_fakes: suspected_deepfake goes with matches_confirmed_fake")
        if self.outcome in (Outcome.LIKELY_REAL, Outcome.NO_FACE, Outcome.UNREADABLE) and (
            self.action is not Action.NONE
        ):
            raise ValueError(f"{self.outcome.value} asks for no action")
        return self


_KNOWN_NAMES: Final = ", ".join(sorted(r.value for r in KNOWN_FAKES_REASONS))


def deciding_signal(results: list[SignalResult]) -> SignalResult | None:
    """The strictest result with an action not suppressed (ties: `SIGNAL_PRIORITY`), or None."""
    acting = [r for r in results if r.action is not Action.NONE and not r.suppressed]
    if not acting:
        return None
    return max(acting, key=lambda r: (severity(r.action), -SIGNAL_PRIORITY.index(r.signal)))


def headline_signal(results: list[SignalResult]) -> SignalResult:
    """The result whose outcome, reason and action the verdict shows.

    The deciding signal when one asks for an action; else the bank's finding
    when it has one (a match whose action the operator turned off, or an
    allow-list entry); else the model's.
    """
    deciding = deciding_signal(results)
    if deciding is not None:
        return deciding
    known = next((r for r in results if r.signal is Signal.KNOWN_FAKES), None)
    if known is not None and known.outcome is not None:
        return known
    model = next((r for r in results if r.signal is Signal.MODEL), None)
    if model is None:
        raise ValueError("the model's result is always reported")
    return model


class KnownFakeMatch(BaseModel):
    """The bank entry an upload matched, the ruling it came from, and how well it matched.

    Shares are of the upload's hashed frames and faces (of at least the minimum
    quality) that lie within the match rule's distance of the entry's;
    distances are Hamming bits between PDQ hashes (of 256), over the matched ones.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    entry_id: str = Field(min_length=1, max_length=256)
    decision: Literal["confirmed_fake", "false_positive", "confirmed_real"]
    moderator: str = Field(min_length=1, max_length=256)
    decided_at: datetime
    decision_event_id: str | None = Field(
        default=None, max_length=128, description="id of the decision CloudEvent of the ruling"
    )
    answers_event_id: str | None = Field(
        default=None, max_length=128, description="the flag or verdict the ruling answered"
    )
    entry_content_sha256: Sha256Hex | None = Field(
        default=None, description="sha256 of the content the ruling was about"
    )
    entry_video_id: VideoId | None = None
    same_content: bool = Field(description="the upload is byte for byte the content ruled on")
    frame_share: UnitInterval
    face_share: UnitInterval
    frames_matched: int = Field(ge=0)
    frames_queried: int = Field(ge=0)
    faces_matched: int = Field(ge=0)
    faces_queried: int = Field(ge=0)
    frame_distance_median: float | None = Field(default=None, ge=0, le=256)
    frame_distance_min: int | None = Field(default=None, ge=0, le=256)
    face_distance_median: float | None = Field(default=None, ge=0, le=256)
    face_distance_min: int | None = Field(default=None, ge=0, le=256)
    mirrored: bool = Field(default=False, description="matched as a horizontally flipped copy")


class ImageProperties(BaseModel):
    """What the image probe read from the header of a still image."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = Field(max_length=32, description="e.g. JPEG, PNG, WEBP")
    width: int = Field(ge=0)
    height: int = Field(ge=0)
    size_bytes: int = Field(ge=0)


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
    """The verdict on one upload (a video or a still image), with the evidence a moderator needs.

    `outcome`, `reason` and `action` are those of the signal named by
    `action_signal`; when no signal asks for an action they are the model's.
    `score` and `timeline` are always the model's evidence.
    """

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
    action_signal: Signal | None = Field(
        default=None, description="the signal that set `action`; None when it is `none`"
    )
    signals: list[SignalResult] = Field(min_length=1, max_length=len(Signal))
    provenance: Provenance | None = Field(
        default=None, description="the upload's content credentials (C2PA), as read"
    )
    known_fake: KnownFakeMatch | None = Field(
        default=None, description="the bank entry the known_fakes signal found, with its evidence"
    )
    thresholds: Thresholds
    model: ModelInfo
    timeline: list[ClipScore] = Field(default_factory=list, max_length=MAX_TIMELINE)
    faces_tracked: int = Field(ge=0)
    frames_analyzed: int = Field(ge=0)
    media: Literal["video", "image"] = "video"
    video: VideoProperties | None = None
    image: ImageProperties | None = None
    warnings: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list, max_length=32
    )
    cache_hit: bool = False
    screened_at: datetime
    processing_ms: int = Field(ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> ScreeningVerdict:
        by_signal = {result.signal: result for result in self.signals}
        if len(by_signal) != len(self.signals):
            raise ValueError("one result per signal")
        model = by_signal.get(Signal.MODEL)
        if model is None:
            raise ValueError("the model's result is always reported")
        if model.outcome in SCORED_OUTCOMES and (self.score is None or not self.timeline):
            raise ValueError(f"the model's {model.outcome.value} needs a score and a timeline")
        if model.outcome not in SCORED_OUTCOMES and self.score is not None:
            raise ValueError(f"the model's {model.outcome} must not carry a score")
        self._check_known_fakes(by_signal, model)
        deciding = deciding_signal(self.signals)
        headline = headline_signal(self.signals)
        if self.action_signal is not (deciding.signal if deciding else None):
            raise ValueError("action_signal must name the strictest signal with an action")
        if (self.outcome, self.reason, self.action) != (
            headline.outcome,
            headline.reason,
            headline.action,
        ):
            raise ValueError(f"outcome, reason and action must be those of {headline.signal.value}")
        if self.media == "image" and self.video is not None:
            raise ValueError("an image verdict carries image properties, not video ones")
        if self.media == "video" and self.image is not None:
            raise ValueError("a video verdict carries video properties, not image ones")
        return self

    def _check_known_fakes(
        self, by_signal: dict[Signal, SignalResult], model: SignalResult
    ) -> None:
        known = by_signal.get(Signal.KNOWN_FAKES)
        found = known is not None and known.outcome is not None
        if found != (self.known_fake is not None):
            raise ValueError("known_fake is the evidence of a known_fakes finding, and only that")
        if self.known_fake is not None and known is not None:
            ruled_fake = self.known_fake.decision == "confirmed_fake"
            if ruled_fake != (known.reason is Reason.MATCHES_CONFIRMED_FAKE):
                raise ValueError("a confirmed_fake entry matches; any other allow-lists")
        allow_listed = known is not None and known.reason is Reason.ALLOW_LISTED
        if model.suppressed != (allow_listed and model.action is not Action.NONE):
            raise ValueError("the model's action is suppressed exactly when allow-listed")

    def signal(self, signal: Signal) -> SignalResult | None:
        """The result of one signal, if it was computed."""
        return next((r for r in self.signals if r.signal is signal), None)
