"""Decode the frames the windows need, and as few others as the codec allows.

A long upload is analysed through a few windows of consecutive frames; decoding
every frame between them would make its cost follow its length. The reader
works from the probe's frame index (timestamps and keyframe flags, read without
decoding) and, for each window:

* seeks to the keyframe at or before the window's first frame when that
  keyframe lies ahead of where the decoder is (decoding from there costs less
  than decoding through the gap), then decodes forward to the window;
* asks the decoder to skip frames no other frame refers to (`skip_frame`
  NONREF) outside the windows: they are never shown to anyone, and skipping
  them cannot change a frame that is;
* finds each decoded frame's position by its timestamp, so a window gets exactly
  the frames the sequential pass gives (same positions, same pixels).

Without exact timestamps (a stream whose packets carry none, or repeat them)
the reader falls back to the sequential pass: every frame decoded and counted
in order. Memory stays bounded by one window: frames are converted to RGB only
when they belong to one, and handed over window by window.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import av
import av.video.frame
import numpy as np

from detector.arrays import Frame
from detector.probe import OpenVideo, Unreadable
from schemas.verdict import Reason

# Seek only when the keyframe is this many frames ahead of the decoder: a seek flushes
# the decoder and its threads, which costs about as much as decoding a few frames.
SEEK_MIN_GAIN_FRAMES = 4


@dataclass(frozen=True)
class Window:
    """`frames` at positions `start`, `start + 1`, ... (RGB, upright), and their times."""

    start: int
    frames: list[Frame]
    seconds: list[float]  # each frame's time from the video's first frame


@dataclass
class DecodeStats:
    """What reading the windows cost: frames the decoder produced, and seeks."""

    decoded: int = 0
    seeks: int = 0
    sequential: bool = False  # no usable timestamps: every frame decoded, counted in order
    broken_windows: list[int] = field(default_factory=list)  # starts of windows a frame lacked


class WindowReader:
    """Reads windows of `length` consecutive frames from an `OpenVideo`, in order.

    `seek=False` is the sequential pass: no seeks and no skipped frames (the
    reference the seeking reader is tested against).
    """

    def __init__(
        self,
        video: OpenVideo,
        length: int,
        *,
        seek: bool = True,
        deadline: float | None = None,
        timeout_s: float = 0.0,
    ) -> None:
        self._video = video
        self._length = length
        self._seek = seek and video.index.exact
        self._deadline = deadline
        self._timeout_s = timeout_s
        self.stats = DecodeStats(sequential=not video.index.exact)

    def windows(self, starts: Sequence[int]) -> Iterator[Window]:
        """One `Window` per start (ascending, not overlapping), until the stream ends early."""
        if not starts:
            return
        if any(b < a + self._length for a, b in itertools.pairwise(starts)):
            raise ValueError("windows must be ascending and must not overlap")
        if self._video.index.exact:
            yield from self._by_timestamp(starts)
        else:
            yield from self._by_count(starts)

    def _by_timestamp(self, starts: Sequence[int]) -> Iterator[Window]:
        index, stream = self._video.index, self._video.stream
        wanted = np.zeros(len(index), dtype=bool)
        for start in starts:
            wanted[start : start + self._length] = True
        remaining = list(starts)
        position = -1  # the last position the decoder has output since the last seek
        frames: list[Frame] = []
        seconds: list[float] = []
        packets = self._restart(int(index.seek_to.min()))
        sought = 0  # the keyframe of the last seek: a demuxer may land before it, never seek twice
        while remaining:
            if not frames:
                keyframe = index.keyframe_at_or_before(remaining[0])
                if (
                    self._seek
                    and keyframe is not None
                    and keyframe > sought
                    and keyframe - (position + 1) >= SEEK_MIN_GAIN_FRAMES
                ):
                    packets = self._seek_to(keyframe)
                    self.stats.seeks += 1
                    sought = keyframe
                    position = keyframe - 1
            packet = next(packets, None)
            if packet is None:
                return  # the stream ended (or broke) before this window was complete
            if self._seek:
                at = index.position_of(packet.pts)
                stream.codec_context.skip_frame = (
                    "DEFAULT" if at is None or wanted[at] else "NONREF"
                )
            for frame in self._decode(packet):
                at = index.position_of(frame.pts)
                if at is None:
                    continue  # not an indexed frame (an edit list's dropped lead-in)
                position = at
                while remaining and at > remaining[0] + len(frames):
                    # The frame this window expects next never came (a packet that did
                    # not decode): the window is dropped, not filled with another frame.
                    self.stats.broken_windows.append(remaining.pop(0))
                    frames, seconds = [], []
                if not remaining:
                    return
                start = remaining[0]
                if start <= at < start + self._length:
                    frames.append(_upright(frame, self._video.probe.rotation))
                    seconds.append(index.seconds(at))
                    if len(frames) == self._length:
                        yield Window(start, frames, seconds)
                        remaining.pop(0)
                        frames, seconds = [], []
                        if not remaining:
                            return
                self._check_deadline()

    def _by_count(self, starts: Sequence[int]) -> Iterator[Window]:
        """The sequential pass by decoding order, for streams without usable timestamps."""
        remaining = list(starts)
        frames: list[Frame] = []
        packets = self._restart(None)
        position = 0
        for packet in packets:
            for frame in self._decode(packet):
                start = remaining[0]
                if start <= position < start + self._length:
                    frames.append(_upright(frame, self._video.probe.rotation))
                    if len(frames) == self._length:
                        seconds = [(start + i) / self._video.probe.fps for i in range(len(frames))]
                        yield Window(start, frames, seconds)
                        remaining.pop(0)
                        frames = []
                        if not remaining:
                            return
                position += 1
                self._check_deadline()

    def _seek_to(self, keyframe: int) -> Iterator[av.Packet[Any]]:
        """Packets from `keyframe` (or an earlier one), never from after it.

        Demuxers seek by presentation time (MP4, Matroska) or by decoding time: try
        the keyframe's presentation time first and, when that lands past the
        keyframe, its decoding time, then the start.
        """
        index = self._video.index
        for target in (int(index.pts[keyframe]), int(index.seek_to[keyframe]), None):
            packets = self._restart(target)
            first = next(packets, None)
            if first is None:
                continue
            landed = index.position_of(first.pts)
            if target is None or (landed is not None and landed <= keyframe):
                return itertools.chain([first], packets)
        return self._restart(None)

    def _restart(self, pts: int | None) -> Iterator[av.Packet[Any]]:
        """Packets from the keyframe at or before `pts` (None: the start), decoder flushed.

        PyAV's seek flushes the decoder, so no frame of before the seek comes out after it.
        """
        container, stream = self._video.container, self._video.stream
        if pts is None:
            container.seek(0)  # the container's start, whatever its streams' timestamps
        else:
            container.seek(pts, stream=stream)
        stream.codec_context.skip_frame = "DEFAULT"
        return container.demux(stream)

    def _decode(self, packet: av.Packet[Any]) -> list[av.video.frame.VideoFrame]:
        try:
            frames = [f for f in packet.decode() if isinstance(f, av.video.frame.VideoFrame)]
        except av.FFmpegError:
            return []  # a broken packet: its frame is missing, which the window notices
        self.stats.decoded += len(frames)
        return frames

    def _check_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise Unreadable(
                Reason.DECODE_TIMEOUT, f"decoding took longer than {self._timeout_s:.0f} s"
            )


def _upright(frame: av.video.frame.VideoFrame, rotation: int) -> Frame:
    """The frame as RGB uint8 (H, W, 3), turned `rotation` degrees clockwise for display."""
    pixels = np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
    if rotation:
        return np.ascontiguousarray(np.rot90(pixels, k=-(rotation // 90)))
    return pixels
