from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas import (
    Action,
    ClipScore,
    FaceBox,
    Outcome,
    Reason,
    ScreeningVerdict,
    Signal,
    SignalResult,
    Thresholds,
    VideoProperties,
)
from schemas.verdict import deciding_signal, severity
from tests.schemas.factories import CLIP, unreadable, verdict

VIDEO = VideoProperties(
    width=64, height=64, fps=25.0, frame_count=50, duration_s=2.0, rotation=0, size_bytes=1
)


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


def test_a_likely_real_unreadable_or_no_face_result_asks_for_no_action() -> None:
    with pytest.raises(ValidationError):
        verdict(outcome=Outcome.LIKELY_REAL, score=0.1, action=Action.REVIEW)
    with pytest.raises(ValidationError):
        unreadable(action=Action.LABEL)


def _credentials(outcome: Outcome | None, reason: Reason | None, action: Action) -> SignalResult:
    return SignalResult(
        signal=Signal.CONTENT_CREDENTIALS, outcome=outcome, reason=reason, action=action,
        summary="credentials",
    )  # fmt: skip


def _model(outcome: Outcome, action: Action, reason: Reason | None = None) -> SignalResult:
    return SignalResult(signal=Signal.MODEL, outcome=outcome, reason=reason, action=action,
                        summary="model")  # fmt: skip


def test_the_headline_is_the_strictest_signal_and_names_it() -> None:
    declared = _credentials(Outcome.DECLARED_SYNTHETIC, Reason.DECLARED_AI_GENERATED, Action.LABEL)
    labelled = verdict(
        outcome=Outcome.DECLARED_SYNTHETIC,
        reason=Reason.DECLARED_AI_GENERATED,
        action=Action.LABEL,
        action_signal=Signal.CONTENT_CREDENTIALS,
        score=0.1,
        signals=[declared, _model(Outcome.LIKELY_REAL, Action.NONE)],
    )
    assert labelled.signal(Signal.MODEL).outcome is Outcome.LIKELY_REAL  # type: ignore[union-attr]
    # the model's block is stricter than the credentials' label: the model sets it
    blocked = verdict(
        action_signal=Signal.MODEL,
        signals=[declared, _model(Outcome.SUSPECTED_DEEPFAKE, Action.BLOCK)],
    )
    assert (blocked.outcome, blocked.action) == (Outcome.SUSPECTED_DEEPFAKE, Action.BLOCK)
    with pytest.raises(ValidationError, match="action_signal"):
        verdict(
            action_signal=Signal.CONTENT_CREDENTIALS,
            signals=[declared, _model(Outcome.SUSPECTED_DEEPFAKE, Action.BLOCK)],
        )
    with pytest.raises(ValidationError, match="must be those of content_credentials"):
        verdict(  # headline fields that are not those of the deciding signal
            action=Action.LABEL,
            action_signal=Signal.CONTENT_CREDENTIALS,
            signals=[declared, _model(Outcome.LIKELY_REAL, Action.NONE)],
        )


def test_a_tie_in_strictness_goes_to_the_signal_that_needs_no_model() -> None:
    results = [
        _model(Outcome.SUSPECTED_DEEPFAKE, Action.LABEL),
        _credentials(Outcome.DECLARED_SYNTHETIC, Reason.DECLARED_AI_COMPOSITE, Action.LABEL),
    ]
    assert deciding_signal(results).signal is Signal.CONTENT_CREDENTIALS  # type: ignore[union-attr]
    assert deciding_signal([_model(Outcome.LIKELY_REAL, Action.NONE)]) is None


def test_actions_are_ordered_none_label_review_block() -> None:
    assert [severity(a) for a in (Action.NONE, Action.LABEL, Action.REVIEW, Action.BLOCK)] == [
        0, 1, 2, 3,
    ]  # fmt: skip


def test_every_verdict_reports_the_model_and_each_signal_once() -> None:
    declared = _credentials(None, None, Action.NONE)
    with pytest.raises(ValidationError, match="model's result"):
        verdict(signals=[declared], action_signal=None, action=Action.NONE)
    with pytest.raises(ValidationError, match="one result per signal"):
        verdict(signals=[_model(Outcome.SUSPECTED_DEEPFAKE, Action.BLOCK)] * 2)


def test_a_signal_concludes_only_its_own_outcomes_with_matching_reasons() -> None:
    with pytest.raises(ValidationError):
        _credentials(Outcome.SUSPECTED_DEEPFAKE, None, Action.BLOCK)
    with pytest.raises(ValidationError):
        _model(Outcome.DECLARED_SYNTHETIC, Action.LABEL, Reason.DECLARED_AI_GENERATED)
    with pytest.raises(ValidationError):
        _credentials(Outcome.DECLARED_SYNTHETIC, Reason.NOT_A_VIDEO, Action.LABEL)
    with pytest.raises(ValidationError):  # nothing found, yet an action
        _credentials(None, None, Action.REVIEW)


def test_media_and_its_properties_agree() -> None:
    with pytest.raises(ValidationError, match="image verdict"):
        verdict(media="image", video=VIDEO)


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
