"""CloudEvents 1.0 envelopes (structured JSON mode) for what deepscreen publishes.

Event ids are deterministic: the same video, content and model always give the
same id, so a consumer downstream can drop the duplicates that at-least-once
delivery allows.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Final, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from schemas.verdict import VERDICT_SCHEMA_VERSION, Action, ScreeningVerdict

FLAG_TYPE: Final = "deepscreen.flag.v1"
VERDICT_TYPE: Final = "deepscreen.verdict.v1"
DEFAULT_SOURCE = "urn:deepscreen"
# The event types stay; the shape of their data is versioned here (CloudEvents
# `dataschema`): a consumer can tell which schema a flag follows.
SCHEMA_BASE: Final = "https://deepscreen.dev/schemas"
FLAG_DATASCHEMA: Final = f"{SCHEMA_BASE}/v{VERDICT_SCHEMA_VERSION}/deepfake-flag.schema.json"
VERDICT_DATASCHEMA: Final = f"{SCHEMA_BASE}/v{VERDICT_SCHEMA_VERSION}/verdict-event.schema.json"

DataT = TypeVar("DataT", bound=BaseModel)


class CloudEvent(BaseModel, Generic[DataT]):
    """The CloudEvents 1.0 required and common optional attributes, JSON data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=128)
    source: str = Field(min_length=1, max_length=512)
    type: str = Field(min_length=1, max_length=128)
    subject: str | None = Field(default=None, max_length=256)
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str | None = Field(default=None, max_length=512)
    data: DataT


class DeepfakeFlag(CloudEvent[ScreeningVerdict]):
    """`deepscreen.flag.v1` on the moderation topic: one per verdict that asks for an action."""

    type: Literal["deepscreen.flag.v1"] = FLAG_TYPE


class VerdictEvent(CloudEvent[ScreeningVerdict]):
    """`deepscreen.verdict.v1` on the optional audit topic: one per screened upload."""

    type: Literal["deepscreen.verdict.v1"] = VERDICT_TYPE


def event_id(event_type: str, video_id: str, content_sha256: str, model_sha256: str) -> str:
    """Deterministic id: a hash of the event type, the video, its content and the model."""
    material = "\x1f".join((event_type, video_id, content_sha256, model_sha256))
    return hashlib.sha256(material.encode()).hexdigest()[:40]


def flag_event(verdict: ScreeningVerdict, source: str = DEFAULT_SOURCE) -> DeepfakeFlag:
    """The flag of a verdict that asks for an action (label, review or block)."""
    if verdict.action is Action.NONE:
        raise ValueError(f"only a verdict with an action is flagged, not {verdict.outcome.value}")
    return DeepfakeFlag(
        id=event_id(FLAG_TYPE, verdict.video_id, verdict.content_sha256, verdict.model.sha256),
        source=source,
        subject=verdict.video_id,
        time=verdict.screened_at,
        dataschema=FLAG_DATASCHEMA,
        data=verdict,
    )


def verdict_event(verdict: ScreeningVerdict, source: str = DEFAULT_SOURCE) -> VerdictEvent:
    return VerdictEvent(
        id=event_id(VERDICT_TYPE, verdict.video_id, verdict.content_sha256, verdict.model.sha256),
        source=source,
        subject=verdict.video_id,
        time=verdict.screened_at,
        dataschema=VERDICT_DATASCHEMA,
        data=verdict,
    )
