from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from detector.config import SamplingConfig
from detector.sampling import plan_windows


def test_windows_spread_over_the_whole_video_not_only_its_start() -> None:
    starts = plan_windows(1000, 20, SamplingConfig(windows=5))
    assert starts == [0, 245, 490, 735, 980]


def test_a_video_shorter_than_a_clip_has_no_window() -> None:
    assert plan_windows(19, 20, SamplingConfig()) == []


def test_a_video_of_one_clip_has_one_window_in_its_middle() -> None:
    assert plan_windows(20, 20, SamplingConfig()) == [0]
    assert plan_windows(30, 20, SamplingConfig()) == [5]


def test_the_window_count_is_capped() -> None:
    assert len(plan_windows(100_000, 20, SamplingConfig(windows=100, max_windows=32))) == 32


@given(
    frames=st.integers(min_value=0, max_value=1_000_000),
    clip=st.integers(min_value=1, max_value=64),
    windows=st.integers(min_value=1, max_value=64),
)
def test_windows_are_ordered_inside_the_video_and_never_overlap(
    frames: int, clip: int, windows: int
) -> None:
    starts = plan_windows(frames, clip, SamplingConfig(windows=windows, max_windows=32))
    assert len(starts) == min(windows, 32, frames // clip)
    assert all(s >= 0 and s + clip <= frames for s in starts)
    assert all(b - a >= clip for a, b in itertools.pairwise(starts))
