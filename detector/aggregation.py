"""Clip scores → track scores → one video score → outcome and action.

The rule, chosen so that a single fake face flags the video:

1. a track's score is the mean of its clips' scores (one odd clip of a real
   face does not flag it; a face that is fake throughout does);
2. the video's score is the highest track score: a video with one real and
   one swapped face is a deepfake;
3. score >= `thresholds.block` → `suspected_deepfake` + `block`;
   score >= `thresholds.review` → `suspected_deepfake` + `review`;
   otherwise `likely_real`.

Pure functions, no model and no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from schemas.model import Thresholds
from schemas.verdict import Action, Outcome

# Verdicts carry scores rounded to this many decimals. Calibration places the
# thresholds on the same grid (`SCORE_RESOLUTION`), so a real video's rounded
# score can never cross a threshold that its unrounded score stays below.
SCORE_DECIMALS = 4
SCORE_RESOLUTION = 10.0**-SCORE_DECIMALS


def rounded(score: float) -> float:
    """A score as verdicts carry it."""
    return round(float(score), SCORE_DECIMALS)


def track_scores(clip_scores: Iterable[tuple[int, float]]) -> dict[int, float]:
    """Mean clip score per track id, from (track_id, score) pairs."""
    by_track: dict[int, list[float]] = defaultdict(list)
    for track_id, score in clip_scores:
        by_track[track_id].append(score)
    return {track: sum(scores) / len(scores) for track, scores in by_track.items()}


def video_score(per_track: dict[int, float]) -> float:
    if not per_track:
        raise ValueError("a video score needs at least one scored track")
    return max(per_track.values())


def decide(score: float, thresholds: Thresholds) -> tuple[Outcome, Action]:
    if score >= thresholds.block:
        return Outcome.SUSPECTED_DEEPFAKE, Action.BLOCK
    if score >= thresholds.review:
        return Outcome.SUSPECTED_DEEPFAKE, Action.REVIEW
    return Outcome.LIKELY_REAL, Action.NONE
