"""In-process extraction: at most `workers` videos decoded at once, each with its own detector."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from detector.arrays import Frame
from detector.config import DetectorConfig
from detector.faces import Detection
from detector.routing import InProcessExtractor, videos_in_flight
from tests.conftest import SyntheticVideos


class RecordingDetector:
    """Finds no face; records how many extractions were detecting at once."""

    busy = 0
    most_busy = 0
    guard = threading.Lock()

    def __init__(self) -> None:
        self.users = 0
        self.closed = False

    def detect(self, frame_rgb: Frame) -> list[Detection]:
        cls = type(self)
        with cls.guard:
            self.users += 1
            assert self.users == 1, "a detector was used by two extractions at once"
            cls.busy += 1
            cls.most_busy = max(cls.most_busy, cls.busy)
        time.sleep(0.002)
        with cls.guard:
            self.users -= 1
            cls.busy -= 1
        return []

    def close(self) -> None:
        self.closed = True


class Made:
    """A face-detector factory that keeps what it made."""

    def __init__(self) -> None:
        self.detectors: list[RecordingDetector] = []

    def __call__(self) -> RecordingDetector:
        self.detectors.append(RecordingDetector())
        return self.detectors[-1]


@pytest.fixture
def detectors() -> Made:
    RecordingDetector.busy = RecordingDetector.most_busy = 0
    return Made()


def _extract_many(extractor: InProcessExtractor, videos: SyntheticVideos, threads: int) -> None:
    def extract(_: int) -> int:
        return extractor.extract(videos.no_face, clip_length=20, input_size=112).frames_analyzed

    with ThreadPoolExecutor(max_workers=threads) as pool:
        assert all(frames > 0 for frames in pool.map(extract, range(threads * 2)))


def test_at_most_workers_videos_are_decoded_at_once_with_as_many_detectors(
    synthetic: SyntheticVideos, detectors: Made
) -> None:
    extractor = InProcessExtractor(DetectorConfig(), detectors, workers=2)
    _extract_many(extractor, synthetic, threads=videos_in_flight(2))

    assert RecordingDetector.most_busy == 2
    assert len(detectors.detectors) == 2
    extractor.close()
    assert all(detector.closed for detector in detectors.detectors)


def test_without_a_limit_every_concurrent_extraction_gets_a_detector(
    synthetic: SyntheticVideos, detectors: Made
) -> None:
    extractor = InProcessExtractor(DetectorConfig(), detectors)
    _extract_many(extractor, synthetic, threads=3)
    extractor.close()

    assert 1 <= RecordingDetector.most_busy <= len(detectors.detectors) <= 3
    assert all(detector.closed for detector in detectors.detectors)


def test_a_caller_keeps_a_video_waiting_for_scores_beside_each_decoding() -> None:
    assert videos_in_flight(2) == 4


def test_a_limit_of_no_workers_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        InProcessExtractor(DetectorConfig(), workers=0)
