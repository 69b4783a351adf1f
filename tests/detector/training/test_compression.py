"""Training clips go through H.264 as uploads do, at the rate factor asked for."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from detector.training.compression import CRF_RANGE, CompressionFailed, h264_round_trip
from tests.support.videos import astronaut_face


def moving_face(size: tuple[int, int], frames: int = 20) -> list[np.ndarray]:
    face = np.ascontiguousarray(cv2.resize(astronaut_face(), (160, 160)))
    width, height = size
    return [
        np.asarray(
            cv2.warpAffine(face, np.float64([[1, 0, t * 0.7], [0, 1, t * 0.4]]), (width, height)),
            dtype=np.uint8,
        )
        for t in range(frames)
    ]


def error(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(
        np.mean([np.abs(x.astype(int) - y.astype(int)).mean() for x, y in zip(a, b, strict=True)])
    )


@pytest.mark.parametrize("size", [(160, 160), (113, 97)])
def test_every_frame_comes_back_at_its_size_even_when_odd(size: tuple[int, int]) -> None:
    frames = moving_face(size)
    decoded = h264_round_trip(frames, crf=23)
    assert len(decoded) == len(frames)
    assert all(f.shape == (size[1], size[0], 3) and f.dtype == np.uint8 for f in decoded)


def test_a_higher_rate_factor_loses_more_detail() -> None:
    frames = moving_face((160, 160))
    losses = [
        error(frames, h264_round_trip(frames, crf)) for crf in (CRF_RANGE[0], 28, CRF_RANGE[1])
    ]
    assert 0 < losses[0] < losses[1] < losses[2]
    assert losses[0] < 3.0  # near-lossless at the low end: the face is still the face


def test_the_same_frames_and_rate_factor_compress_identically() -> None:
    """A real clip and its pseudo-fake share the setting; the codec adds no randomness."""
    frames = moving_face((128, 128))
    first, second = h264_round_trip(frames, 30), h264_round_trip(frames, 30)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_no_frames_give_no_frames() -> None:
    assert h264_round_trip([], crf=23) == []


def test_settings_the_encoder_cannot_take_are_refused_before_it_runs() -> None:
    with pytest.raises(ValueError, match="0 to 51"):
        h264_round_trip([np.zeros((64, 64, 3), np.uint8)], crf=99)
    with pytest.raises(ValueError, match="one size"):
        h264_round_trip([np.zeros((64, 64, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)], 23)


def test_an_encoder_failure_is_raised_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("detector.training.compression.ffmpeg_binary", lambda: "false")
    with pytest.raises(CompressionFailed, match="exited 1"):
        h264_round_trip([np.zeros((64, 64, 3), np.uint8)], crf=23)
