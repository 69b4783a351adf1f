"""Where in a video to look: windows of consecutive frames spread over all of it.

A deepfake may be spliced into any part of a video, so the windows cover its
whole length rather than its first seconds. The plan is made from the probed
frame count before decoding, so one sequential pass reads every window with
no seeking (seeking in long-GOP video re-decodes from the previous keyframe
for every window).
"""

from __future__ import annotations

from detector.config import SamplingConfig


def plan_windows(frame_count: int, clip_length: int, config: SamplingConfig) -> list[int]:
    """First frame of each window: evenly spread, in order, never overlapping.

    Empty when the video is shorter than one clip.
    """
    count = min(config.windows, config.max_windows, frame_count // clip_length)
    if count <= 0:
        return []
    if count == 1:
        return [(frame_count - clip_length) // 2]
    spacing = (frame_count - clip_length) / (count - 1)  # >= clip_length by the min() above
    return [int(i * spacing) for i in range(count)]
