"""Clip scores → track scores → one video score (the thresholds: test_signals.py)."""

from __future__ import annotations

import pytest

from detector.aggregation import rounded, track_scores, video_score
from detector.config import ActionPolicy
from detector.signals import model_result
from schemas import Action, Outcome, Thresholds

THRESHOLDS = Thresholds(review=0.6, block=0.9)


def test_a_track_scores_the_mean_of_its_clips() -> None:
    assert track_scores([(0, 0.2), (0, 0.4), (1, 0.9)]) == pytest.approx({0: 0.3, 1: 0.9})


def test_a_single_fake_face_flags_the_video() -> None:
    real_and_fake = track_scores([(0, 0.05), (0, 0.1), (1, 0.95), (1, 0.93)])
    assert video_score(real_and_fake) == pytest.approx(0.94)
    result = model_result(video_score(real_and_fake), THRESHOLDS, ActionPolicy())
    assert (result.outcome, result.action) == (Outcome.SUSPECTED_DEEPFAKE, Action.BLOCK)


def test_one_odd_clip_of_a_real_face_does_not_flag_it() -> None:
    score = video_score(track_scores([(0, 0.1), (0, 0.1), (0, 0.1), (0, 0.95)]))
    result = model_result(score, THRESHOLDS, ActionPolicy())
    assert (result.outcome, result.action) == (Outcome.LIKELY_REAL, Action.NONE)


def test_verdicts_carry_scores_on_a_four_decimal_grid() -> None:
    assert rounded(0.123456) == 0.1235
    assert rounded(0.59996) == 0.6  # the grid calibration puts the thresholds on


def test_a_video_without_scored_tracks_has_no_score() -> None:
    with pytest.raises(ValueError):
        video_score({})
