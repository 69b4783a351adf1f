"""Link per-frame face detections into tracks: within a window, then across windows.

Detection may run on only some frames of a window (`FaceConfig.detect_every`):
a frame it did not look at is `None`, not "no face", and a track's coverage
is the share of the looked-at frames it was detected in.

Within a window of consecutive frames, a detection joins the active track whose
last box overlaps it most (IoU >= `link_iou`, greedy, best pair first); a
detection that joins none starts a new track. A track that goes undetected for
more than `max_gap` frames ends.

When a face is lost mid-window (a turn of the head, motion blur, an occlusion),
its box in the missing frames is interpolated linearly between the detections
on either side, and held at the first/last detection before/after them, so the
clip still has all 20 frames of that person. A track detected in fewer than
`min_coverage` of the window's frames is dropped: interpolating most of a clip
would score background, not a face. Each clip reports its `face_coverage`.

Across windows, a track continues an earlier one when its first box overlaps
that track's last box (IoU >= `window_link_iou`). Windows of a long video are
seconds apart, so this keeps a person's id while they stay roughly in place; a
person who moves far between windows gets a new id, so `faces_tracked` is an
upper bound on the number of people.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from detector.arrays import Boxes, Mask
from detector.config import FaceConfig
from detector.faces import Detection


@dataclass
class WindowTrack:
    """One face through one window. `boxes` (T, 4) as x0, y0, x1, y1 pixels, gaps filled."""

    boxes: Boxes
    detected: Mask  # (T,) bool: detected in that frame, else interpolated
    looked: Mask | None = None  # (T,) bool: detection ran on that frame; None: on every one

    @property
    def coverage(self) -> float:
        if self.looked is None:
            return float(self.detected.mean())
        return float(self.detected.sum() / max(1, int(self.looked.sum())))

    def mean_box(self) -> Boxes:
        return np.asarray(self.boxes[self.detected].mean(axis=0))


@dataclass
class _Open:
    frames: list[int] = field(default_factory=list)
    boxes: list[Boxes] = field(default_factory=list)


def iou(a: Boxes, b: Boxes) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def greedy_match(known: Sequence[Boxes], new: Sequence[Boxes], min_iou: float) -> dict[int, int]:
    """Pairs (new index → known index) by IoU, best pair first, each box used once.

    Pairs overlapping less than `min_iou` are never made. Greedy rather than
    optimal (Hungarian): faces in one frame rarely compete for the same box.
    """
    pairs = sorted(
        ((iou(a, b), ki, ni) for ki, a in enumerate(known) for ni, b in enumerate(new)),
        reverse=True,
    )
    matched: dict[int, int] = {}
    taken: set[int] = set()
    for overlap, ki, ni in pairs:
        if overlap < min_iou:
            break
        if ki in taken or ni in matched:
            continue
        matched[ni] = ki
        taken.add(ki)
    return matched


def link_window(
    detections: Sequence[Sequence[Detection] | None], config: FaceConfig
) -> list[WindowTrack]:
    """Tracks through one window, given the detections of each of its frames.

    `None` marks a frame detection did not run on; gaps are counted in frames
    looked at, so a stride of k does not end a track that is found every time.
    """
    length = len(detections)
    looked = np.array([found is not None for found in detections], dtype=bool)
    looked_before = np.cumsum(looked)  # looked-at frames up to and including t
    open_tracks: list[_Open] = []
    closed: list[_Open] = []
    for t, frame_detections in enumerate(detections):
        if frame_detections is None:
            continue
        still_open: list[_Open] = []
        for track in open_tracks:
            missed = looked_before[t] - looked_before[track.frames[-1]] - 1
            (still_open if missed <= config.max_gap else closed).append(track)
        open_tracks = still_open
        boxes = [np.array([d.x0, d.y0, d.x1, d.y1]) for d in frame_detections]
        matched = greedy_match([track.boxes[-1] for track in open_tracks], boxes, config.link_iou)
        for di, box in enumerate(boxes):
            if di in matched:
                open_tracks[matched[di]].frames.append(t)
                open_tracks[matched[di]].boxes.append(box)
            else:
                open_tracks.append(_Open([t], [box]))
    kept = []
    every = bool(looked.all())
    for track in closed + open_tracks:
        filled = _fill(track, length, None if every else looked)
        if filled.coverage >= config.min_coverage:
            kept.append(filled)
    kept.sort(key=lambda track: float(track.mean_box()[0]))
    return kept


def _fill(track: _Open, length: int, looked: Mask | None) -> WindowTrack:
    known = np.asarray(track.frames, dtype=np.float64)
    stacked = np.stack(track.boxes)
    everywhere = np.arange(length, dtype=np.float64)
    boxes = np.stack(
        [np.interp(everywhere, known, stacked[:, k]) for k in range(4)], axis=1
    )  # np.interp holds the end values outside the detected range
    detected = np.zeros(length, dtype=bool)
    detected[track.frames] = True
    return WindowTrack(boxes=boxes, detected=detected, looked=looked)


class TrackRegistry:
    """Gives window tracks ids that persist across the windows of one video.

    A window's track continues the id whose last box (at the end of an earlier
    window) overlaps its first box most; when windows are adjacent this is
    frame-to-frame linking, when they are seconds apart it assumes the person
    stayed roughly in place.
    """

    def __init__(self, config: FaceConfig) -> None:
        self._config = config
        self._last_boxes: list[Boxes] = []

    @property
    def count(self) -> int:
        return len(self._last_boxes)

    def assign(self, tracks: Sequence[WindowTrack]) -> list[int]:
        firsts = [track.boxes[0] for track in tracks]
        ids = greedy_match(self._last_boxes, firsts, self._config.window_link_iou)
        for wi, track in enumerate(tracks):
            if wi not in ids:
                ids[wi] = len(self._last_boxes)
                self._last_boxes.append(track.boxes[-1])
            else:
                self._last_boxes[ids[wi]] = track.boxes[-1]
        return [ids[wi] for wi in range(len(tracks))]
