"""The window reader gives each window exactly the frames of the sequential pass, at less cost."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import numpy as np
import pytest

from detector.config import MediaLimits, SamplingConfig
from detector.decoding import DecodeStats, Window, WindowReader
from detector.probe import open_video
from detector.sampling import plan_windows
from detector.training.compression import ffmpeg_binary
from tests.conftest import SHARED_CLIPS, SyntheticVideos
from tests.support.videos import moving_face_video

CLIP = 20


def read(
    path: Path, *, seek: bool, starts: list[int] | None = None
) -> tuple[list[Window], DecodeStats, int]:
    with open_video(path, MediaLimits()) as video:
        planned = starts or plan_windows(video.probe.frame_count, CLIP, SamplingConfig())
        reader = WindowReader(video, CLIP, seek=seek)
        return list(reader.windows(planned)), reader.stats, video.probe.frame_count


def assert_same_frames(path: Path, starts: list[int] | None = None) -> DecodeStats:
    sequential, _, _ = read(path, seek=False, starts=starts)
    windowed, stats, _ = read(path, seek=True, starts=starts)
    assert [w.start for w in windowed] == [w.start for w in sequential]
    assert len(windowed) == len(starts or sequential)
    for ours, theirs in zip(windowed, sequential, strict=True):
        assert len(ours.frames) == CLIP
        assert ours.seconds == theirs.seconds
        for frame, expected in zip(ours.frames, theirs.frames, strict=True):
            np.testing.assert_array_equal(frame, expected)
    assert stats.broken_windows == []
    return stats


def encode(source: Path, target: Path, output: list[str], before: list[str] | None = None) -> Path:
    """`source` re-encoded by the ffmpeg of imageio-ffmpeg (`before`: input options)."""
    command = [ffmpeg_binary(), "-y", "-loglevel", "error", *(before or []), "-i", str(source)]
    subprocess.run([*command, *output, str(target)], check=True, capture_output=True, timeout=120)
    return target


@pytest.fixture(scope="module")
def long_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 frames (24 s at 25 fps) of a moving face, small enough to encode in seconds."""
    root = tmp_path_factory.mktemp("decoding")
    return moving_face_video(root / "source.mp4", frames=600, size=(160, 120))


X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
X264_B = ["-c:v", "libx264", "-preset", "fast", "-pix_fmt", "yuv420p"]


@pytest.mark.parametrize(
    ("name", "output", "before"),
    [
        pytest.param("long_gop.mp4", [*X264, "-g", "300", "-bf", "0"], [], id="long-gop"),
        pytest.param("b_frames.mp4", [*X264_B, "-g", "50", "-bf", "3"], [], id="b-frames"),
        pytest.param(
            "open_gop.mkv",
            [*X264_B, "-g", "40", "-bf", "2", "-x264opts", "open-gop=1"],
            [],
            id="open-gop-b-frames-matroska",
        ),
        pytest.param(
            "vfr.mp4",
            ["-vf", "setpts='(N+floor(N/7)*0.6)/25/TB'", "-fps_mode", "vfr", *X264, "-g", "60"],
            [],
            id="variable-frame-rate",
        ),
        pytest.param(
            "rotated.mp4",
            [*X264_B, "-g", "45", "-bf", "2"],
            ["-display_rotation", "-90"],
            id="rotated-90",
        ),
        pytest.param("mpeg4.avi", ["-c:v", "mpeg4", "-g", "30", "-bf", "2"], [], id="avi-mpeg4"),
    ],
)
def test_every_window_gets_exactly_the_frames_the_sequential_pass_gives(
    long_source: Path, tmp_path: Path, name: str, output: list[str], before: list[str]
) -> None:
    video = encode(long_source, tmp_path / name, output, before)
    if name.startswith("vfr"):
        windows, _, _ = read(video, seek=True)
        steps = {round(b - a, 3) for w in windows for a, b in itertools.pairwise(w.seconds)}
        assert len(steps) > 1  # the frames really are unevenly spaced
    assert_same_frames(video)


def test_a_rotated_video_comes_out_upright_in_both_passes(synthetic: SyntheticVideos) -> None:
    windows, _, _ = read(synthetic.rotated, seek=True, starts=[0])
    assert windows[0].frames[0].shape == (240, 320, 3)  # displayed, not the stored 320 x 240
    assert_same_frames(synthetic.rotated, starts=[0, 20])


def test_decoding_cost_follows_the_windows_not_the_length(
    long_source: Path, tmp_path: Path
) -> None:
    video = encode(long_source, tmp_path / "gop25.mp4", [*X264, "-g", "25", "-bf", "0"])
    stats = assert_same_frames(video)
    # 8 windows of 20 frames, each reached from the keyframe at most 24 frames before it.
    assert stats.seeks >= 7
    assert stats.decoded <= 8 * (CLIP + 24)
    assert stats.decoded < 600 / 2


def test_frames_outside_the_windows_that_nothing_refers_to_are_not_decoded(
    long_source: Path, tmp_path: Path
) -> None:
    # One keyframe only: no seek helps, but B-frames between the windows are skipped.
    one_gop = [*X264_B, "-g", "1000", "-bf", "3", "-b-pyramid", "none"]
    video = encode(long_source, tmp_path / "one_gop.mp4", one_gop)
    stats = assert_same_frames(video)
    assert stats.seeks == 0
    assert stats.decoded < 600 * 0.8


def test_windows_must_be_ascending_and_apart(synthetic: SyntheticVideos) -> None:
    with (
        open_video(synthetic.moving_face, MediaLimits()) as video,
        pytest.raises(ValueError, match="overlap"),
    ):
        list(WindowReader(video, CLIP).windows([0, 10]))


def test_a_stream_that_ends_early_yields_the_windows_it_holds(synthetic: SyntheticVideos) -> None:
    windows, _, count = read(synthetic.moving_face, seek=True, starts=[0, 20, 40])
    assert count == 60
    assert [w.start for w in windows] == [0, 20, 40]
    assert read(synthetic.moving_face, seek=True, starts=[30, 50])[0][0].start == 30
    assert len(read(synthetic.moving_face, seek=True, starts=[30, 50])[0]) == 1


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CLIPS.is_dir(), reason="../shared/data/clips is not present")
@pytest.mark.parametrize("clip", sorted(p.name for p in SHARED_CLIPS.glob("*/*.mp4")))
def test_the_shared_clips_give_the_same_windows_both_ways(clip: str) -> None:
    (path,) = SHARED_CLIPS.glob(f"*/{clip}")
    assert_same_frames(path)
