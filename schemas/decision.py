"""The decisions contract: a moderator's ruling on one piece of content.

Moderators answer deepscreen's flags (and look at uploads it never flagged).
Their rulings feed the bank of known fakes: `confirmed_fake` puts the
content's perceptual hashes in the bank so that re-uploads are caught,
`false_positive` and `confirmed_real` allow-list it so that the model's false
alarm is not raised again, and `retracted` takes an earlier ruling back.

Producers are other teams' tools, so like the upload event the model ignores
fields it does not know and bounds every field it reads. Its time must carry a
zone: rulings on one content are ordered by it, and the latest one wins.
"""

from __future__ import annotations

import hashlib
from enum import Enum
from typing import Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from schemas.cloudevents import DEFAULT_SOURCE, SCHEMA_BASE, CloudEvent
from schemas.upload import Sha256Hex, VideoId, known_uri_scheme

DECISION_TYPE: Final = "deepscreen.decision.v1"
DECISION_DATASCHEMA: Final = f"{SCHEMA_BASE}/v1/moderation-decision.schema.json"


class Decision(str, Enum):
    """What the moderator ruled about the content."""

    CONFIRMED_FAKE = "confirmed_fake"  # a deepfake: its re-uploads are matched and blocked
    FALSE_POSITIVE = "false_positive"  # flagged by the model, but real: do not flag it again
    CONFIRMED_REAL = "confirmed_real"  # real, whether flagged or not: do not flag it
    RETRACTED = "retracted"  # the earlier ruling on this content no longer holds


ALLOW_LISTING: Final = frozenset({Decision.FALSE_POSITIVE, Decision.CONFIRMED_REAL})


class ModerationDecision(BaseModel):
    """A ruling (`moderation.decisions`); the Kafka key is `content_sha256`."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    answers_event_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="id of the flag or verdict CloudEvent this ruling answers; "
        "None for content deepscreen did not flag (e.g. a bank seeded by hand)",
    )
    video_id: VideoId
    content_sha256: Sha256Hex = Field(description="sha256 of the content the ruling is about")
    uri: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="where the content can be fetched again (file://, http(s):// or s3://)",
    )
    decision: Decision
    moderator: str = Field(min_length=1, max_length=256)
    reason: str = Field(default="", max_length=2048, description="the moderator's own words")
    decided_at: AwareDatetime

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, uri: str | None) -> str | None:
        return None if uri is None else known_uri_scheme(uri)

    @field_validator("content_sha256", mode="before")
    @classmethod
    def _lowercase_hex(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


class DecisionEvent(CloudEvent[ModerationDecision]):
    """`deepscreen.decision.v1`: a ruling in a CloudEvents envelope (structured mode)."""

    type: Literal["deepscreen.decision.v1"] = DECISION_TYPE


def decision_event(decision: ModerationDecision, source: str = DEFAULT_SOURCE) -> DecisionEvent:
    """The ruling as a CloudEvent whose id is the same whenever the same ruling is sent again."""
    material = "\x1f".join(
        (
            DECISION_TYPE,
            decision.content_sha256,
            decision.decision.value,
            decision.moderator,
            decision.decided_at.isoformat(),
        )
    )
    return DecisionEvent(
        id=hashlib.sha256(material.encode()).hexdigest()[:40],
        source=source,
        subject=decision.video_id,
        time=decision.decided_at,
        dataschema=DECISION_DATASCHEMA,
        data=decision,
    )
