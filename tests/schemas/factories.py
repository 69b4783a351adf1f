"""Valid verdicts for tests that need one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas import (
    Action,
    ClipScore,
    Declaration,
    FaceBox,
    ImageProperties,
    ModelInfo,
    Outcome,
    Provenance,
    ProvenanceReason,
    ProvenanceState,
    Reason,
    ScreeningVerdict,
    Signal,
    SignalResult,
    Thresholds,
)
from schemas.provenance import (
    IPTC_SOURCE_TYPE_PREFIX,
    ClaimGenerator,
    CredentialSigner,
    DeclaredSourceType,
    SourceTypeOrigin,
)

MODEL = ModelInfo(
    name="m",
    version="1",
    sha256="a" * 64,
    architecture="resnext50_32x4d+lstm",
    input_size=112,
    trained=True,
)
CLIP = ClipScore(
    start_s=0.0,
    end_s=0.8,
    start_frame=0,
    end_frame=20,
    track_id=0,
    score=0.97,
    box=FaceBox(x=0.25, y=0.1, width=0.3, height=0.4),
    face_coverage=1.0,
)


def verdict(**overrides: Any) -> ScreeningVerdict:
    fields: dict[str, Any] = {
        "video_id": "v-1",
        "uri": "file:///media/v-1.mp4",
        "content_sha256": "b" * 64,
        "outcome": Outcome.SUSPECTED_DEEPFAKE,
        "score": 0.97,
        "action": Action.BLOCK,
        "thresholds": Thresholds(review=0.6, block=0.95),
        "model": MODEL,
        "timeline": [CLIP],
        "faces_tracked": 1,
        "frames_analyzed": 20,
        "screened_at": datetime(2026, 11, 20, tzinfo=UTC),
        "processing_ms": 1200,
    }
    fields.update(overrides)
    if "signals" not in overrides:  # the model, as the headline fields say
        fields["signals"] = [
            SignalResult(
                signal=Signal.MODEL,
                outcome=fields["outcome"],
                reason=fields.get("reason"),
                action=fields["action"],
                summary="model",
            )
        ]
        if fields.get("provenance") is not None:  # credentials read, nothing to act on
            fields["signals"].insert(
                0,
                SignalResult(
                    signal=Signal.CONTENT_CREDENTIALS,
                    outcome=None,
                    summary=fields["provenance"].summary,
                ),
            )
        fields.setdefault(
            "action_signal", Signal.MODEL if fields["action"] is not Action.NONE else None
        )
    return ScreeningVerdict(**fields)


def unreadable(**overrides: Any) -> ScreeningVerdict:
    fields: dict[str, Any] = {
        "outcome": Outcome.UNREADABLE,
        "reason": Reason.NOT_A_VIDEO,
        "score": None,
        "action": Action.NONE,
        "timeline": [],
        "faces_tracked": 0,
        "frames_analyzed": 0,
    }
    fields.update(overrides)
    return verdict(**fields)


def provenance(**overrides: Any) -> Provenance:
    """Valid (untrusted) credentials whose `c2pa.created` action declares generative AI."""
    fields: dict[str, Any] = {
        "present": True,
        "state": ProvenanceState.VALID,
        "trust_list_configured": False,
        "manifests": 1,
        "active_manifest": "urn:c2pa:00000000-0000-4000-8000-000000000001",
        "claim_generator": ClaimGenerator(name="deepscreen-demo", version="1.0"),
        "signer": CredentialSigner(
            issuer="deepscreen test CA", common_name="deepscreen test signer", algorithm="Es256"
        ),
        "source_types": [
            DeclaredSourceType(
                source_type=IPTC_SOURCE_TYPE_PREFIX + "trainedAlgorithmicMedia",
                origin=SourceTypeOrigin.ACTION,
                action="c2pa.created",
            )
        ],
        "declaration": Declaration.AI_GENERATED,
        "summary": "Valid content credentials, untrusted signer (deepscreen test CA), "
        "declare AI-generated (trainedAlgorithmicMedia).",
        "read_ms": 12,
    }
    fields.update(overrides)
    return Provenance(**fields)


def absent_provenance(**overrides: Any) -> Provenance:
    fields: dict[str, Any] = {
        "present": False,
        "state": ProvenanceState.ABSENT,
        "summary": "No content credentials.",
        "read_ms": 3,
    }
    fields.update(overrides)
    return Provenance(**fields)


def likely_real(**overrides: Any) -> ScreeningVerdict:
    """The model scored a real-looking face; no action."""
    fields: dict[str, Any] = {
        "outcome": Outcome.LIKELY_REAL,
        "score": 0.05,
        "action": Action.NONE,
        "timeline": [CLIP.model_copy(update={"score": 0.05})],
    }
    fields.update(overrides)
    return verdict(**fields)


def unreadable_provenance(
    reason: ProvenanceReason = ProvenanceReason.MALFORMED, **overrides: Any
) -> Provenance:
    fields: dict[str, Any] = {
        "present": True,
        "state": ProvenanceState.UNREADABLE,
        "reason": reason,
        "reason_detail": f"{reason.value} (test)",
        "summary": f"Content credentials could not be read ({reason.value}).",
        "read_ms": 40,
    }
    fields.update(overrides)
    return Provenance(**fields)


def declared_synthetic(**overrides: Any) -> ScreeningVerdict:
    """A still whose valid credentials declare AI generation: labelled, the model saw a real face.

    The credentials decide (`label` by `content_credentials`); the model's
    `likely_real` and its evidence are kept beside them. Overrides apply to the
    verdict; `provenance=` replaces the credentials (and the signal's summary).
    """
    declared = overrides.pop("provenance", None) or provenance()
    action = overrides.pop("action", Action.LABEL)
    reason = overrides.pop("reason", Reason.DECLARED_AI_GENERATED)
    low = CLIP.model_copy(update={"score": 0.05, "start_s": 0.0, "end_s": 0.0})
    fields: dict[str, Any] = {
        "outcome": Outcome.DECLARED_SYNTHETIC,
        "reason": reason,
        "reason_detail": declared.summary,
        "score": 0.05,
        "action": action,
        "action_signal": Signal.CONTENT_CREDENTIALS,
        "provenance": declared,
        "signals": [
            SignalResult(
                signal=Signal.CONTENT_CREDENTIALS,
                outcome=Outcome.DECLARED_SYNTHETIC,
                reason=reason,
                action=action,
                summary=declared.summary,
            ),
            SignalResult(
                signal=Signal.MODEL,
                outcome=Outcome.LIKELY_REAL,
                summary="face score 0.0500 < review threshold 0.6000",
            ),
        ],
        "timeline": [low],
        "media": "image",
        "image": ImageProperties(format="JPEG", width=512, height=512, size_bytes=40_000),
        "uri": "file:///media/v-1.jpg",
    }
    fields.update(overrides)
    return verdict(**fields)
