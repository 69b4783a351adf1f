"""A bank entry as it travels: the value on the bank topic, and an entry of a bank file.

The hashes are written as vPDQ features in the text form of the vPDQ
reference implementation's hash files (`vpdq-hash-video` writes one line a
frame: `frame_number,quality,pdq_hex,timestamp`), so an entry's `frames` are a
vPDQ hash that vPDQ users can read, and a vPDQ hash from them can be read in.
Face crops are written the same way in `faces` (the frame each came from).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.decision import Decision
from schemas.upload import Sha256Hex, VideoId

BANK_FILE_FORMAT: Final = "deepscreen.bank"
MAX_FEATURES = 100_000  # per entry and kind: a 3-hour video hashed once a frame-second

# frame_number,quality,pdq_hex,timestamp (vPDQ's reference hash-file line)
VpdqLine = Annotated[
    str,
    Field(pattern=r"^[0-9]{1,9},[0-9]{1,3},[0-9a-f]{64},[0-9]{1,9}(\.[0-9]{1,6})?$"),
]


class BankEntryRecord(BaseModel):
    """One ruling and its content's hashes; the bank topic's key is `id`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=256)
    decision: Literal["confirmed_fake", "false_positive", "confirmed_real"]
    moderator: str = Field(min_length=1, max_length=256)
    decided_at: AwareDatetime
    reason: str = Field(default="", max_length=2048)
    content_sha256: Sha256Hex | None = None
    video_id: VideoId | None = None
    uri: str | None = Field(default=None, max_length=4096)
    answers_event_id: str | None = Field(default=None, max_length=128)
    decision_event_id: str | None = Field(
        default=None, max_length=128, description="id of the decision CloudEvent of the ruling"
    )
    frames: list[VpdqLine] = Field(max_length=MAX_FEATURES)
    faces: list[VpdqLine] = Field(default_factory=list, max_length=MAX_FEATURES)

    @property
    def ruling(self) -> Decision:
        return Decision(self.decision)


class VideoHashesRecord(BaseModel):
    """A screened upload's hashes as the verdict cache keeps them, beside its verdict.

    A moderator's ruling on the content is made from them later
    (`BankEntryRecord.frames`/`faces`), and a cached verdict's known-fakes
    finding is redone from them against the bank as it is when served.
    `face_probes[i]` are the neighbouring tiles of `faces[i]` (queries only).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    hashing: str = Field(max_length=64, description="fingerprint of the hashing configuration")
    frames: list[VpdqLine] = Field(default_factory=list, max_length=MAX_FEATURES)
    faces: list[VpdqLine] = Field(default_factory=list, max_length=MAX_FEATURES)
    face_probes: list[list[VpdqLine]] = Field(default_factory=list, max_length=MAX_FEATURES)
    mirrored_frames: list[VpdqLine] = Field(default_factory=list, max_length=MAX_FEATURES)
    mirrored_faces: list[VpdqLine] = Field(default_factory=list, max_length=MAX_FEATURES)
    mirrored_face_probes: list[list[VpdqLine]] = Field(
        default_factory=list, max_length=MAX_FEATURES
    )
    whole: bool = Field(
        default=False,
        description="hashed from every frame of the video, not only the windows screened",
    )


class BankFile(BaseModel):
    """A local bank: `deepscreen bank export` writes one, `bank import` and `--bank` read it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    format: Literal["deepscreen.bank"] = BANK_FILE_FORMAT
    version: Literal[1] = 1
    entries: list[BankEntryRecord] = Field(default_factory=list)
