"""The detector end to end on synthetic videos and stills, with the in-memory scorer.

These pin outcomes, reason codes, timeline boundaries and track counts, and
how an upload's content credentials (C2PA) and the model combine into one
verdict; the real model is exercised in test_artifact.py and
test_shared_clips.py (and here once, on a declared-AI still).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from consumer.signing import TestAuthority as Authority
from detector.arrays import Clips
from detector.artifact import load
from detector.config import (
    ActionPolicy,
    CredentialsConfig,
    DetectorConfig,
    ImageLimits,
    MediaLimits,
)
from detector.credentials import StaticCredentialsReader
from detector.pipeline import Detector, build_detector
from detector.scoring import InMemoryScorer
from schemas import Action, Outcome, Reason
from schemas.provenance import Declaration, ProvenanceReason, ProvenanceState
from schemas.verdict import SCORED_OUTCOMES, ImageProperties, ScreeningVerdict, Signal
from tests.conftest import SyntheticVideos
from tests.support import videos
from tests.support.credentials import (
    astronaut_photo,
    garbage_manifest,
    reencoded_copy,
    tampered_copy,
)


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

    def blue_faces_are_fake(clip: Clips) -> float:
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


# --------------------------------------------------------------------------- content credentials

# MediaPipe finds the astronaut's face at x=174..278, y=68..172 of the 512 x 512 photo.
FACE_CENTRE = (226 / 512, 120 / 512)


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority.create(signer_name="Example Generator", organisation="Example AI Inc.")


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The astronaut photo as an unsigned JPEG."""
    return astronaut_photo(tmp_path_factory.mktemp("stills") / "astronaut.jpg")


@pytest.fixture(scope="module")
def by_pixels() -> Iterator[Detector]:
    """Scores a clip by its mean brightness: the same pixels, the same score."""
    screening = Detector(InMemoryScorer())
    yield screening
    screening.close()


def model_of(verdict: ScreeningVerdict) -> tuple[Outcome | None, Reason | None, Action]:
    result = verdict.signal(Signal.MODEL)
    assert result is not None
    return result.outcome, result.reason, result.action


def test_a_still_declared_ai_generated_is_labelled_and_the_model_still_scores_it(
    reference_model: Path, authority: Authority, photo: Path, tmp_path: Path
) -> None:
    signed = authority.sign(photo, tmp_path / "generated.jpg", "trainedAlgorithmicMedia")
    # The untrained reference model scores near 0.5; its review action is switched off
    # so that the declaration, not the model's coin toss, sets the action here.
    config = DetectorConfig(actions=ActionPolicy(model_review=Action.NONE))
    screening = build_detector(load(reference_model, "cpu"), config, batch_wait_s=0.0)
    try:
        verdict = screening.screen(signed)
    finally:
        screening.close()

    assert verdict.media == "image" and verdict.video is None
    assert verdict.image == ImageProperties(
        format="JPEG", width=512, height=512, size_bytes=signed.stat().st_size
    )
    assert (verdict.outcome, verdict.reason, verdict.action) == (
        Outcome.DECLARED_SYNTHETIC,
        Reason.DECLARED_AI_GENERATED,
        Action.LABEL,
    )
    assert verdict.action_signal is Signal.CONTENT_CREDENTIALS
    assert [s.signal for s in verdict.signals] == [
        Signal.CONTENT_CREDENTIALS,
        Signal.KNOWN_FAKES,
        Signal.MODEL,
    ]
    assert verdict.provenance is not None
    assert verdict.reason_detail == verdict.provenance.summary
    assert "AI-generated" in verdict.reason_detail
    assert verdict.provenance.state is ProvenanceState.VALID
    assert verdict.provenance.declaration is Declaration.AI_GENERATED
    assert verdict.provenance.signer is not None
    assert verdict.provenance.signer.common_name == "Example Generator"

    # the model's evidence is reported all the same
    assert verdict.model.name == "deepscreen-reference-untrained"
    model_outcome, _, _ = model_of(verdict)
    assert model_outcome in SCORED_OUTCOMES
    assert verdict.score is not None and 0.0 <= verdict.score <= 1.0
    assert (verdict.faces_tracked, verdict.frames_analyzed) == (1, 1)
    [clip] = verdict.timeline
    assert (clip.start_frame, clip.end_frame, clip.start_s, clip.end_s) == (0, 1, 0.0, 0.0)
    assert clip.score == verdict.score
    assert clip.box.x < FACE_CENTRE[0] < clip.box.x + clip.box.width
    assert clip.box.y < FACE_CENTRE[1] < clip.box.y + clip.box.height


def test_a_declaration_never_softens_a_model_that_blocks(
    authority: Authority, photo: Path, tmp_path: Path
) -> None:
    signed = authority.sign(photo, tmp_path / "generated.jpg", "trainedAlgorithmicMedia")
    screening = Detector(InMemoryScorer(rule=lambda clip: 0.97))
    verdict = screening.screen(signed)
    screening.close()
    assert (verdict.outcome, verdict.action, verdict.action_signal) == (
        Outcome.SUSPECTED_DEEPFAKE,
        Action.BLOCK,
        Signal.MODEL,
    )
    declared = verdict.signal(Signal.CONTENT_CREDENTIALS)
    assert declared is not None
    assert (declared.outcome, declared.action) == (Outcome.DECLARED_SYNTHETIC, Action.LABEL)


def test_a_video_declared_an_ai_composite_is_labelled_as_one(
    detector: Detector, authority: Authority, synthetic: SyntheticVideos, tmp_path: Path
) -> None:
    signed = authority.sign(
        synthetic.moving_face, tmp_path / "composite.mp4", "compositeWithTrainedAlgorithmicMedia"
    )
    verdict = detector.screen(signed)
    assert verdict.media == "video" and verdict.image is None and verdict.video is not None
    assert (verdict.outcome, verdict.reason, verdict.action, verdict.action_signal) == (
        Outcome.DECLARED_SYNTHETIC,
        Reason.DECLARED_AI_COMPOSITE,
        Action.LABEL,
        Signal.CONTENT_CREDENTIALS,
    )
    assert verdict.provenance is not None
    assert verdict.provenance.declaration is Declaration.AI_COMPOSITE
    assert model_of(verdict) == (Outcome.LIKELY_REAL, None, Action.NONE)
    assert verdict.score == pytest.approx(0.1)
    assert [(c.start_frame, c.end_frame) for c in verdict.timeline] == [(0, 20), (20, 40), (40, 60)]


def test_credentials_declaring_a_camera_capture_are_recorded_and_change_nothing(
    detector: Detector, authority: Authority, photo: Path, tmp_path: Path
) -> None:
    signed = authority.sign(photo, tmp_path / "camera.jpg", "digitalCapture")
    verdict = detector.screen(signed)
    assert (verdict.outcome, verdict.action, verdict.action_signal) == (
        Outcome.LIKELY_REAL,
        Action.NONE,
        None,
    )
    assert verdict.provenance is not None
    assert verdict.provenance.state is ProvenanceState.VALID
    assert verdict.provenance.declaration is Declaration.NOT_AI
    credentials = verdict.signal(Signal.CONTENT_CREDENTIALS)
    assert credentials is not None
    assert (credentials.outcome, credentials.action) == (None, Action.NONE)
    assert credentials.summary == verdict.provenance.summary


def test_a_declared_ai_still_changed_after_signing_is_invalid_and_not_labelled(
    detector: Detector, authority: Authority, photo: Path, tmp_path: Path
) -> None:
    signed = authority.sign(photo, tmp_path / "generated.jpg", "trainedAlgorithmicMedia")
    tampered = tampered_copy(signed, tmp_path / "tampered.jpg")
    verdict = detector.screen(tampered)
    assert verdict.provenance is not None
    assert verdict.provenance.state is ProvenanceState.INVALID
    assert "assertion.dataHash.mismatch" in verdict.provenance.failure_codes
    assert (verdict.outcome, verdict.action, verdict.action_signal) == (
        Outcome.LIKELY_REAL,
        Action.NONE,
        None,
    )  # an invalid manifest declares nothing, and by default asks for nothing

    strict = Detector(
        InMemoryScorer(rule=lambda clip: 0.1),
        DetectorConfig(actions=ActionPolicy(invalid_credentials=Action.REVIEW)),
    )
    reviewed = strict.screen(tampered)
    strict.close()
    assert (reviewed.outcome, reviewed.reason, reviewed.action, reviewed.action_signal) == (
        Outcome.CREDENTIALS_INVALID,
        Reason.INVALID_CONTENT_CREDENTIALS,
        Action.REVIEW,
        Signal.CONTENT_CREDENTIALS,
    )
    assert reviewed.score == pytest.approx(0.1)  # the model's finding is kept


def test_a_garbage_manifest_is_unreadable_and_the_model_verdict_is_unchanged(
    by_pixels: Detector, photo: Path, tmp_path: Path
) -> None:
    hostile = garbage_manifest(photo, tmp_path / "garbage.jpg")
    plain = by_pixels.screen(photo)
    verdict = by_pixels.screen(hostile)
    assert verdict.provenance is not None
    assert verdict.provenance.present
    assert verdict.provenance.state is ProvenanceState.UNREADABLE
    assert verdict.provenance.reason is ProvenanceReason.MALFORMED
    assert (verdict.outcome, verdict.reason, verdict.action, verdict.score) == (
        plain.outcome,
        plain.reason,
        plain.action,
        plain.score,
    )
    assert plain.outcome in SCORED_OUTCOMES
    assert [c.box for c in verdict.timeline] == [c.box for c in plain.timeline]


def test_a_reencoded_copy_has_lost_its_credentials(
    detector: Detector, authority: Authority, photo: Path, tmp_path: Path
) -> None:
    signed = authority.sign(photo, tmp_path / "generated.jpg", "trainedAlgorithmicMedia")
    copy = reencoded_copy(signed, tmp_path / "reupload.jpg")
    verdict = detector.screen(copy)
    assert verdict.provenance is not None
    assert verdict.provenance.state is ProvenanceState.ABSENT
    assert not verdict.provenance.present
    assert (verdict.outcome, verdict.action) == (Outcome.LIKELY_REAL, Action.NONE)
    assert verdict.media == "image" and verdict.faces_tracked == 1


def test_credentials_decide_even_when_the_model_refuses_the_pixels(
    authority: Authority, photo: Path, tmp_path: Path
) -> None:
    signed = authority.sign(photo, tmp_path / "generated.jpg", "trainedAlgorithmicMedia")
    config = DetectorConfig(images=ImageLimits(max_pixels=100_000))
    screening = Detector(InMemoryScorer(), config)
    verdict = screening.screen(signed)
    screening.close()
    assert model_of(verdict) == (Outcome.UNREADABLE, Reason.RESOLUTION_TOO_LARGE, Action.NONE)
    assert (verdict.outcome, verdict.action) == (Outcome.DECLARED_SYNTHETIC, Action.LABEL)
    assert verdict.media == "image" and verdict.image is None and verdict.video is None
    assert verdict.score is None and verdict.timeline == []


def test_with_credentials_disabled_the_model_and_the_bank_speak(
    authority: Authority, photo: Path, tmp_path: Path
) -> None:
    signed = authority.sign(photo, tmp_path / "generated.jpg", "trainedAlgorithmicMedia")
    reader = StaticCredentialsReader()
    screening = Detector(
        InMemoryScorer(rule=lambda clip: 0.1),
        DetectorConfig(credentials=CredentialsConfig(enabled=False)),
        credentials=reader,
    )
    verdict = screening.screen(signed)
    screening.close()
    assert reader.read == []  # not even read
    assert verdict.provenance is None
    assert [s.signal for s in verdict.signals] == [Signal.KNOWN_FAKES, Signal.MODEL]
    assert (verdict.outcome, verdict.action, verdict.action_signal) == (
        Outcome.LIKELY_REAL,
        Action.NONE,
        None,
    )
