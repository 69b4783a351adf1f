"""deepscreen's contracts: pydantic models of every event and result. No I/O here."""

from schemas.cloudevents import (
    FLAG_TYPE,
    VERDICT_TYPE,
    CloudEvent,
    DeepfakeFlag,
    VerdictEvent,
    event_id,
    flag_event,
    verdict_event,
)
from schemas.dead_letter import DeadLetter
from schemas.decision import (
    DECISION_TYPE,
    Decision,
    DecisionEvent,
    ModerationDecision,
    decision_event,
)
from schemas.model import (
    METADATA_FILE,
    Calibration,
    ModelInfo,
    ModelMetadata,
    Thresholds,
    TrainingSummary,
)
from schemas.provenance import Declaration, Provenance, ProvenanceReason, ProvenanceState
from schemas.upload import VideoUploaded
from schemas.verdict import (
    Action,
    ClipScore,
    FaceBox,
    ImageProperties,
    KnownFakeMatch,
    Outcome,
    Reason,
    ScreeningVerdict,
    Signal,
    SignalResult,
    VideoProperties,
)

__all__ = [
    "DECISION_TYPE",
    "FLAG_TYPE",
    "METADATA_FILE",
    "VERDICT_TYPE",
    "Action",
    "Calibration",
    "ClipScore",
    "CloudEvent",
    "DeadLetter",
    "Decision",
    "DecisionEvent",
    "Declaration",
    "DeepfakeFlag",
    "FaceBox",
    "ImageProperties",
    "KnownFakeMatch",
    "ModelInfo",
    "ModelMetadata",
    "ModerationDecision",
    "Outcome",
    "Provenance",
    "ProvenanceReason",
    "ProvenanceState",
    "Reason",
    "ScreeningVerdict",
    "Signal",
    "SignalResult",
    "Thresholds",
    "TrainingSummary",
    "VerdictEvent",
    "VideoProperties",
    "VideoUploaded",
    "decision_event",
    "event_id",
    "flag_event",
    "verdict_event",
]
