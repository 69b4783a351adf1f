from __future__ import annotations

import pytest

from detector.config import MediaLimits
from detector.probe import Unreadable, probe
from schemas import Reason
from tests.conftest import SyntheticVideos


def test_a_video_is_probed_for_size_rate_length_and_rotation(synthetic: SyntheticVideos) -> None:
    info = probe(synthetic.moving_face, MediaLimits())
    assert (info.width, info.height, info.fps, info.frame_count) == (320, 240, 25.0, 60)
    assert info.duration_s == pytest.approx(2.4)
    assert info.rotation == 0


def test_rotation_metadata_is_honoured(synthetic: SyntheticVideos) -> None:
    info = probe(synthetic.rotated, MediaLimits())
    assert info.rotation == 90
    assert (info.width, info.height) == (320, 240)  # displayed, not the stored 240 x 320


@pytest.mark.parametrize(
    ("video", "reason"),
    [
        ("zero_bytes", Reason.EMPTY_FILE),
        ("not_a_video", Reason.NOT_A_VIDEO),
        ("truncated", Reason.CORRUPT_CONTAINER),
        ("huge_resolution", Reason.RESOLUTION_TOO_LARGE),
    ],
)
def test_bad_files_are_refused_with_a_reason(
    synthetic: SyntheticVideos, video: str, reason: Reason
) -> None:
    with pytest.raises(Unreadable) as refused:
        probe(getattr(synthetic, video), MediaLimits())
    assert refused.value.reason is reason


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (MediaLimits(max_bytes=1000), Reason.FILE_TOO_LARGE),
        (MediaLimits(max_pixels=320 * 239), Reason.RESOLUTION_TOO_LARGE),
        (MediaLimits(max_duration_s=2.0), Reason.TOO_LONG),
        (MediaLimits(max_frames=59), Reason.TOO_MANY_FRAMES),
    ],
)
def test_every_limit_is_enforced_before_decoding(
    synthetic: SyntheticVideos, limits: MediaLimits, reason: Reason
) -> None:
    with pytest.raises(Unreadable) as refused:
        probe(synthetic.moving_face, limits)
    assert refused.value.reason is reason
