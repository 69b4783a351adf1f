from __future__ import annotations

import pytest

from detector.aggregation import decide, track_scores, video_score
from schemas import Action, Outcome, Thresholds

THRESHOLDS = Thresholds(review=0.6, block=0.9)


def test_a_track_scores_the_mean_of_its_clips() -> None:
    assert track_scores([(0, 0.2), (0, 0.4), (1, 0.9)]) == pytest.approx({0: 0.3, 1: 0.9})


def test_a_single_fake_face_flags_the_video() -> None:
    real_and_fake = track_scores([(0, 0.05), (0, 0.1), (1, 0.95), (1, 0.93)])
    assert video_score(real_and_fake) == pytest.approx(0.94)
    assert decide(video_score(real_and_fake), THRESHOLDS) == (
        Outcome.SUSPECTED_DEEPFAKE,
        Action.BLOCK,
    )


def test_one_odd_clip_of_a_real_face_does_not_flag_it() -> None:
    score = video_score(track_scores([(0, 0.1), (0, 0.1), (0, 0.1), (0, 0.95)]))
    assert decide(score, THRESHOLDS) == (Outcome.LIKELY_REAL, Action.NONE)


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (0.0, (Outcome.LIKELY_REAL, Action.NONE)),
        (0.5999, (Outcome.LIKELY_REAL, Action.NONE)),
        (0.6, (Outcome.SUSPECTED_DEEPFAKE, Action.REVIEW)),
        (0.8999, (Outcome.SUSPECTED_DEEPFAKE, Action.REVIEW)),
        (0.9, (Outcome.SUSPECTED_DEEPFAKE, Action.BLOCK)),
        (1.0, (Outcome.SUSPECTED_DEEPFAKE, Action.BLOCK)),
    ],
)
def test_thresholds_decide_the_outcome_and_action(
    score: float, expected: tuple[Outcome, Action]
) -> None:
    assert decide(score, THRESHOLDS) == expected


def test_a_video_without_scored_tracks_has_no_score() -> None:
    with pytest.raises(ValueError):
        video_score({})
