"""Valid verdicts for tests that need one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas import (
    Action,
    ClipScore,
    FaceBox,
    ModelInfo,
    Outcome,
    Reason,
    ScreeningVerdict,
    Signal,
    SignalResult,
    Thresholds,
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
    if "signals" not in overrides:  # the model alone, as the headline fields say
        fields["signals"] = [
            SignalResult(
                signal=Signal.MODEL,
                outcome=fields["outcome"],
                reason=fields.get("reason"),
                action=fields["action"],
                summary="model",
            )
        ]
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
