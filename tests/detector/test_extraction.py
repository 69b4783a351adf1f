from __future__ import annotations

import numpy as np

from detector.extraction import detect_strided
from detector.faces import Detection


class CountingDetector:
    def __init__(self) -> None:
        self.calls = 0

    def detect(self, frame_rgb: np.ndarray) -> list[Detection]:
        self.calls += 1
        return [Detection(0, 0, 10, 10, 0.9)]

    def close(self) -> None:
        pass


def test_detection_runs_on_every_kth_frame_and_the_last_and_marks_the_others_skipped() -> None:
    frames = [np.zeros((8, 8, 3), dtype=np.uint8)] * 20
    detector = CountingDetector()
    found = detect_strided(detector, frames, every=3)
    looked = [t for t, detections in enumerate(found) if detections is not None]
    assert looked == [0, 3, 6, 9, 12, 15, 18, 19]
    assert detector.calls == len(looked)
    assert (
        detect_strided(CountingDetector(), frames, every=1) == [[Detection(0, 0, 10, 10, 0.9)]] * 20
    )
