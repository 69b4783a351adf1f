"""The detector end to end on synthetic videos, with the in-memory scorer.

These pin outcomes, reason codes, timeline boundaries and track counts; the
real model is exercised in test_artifact.py and test_shared_clips.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from detector.config import DetectorConfig, MediaLimits
from detector.pipeline import Detector
from detector.scoring import InMemoryScorer
from schemas import Action, Outcome, Reason
from tests.conftest import SyntheticVideos
from tests.support import videos


@pytest.fixture(scope="module")
def detector() -> Iterator[Detector]:
    screening = Detector(InMemoryScorer(rule=lambda clip: 0.1))
    yield screening
    screening.close()


def test_a_moving_scaling_face_is_one_track_with_a_clip_per_window(
    detector: Detector, synthetic: SyntheticVideos
) -> None:
    verdict = detector.screen(synthetic.moving_face, video_id="moving")
    assert verdict.outcome is Outcome.LIKELY_REAL
    assert verdict.score == pytest.approx(0.1)
    assert verdict.faces_tracked == 1
    assert verdict.frames_analyzed == 60
    assert [(c.start_frame, c.end_frame) for c in verdict.timeline] == [(0, 20), (20, 40), (40, 60)]
    assert [(c.start_s, c.end_s) for c in verdict.timeline] == [(0.0, 0.8), (0.8, 1.6), (1.6, 2.4)]
    assert {c.track_id for c in verdict.timeline} == {0}
    assert all(c.face_coverage >= 0.9 for c in verdict.timeline)


def test_the_face_box_follows_the_face_across_the_frame(
    detector: Detector, synthetic: SyntheticVideos
) -> None:
    boxes = [c.box for c in detector.screen(synthetic.moving_face).timeline]
    assert boxes[0].x < boxes[1].x < boxes[2].x  # the face sweeps left to right
    assert all(0.1 < b.height < 0.6 for b in boxes)


def test_two_people_are_two_tracks_each_scored_in_every_window(
    detector: Detector, synthetic: SyntheticVideos
) -> None:
    verdict = detector.screen(synthetic.two_faces)
    assert verdict.faces_tracked == 2
    assert len(verdict.timeline) == 4  # 40 frames: 2 windows x 2 faces
    assert sorted(c.track_id for c in verdict.timeline) == [0, 0, 1, 1]
    left = [c for c in verdict.timeline if c.track_id == 0]
    right = [c for c in verdict.timeline if c.track_id == 1]
    assert all(a.box.x < 0.5 < b.box.x for a, b in zip(left, right, strict=True))


def test_a_single_fake_face_among_two_flags_the_video(tmp_path: Path) -> None:
    """The right-hand face is colour-swapped; the scorer calls exactly those clips fake."""
    import cv2

    face = cv2.resize(videos.astronaut_face(), (150, 150))
    swapped = np.ascontiguousarray(face[:, :, ::-1])
    frames = []
    for t in range(20):
        frame = np.full((240, 480, 3), 90, dtype=np.uint8)
        frame[40 + t : 190 + t, 30:180] = face
        frame[50:200, 290 - t : 440 - t] = swapped
        frames.append(frame)
    video = videos.write_video(tmp_path / "one_real_one_fake.mp4", frames)

    def blue_faces_are_fake(clip: np.ndarray) -> float:
        centre = clip[:, 40:72, 40:72].astype(np.float64)
        return 0.97 if centre[..., 2].mean() > centre[..., 0].mean() else 0.05

    screening = Detector(InMemoryScorer(rule=blue_faces_are_fake))
    verdict = screening.screen(video)
    screening.close()
    by_track = {c.track_id: c.score for c in verdict.timeline}
    assert by_track == {0: 0.05, 1: 0.97}
    assert verdict.outcome is Outcome.SUSPECTED_DEEPFAKE
    assert verdict.action is Action.BLOCK
    assert verdict.score == pytest.approx(0.97)


def test_a_video_without_a_face_is_no_face_not_a_score(
    detector: Detector, synthetic: SyntheticVideos
) -> None:
    verdict = detector.screen(synthetic.no_face)
    assert verdict.outcome is Outcome.NO_FACE
    assert verdict.reason is Reason.NO_FACE_DETECTED
    assert verdict.score is None and verdict.timeline == []
    assert verdict.frames_analyzed == 40


def test_a_rotated_video_is_screened_upright(
    detector: Detector, synthetic: SyntheticVideos
) -> None:
    verdict = detector.screen(synthetic.rotated)
    assert verdict.video is not None
    assert verdict.video.rotation == 90
    assert (verdict.video.width, verdict.video.height) == (320, 240)
    assert verdict.faces_tracked == 1
    assert verdict.outcome is Outcome.LIKELY_REAL


@pytest.mark.parametrize(
    ("video", "reason"),
    [
        ("short", Reason.TOO_SHORT),
        ("truncated", Reason.CORRUPT_CONTAINER),
        ("zero_bytes", Reason.EMPTY_FILE),
        ("not_a_video", Reason.NOT_A_VIDEO),
        ("huge_resolution", Reason.RESOLUTION_TOO_LARGE),
    ],
)
def test_a_bad_upload_is_an_unreadable_verdict_with_its_reason(
    detector: Detector, synthetic: SyntheticVideos, video: str, reason: Reason
) -> None:
    verdict = detector.screen(getattr(synthetic, video), video_id=video)
    assert verdict.outcome is Outcome.UNREADABLE
    assert verdict.reason is reason
    assert verdict.reason_detail
    assert verdict.score is None and verdict.action is Action.NONE


def test_decoding_past_its_time_limit_is_unreadable(synthetic: SyntheticVideos) -> None:
    config = DetectorConfig()
    config = replace(config, limits=MediaLimits(decode_timeout_s=0.0))
    verdict = Detector(InMemoryScorer(), config).screen(synthetic.moving_face)
    assert verdict.outcome is Outcome.UNREADABLE
    assert verdict.reason is Reason.DECODE_TIMEOUT


def test_the_verdict_names_the_model_its_thresholds_and_the_content_hash(
    detector: Detector, synthetic: SyntheticVideos
) -> None:
    import hashlib

    verdict = detector.screen(synthetic.moving_face, video_id="v-9", uri="s3://b/v-9.mp4")
    assert verdict.video_id == "v-9" and verdict.uri == "s3://b/v-9.mp4"
    assert verdict.content_sha256 == hashlib.sha256(synthetic.moving_face.read_bytes()).hexdigest()
    assert verdict.model == detector.scorer.info
    assert verdict.thresholds == detector.scorer.metadata.thresholds
    assert verdict.processing_ms > 0
