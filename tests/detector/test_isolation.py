"""Decoding in worker processes: a crash or a hang costs one video, never the service."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from detector.config import DetectorConfig, MediaLimits
from detector.extraction import Extraction
from detector.faces import FaceDetector
from detector.isolation import IsolatedExtractor, default_extract
from detector.probe import Unreadable
from schemas import Reason
from tests.conftest import SyntheticVideos


def crashes_on_poison(
    path: Path, clip_length: int, input_size: int, config: DetectorConfig, faces: FaceDetector
) -> Extraction:
    """Runs in the worker: a file named poison* kills it the way a decoder bug would."""
    if path.name.startswith("poison"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if path.name.startswith("hang"):
        time.sleep(60)
    if path.name.startswith("greedy"):
        np.ones(8 * 1024**3, dtype=np.uint8)  # 8 GiB: over the worker's address-space cap
    return default_extract(path, clip_length, input_size, config, faces)


def renamed(video: Path, target: Path) -> Path:
    """A copy of a good video under a name that `crashes_on_poison` reacts to."""
    target.write_bytes(video.read_bytes())
    return target


@pytest.fixture(scope="module")
def extractor() -> Iterator[IsolatedExtractor]:
    config = replace(DetectorConfig(), limits=MediaLimits(decode_timeout_s=3.0))
    isolated = IsolatedExtractor(config, workers=2, memory_limit_mb=1024, extract=crashes_on_poison)
    yield isolated
    isolated.close()


def test_a_video_is_extracted_in_a_worker_process(
    extractor: IsolatedExtractor, synthetic: SyntheticVideos
) -> None:
    extraction = extractor.extract(synthetic.moving_face, clip_length=20, input_size=112)
    assert extraction.tracks == 1
    assert [c.pixels.shape for c in extraction.clips] == [(20, 112, 112, 3)] * 3


def test_a_refused_video_comes_back_as_its_reason(
    extractor: IsolatedExtractor, synthetic: SyntheticVideos
) -> None:
    with pytest.raises(Unreadable) as refused:
        extractor.extract(synthetic.not_a_video, clip_length=20, input_size=112)
    assert refused.value.reason is Reason.NOT_A_VIDEO


def test_a_decoder_crash_is_that_video_s_verdict_and_the_worker_is_replaced(
    extractor: IsolatedExtractor, synthetic: SyntheticVideos, tmp_path: Path
) -> None:
    poison = renamed(synthetic.moving_face, tmp_path / "poison.mp4")
    with pytest.raises(Unreadable) as crashed:
        extractor.extract(poison, clip_length=20, input_size=112)
    assert crashed.value.reason is Reason.DECODER_CRASHED
    assert "exit code -11" in crashed.value.detail  # SIGSEGV
    for _ in range(3):  # both workers still answer
        assert extractor.extract(synthetic.moving_face, clip_length=20, input_size=112).tracks == 1


def test_a_hung_decoder_is_killed_after_the_time_limit(
    extractor: IsolatedExtractor, synthetic: SyntheticVideos, tmp_path: Path
) -> None:
    hang = renamed(synthetic.moving_face, tmp_path / "hang.mp4")
    started = time.monotonic()
    with pytest.raises(Unreadable) as refused:
        extractor.extract(hang, clip_length=20, input_size=112)
    assert refused.value.reason is Reason.DECODE_TIMEOUT
    assert time.monotonic() - started < 15
    assert extractor.extract(synthetic.moving_face, clip_length=20, input_size=112).tracks == 1


def test_a_decoder_over_its_memory_cap_fails_that_video_only(
    extractor: IsolatedExtractor, synthetic: SyntheticVideos, tmp_path: Path
) -> None:
    greedy = renamed(synthetic.moving_face, tmp_path / "greedy.mp4")
    with pytest.raises(Unreadable) as refused:
        extractor.extract(greedy, clip_length=20, input_size=112)
    assert refused.value.reason is Reason.DECODE_FAILED
    assert "memory" in refused.value.detail
    assert extractor.extract(synthetic.moving_face, clip_length=20, input_size=112).tracks == 1
