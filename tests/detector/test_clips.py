from __future__ import annotations

import numpy as np

from detector.clips import cut_clip, square_crops


def test_crops_are_square_and_scaled_around_the_face() -> None:
    boxes = np.tile([100.0, 50.0, 140.0, 110.0], (20, 1))  # 40 x 60 face
    crops = square_crops(boxes, crop_scale=1.5)
    sides = crops[:, 2:] - crops[:, :2]
    assert np.allclose(sides, 90.0)  # 1.5 x the larger side
    assert np.allclose((crops[:, :2] + crops[:, 2:]) / 2, [120.0, 80.0])


def test_the_crop_size_holds_steady_through_detector_jitter() -> None:
    rng = np.random.default_rng(0)
    sides = 40 + rng.normal(0, 3, 20)
    boxes = np.stack([np.full(20, 100.0), np.full(20, 100.0), 100 + sides, 100 + sides], axis=1)
    crops = square_crops(boxes, 1.3)
    assert np.ptp(crops[:, 2] - crops[:, 0]) < 1e-9


def test_a_clip_is_t_by_size_by_size_rgb_and_black_outside_the_frame() -> None:
    frames = [np.full((100, 100, 3), 200, dtype=np.uint8) for _ in range(20)]
    crops = np.tile([-50.0, -50.0, 50.0, 50.0], (20, 1))  # top-left quarter is off-frame
    clip = cut_clip(frames, crops, 112)
    assert clip.shape == (20, 112, 112, 3) and clip.dtype == np.uint8
    assert clip[0, :50, :50].max() == 0
    assert clip[0, 60:, 60:].min() == 200
