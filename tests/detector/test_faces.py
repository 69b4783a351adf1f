from __future__ import annotations

import numpy as np
from skimage import data

from detector.config import FaceConfig
from detector.faces import MediaPipeFaceDetector


def test_the_bundled_mediapipe_model_finds_the_astronaut_face() -> None:
    detector = MediaPipeFaceDetector(FaceConfig())
    try:
        [face] = detector.detect(data.astronaut())
    finally:
        detector.close()
    assert 150 < face.x0 < 200 and 250 < face.x1 < 300  # around columns 174-278
    assert 40 < face.y0 < 100 and 150 < face.y1 < 200
    assert face.confidence > 0.8


def test_a_large_frame_is_searched_downscaled_but_boxes_are_in_its_pixels() -> None:
    frame = np.zeros((2048, 2048, 3), dtype=np.uint8)
    frame[:512, :512] = data.astronaut()
    frame = np.ascontiguousarray(np.kron(frame[:1024, :1024], np.ones((2, 2, 1), dtype=np.uint8)))
    detector = MediaPipeFaceDetector(FaceConfig(detect_max_side=1024))
    try:
        [face] = detector.detect(frame)
    finally:
        detector.close()
    assert 300 < face.x0 < 400 and 500 < face.x1 < 600


def test_a_frame_without_a_face_has_no_detection() -> None:
    detector = MediaPipeFaceDetector(FaceConfig())
    try:
        noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
        assert detector.detect(noise) == []
    finally:
        detector.close()
