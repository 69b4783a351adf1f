"""Clip scores → track scores → one video score.

The rule, chosen so that a single fake face flags the video:

1. a track's score is the mean of its clips' scores (one odd clip of a real
   face does not flag it; a face that is fake throughout does);
2. the video's score is the highest track score: a video with one real and
   one swapped face is a deepfake;
3. that score against the model's thresholds gives the model's outcome and
   the action the operator's policy assigns it: `detector.signals.model_result`
   (>= `thresholds.block` → `suspected_deepfake` + the block action, >=
   `thresholds.review` → `suspected_deepfake` + the review action, otherwise
   `likely_real`).

Pure functions, no model and no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

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
