"""Self-blended pseudo-fakes have the properties the method relies on."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from detector.config import DetectorConfig
from detector.faces import MediaPipeFaceDetector
from detector.training.selfblend import (
    FaceMeshLandmarker,
    animate,
    blend_mask,
    hull_mask,
    pad_face,
    random_motion,
    self_blend,
    self_blend_frames,
)
from detector.training.stills import StillClipMaker
from tests.support.videos import astronaut_face


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A tight 200 x 200 face crop, like UTKFace's, padded as training pads them."""
    return pad_face(np.ascontiguousarray(cv2.resize(astronaut_face(), (200, 200))))


@pytest.fixture(scope="module")
def landmarks(face: np.ndarray) -> Iterator[np.ndarray]:
    landmarker = FaceMeshLandmarker()
    found = landmarker.landmarks(face)
    landmarker.close()
    assert found is not None and found.shape == (468, 2)
    yield found


def test_padding_keeps_the_face_and_adds_context(face: np.ndarray) -> None:
    tight = cv2.resize(astronaut_face(), (200, 200))
    assert face.shape == (440, 440, 3)
    assert np.array_equal(face[120:320, 120:320], tight)


@pytest.mark.parametrize("seed", range(8))
def test_the_blend_is_confined_to_the_face_hull(
    face: np.ndarray, landmarks: np.ndarray, seed: int
) -> None:
    fake, mask = self_blend(face, landmarks, np.random.default_rng(seed))
    outside = hull_mask(landmarks, face.shape[:2]) == 0
    assert np.array_equal(fake[outside], face[outside])
    assert mask[outside].max() == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_a_pseudo_fake_keeps_shape_and_range_and_differs_inside_the_mask(
    face: np.ndarray, landmarks: np.ndarray, seed: int
) -> None:
    fake, mask = self_blend(face, landmarks, np.random.default_rng(seed))
    assert fake.shape == face.shape and fake.dtype == np.uint8
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    blended = mask > 0.2
    assert blended.sum() > 0.1 * hull_mask(landmarks, face.shape[:2]).sum()
    difference = np.abs(fake.astype(int) - face.astype(int)).mean(axis=2)
    assert difference[blended].mean() > 2.0


def test_the_mask_is_soft_and_covers_the_face_centre(
    face: np.ndarray, landmarks: np.ndarray
) -> None:
    mask = blend_mask(landmarks, face.shape[:2], np.random.default_rng(0))
    centre = np.round(landmarks.mean(axis=0)).astype(int)
    assert mask[centre[1], centre[0]] == pytest.approx(1.0, abs=0.05)
    levels = np.unique(np.round(mask, 2))
    assert len(levels) > 10  # a gradient, not a hard cut-out


def test_a_still_moves_smoothly_through_twenty_frames(face: np.ndarray) -> None:
    motion = random_motion(20, (face.shape[1], face.shape[0]), np.random.default_rng(1))
    frames = animate([face] * 20, motion)
    size = (round(face.shape[0] * motion.resolution), round(face.shape[1] * motion.resolution))
    assert len(frames) == 20 and all(f.shape == (*size, 3) for f in frames)
    steps = np.abs(np.diff(motion.matrices[:, :, 2], axis=0)).max()
    assert steps < 0.02 * face.shape[0]  # a few pixels per frame, no jumps
    assert not np.array_equal(frames[0], frames[-1])


def test_clips_are_filmed_at_resolutions_from_a_quarter_to_full_size(face: np.ndarray) -> None:
    """So sharpness alone cannot tell a pseudo-fake: low-resolution uploads are common."""
    rng = np.random.default_rng(4)
    resolutions = [random_motion(20, (198, 198), rng).resolution for _ in range(200)]
    assert 0.25 <= min(resolutions) < 0.3 and 0.9 < max(resolutions) <= 1.0
    assert 0.4 < float(np.median(resolutions)) < 0.6  # log-uniform: median ≈ 0.5
    low = random_motion(20, (198, 198), np.random.default_rng(0))
    low = type(low)(low.matrices, low.crf, resolution=0.25)
    small = animate([face] * 20, low)[0]
    assert small.shape == (round(face.shape[0] / 4), round(face.shape[1] / 4), 3)


@pytest.mark.parametrize("seed", range(6))
def test_every_frame_of_a_pseudo_fake_clip_is_blended_inside_the_hull_only(
    face: np.ndarray, landmarks: np.ndarray, seed: int
) -> None:
    frames, mask = self_blend_frames(face, landmarks, 20, np.random.default_rng(seed))
    outside = hull_mask(landmarks, face.shape[:2]) == 0
    assert len(frames) == 20 and mask[outside].max() == 0.0
    for frame in frames:
        assert frame.shape == face.shape and frame.dtype == np.uint8
        assert np.array_equal(frame[outside], face[outside])


def wobble_of(frames: list[np.ndarray], mask: np.ndarray) -> float:
    """Mean frame-to-frame change of the pasted face, in grey levels.

    Measured in the blend's core and divided by its opacity (a frame changes
    by the pasted face's change times the mask), so half-transparent blends
    count alike.
    """
    opacity = float(mask.max())
    core = mask >= 0.5 * opacity
    steps = [
        np.abs(b.astype(int) - a.astype(int))[core].mean() for a, b in itertools.pairwise(frames)
    ]
    return float(np.mean(steps)) / opacity


def test_the_pasted_face_wobbles_from_frame_to_frame_in_most_clips_and_only_a_little(
    face: np.ndarray, landmarks: np.ndarray
) -> None:
    """As a face swap pastes each frame on its own; a third of clips hold still."""
    wobbles = [
        wobble_of(*self_blend_frames(face, landmarks, 6, np.random.default_rng(seed)))
        for seed in range(60)
    ]
    still = [w for w in wobbles if w == 0.0]
    moving = [w for w in wobbles if w > 0.0]
    assert len(still) + len(moving) == len(wobbles)  # every clip measured
    assert 10 <= len(still) <= 32 and len(moving) >= 28
    assert min(moving) > 1.0 and max(moving) < 12.0  # visible to a model, not a glitch


def test_without_wobble_every_frame_is_the_same_single_blend(
    face: np.ndarray, landmarks: np.ndarray
) -> None:
    frames, _ = self_blend_frames(face, landmarks, 5, np.random.default_rng(3), wobble=False)
    single, _ = self_blend(face, landmarks, np.random.default_rng(3))
    assert all(np.array_equal(frame, single) for frame in frames)


def test_animation_takes_one_still_per_frame_of_motion(face: np.ndarray) -> None:
    motion = random_motion(20, (face.shape[1], face.shape[0]), np.random.default_rng(1))
    with pytest.raises(ValueError, match="3 stills for 20 frames"):
        animate([face] * 3, motion)


def test_a_still_gives_a_real_and_a_fake_clip_through_the_scoring_pipeline() -> None:
    config = DetectorConfig()
    faces = MediaPipeFaceDetector(config.faces)
    maker = StillClipMaker(faces, config, input_size=112)
    try:
        pair = maker.pair(
            np.ascontiguousarray(cv2.resize(astronaut_face(), (200, 200))),
            np.random.default_rng(2),
        )
    finally:
        maker.close()
        faces.close()
    assert pair is not None
    real, fake = pair
    assert real.shape == fake.shape == (20, 112, 112, 3)
    assert real.dtype == fake.dtype == np.uint8
    # Each clip is cut by its own detections (as in serving), so the two are not
    # pixel-aligned; what holds is that they differ and that each moves smoothly.
    assert np.abs(real.astype(int) - fake.astype(int)).mean() > 2.0
    for clip in (real, fake):
        steps = np.abs(np.diff(clip.astype(int), axis=0)).mean(axis=(1, 2, 3))
        assert steps.max() < 20.0
