from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas import Action, ClipScore, FaceBox, Outcome, Reason, ScreeningVerdict, Thresholds
from tests.schemas.factories import CLIP, unreadable, verdict


def test_a_suspected_deepfake_carries_score_action_and_timeline() -> None:
    flagged = verdict()
    assert flagged.score == 0.97
    assert flagged.action is Action.BLOCK
    assert flagged.timeline[0].end_s == 0.8


def test_a_scored_outcome_without_a_score_is_refused() -> None:
    with pytest.raises(ValidationError, match="needs a score"):
        verdict(score=None)


def test_a_scored_outcome_without_a_timeline_is_refused() -> None:
    with pytest.raises(ValidationError, match="timeline"):
        verdict(timeline=[])


def test_unreadable_needs_an_unreadable_reason_and_no_score() -> None:
    assert unreadable().reason is Reason.NOT_A_VIDEO
    with pytest.raises(ValidationError):
        unreadable(reason=None)
    with pytest.raises(ValidationError):
        unreadable(reason=Reason.NO_FACE_DETECTED)
    with pytest.raises(ValidationError, match="must not carry a score"):
        unreadable(score=0.5)


def test_no_face_needs_a_no_face_reason() -> None:
    assert unreadable(outcome=Outcome.NO_FACE, reason=Reason.NO_FACE_DETECTED).score is None
    with pytest.raises(ValidationError):
        unreadable(outcome=Outcome.NO_FACE, reason=Reason.TOO_SHORT)


def test_only_a_suspected_deepfake_carries_an_action() -> None:
    with pytest.raises(ValidationError):
        verdict(outcome=Outcome.LIKELY_REAL, score=0.1, action=Action.REVIEW)
    with pytest.raises(ValidationError):
        verdict(action=Action.NONE)


def test_our_outputs_have_no_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        ScreeningVerdict.model_validate({**verdict().model_dump(), "extra": 1})


def test_a_verdict_round_trips_through_json() -> None:
    original = verdict()
    assert ScreeningVerdict.model_validate_json(original.model_dump_json()) == original


def test_clip_boundaries_and_boxes_are_checked() -> None:
    with pytest.raises(ValidationError):
        ClipScore(**{**CLIP.model_dump(), "end_s": -1.0})
    with pytest.raises(ValidationError):
        ClipScore(**{**CLIP.model_dump(), "start_frame": 20, "end_frame": 20})
    with pytest.raises(ValidationError):
        FaceBox(x=0.5, y=0.5, width=1.5, height=0.1)


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValidationError):
        Thresholds(review=0.9, block=0.5)
