"""Cut a face track out of a window's frames as a fixed-size clip for the model.

The crop is square, centred on the (lightly smoothed) face centre, with a side
of `crop_scale` times the track's median face size held constant through the
clip, so the face does not pulse in size from detector jitter. Parts of the
square outside the frame are black. Output shape is (T, S, S, 3), RGB uint8.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from detector.arrays import Boxes, Clips, Frame

_SMOOTHING = 5  # frames in the moving average of the face centre


def square_crops(boxes: Boxes, crop_scale: float) -> Boxes:
    """Per-frame square crop boxes (T, 4) as x0, y0, x1, y1 from face boxes (T, 4)."""
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    centres = _moving_average(centres, _SMOOTHING)
    side = crop_scale * float(
        np.median(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
    )
    half = side / 2
    return np.concatenate([centres - half, centres + half], axis=1)


def cut_clip(frames: Sequence[Frame], crops: Boxes, size: int) -> Clips:
    """The clip (T, size, size, 3) uint8 of `frames` inside `crops`."""
    clip = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for t, (frame, crop) in enumerate(zip(frames, crops, strict=True)):
        clip[t] = _crop_resized(frame, crop, size)
    return clip


def _crop_resized(frame: Frame, crop: Boxes, size: int) -> Frame:
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = (round(float(v)) for v in crop)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    inner = frame[max(0, y0) : min(height, y1), max(0, x0) : min(width, x1)]
    if inner.size == 0:
        return np.zeros((size, size, 3), dtype=np.uint8)
    padded = cv2.copyMakeBorder(
        inner,
        top=max(0, -y0),
        bottom=max(0, y1 - height),
        left=max(0, -x0),
        right=max(0, x1 - width),
        borderType=cv2.BORDER_CONSTANT,
        value=(0, 0, 0),
    )
    shrinking = padded.shape[0] > size
    return np.asarray(
        cv2.resize(
            padded,
            (size, size),
            interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR,
        ),
        dtype=np.uint8,
    )


def _moving_average(values: Boxes, window: int) -> Boxes:
    if len(values) < 3:
        return values
    window = min(window, len(values) if len(values) % 2 else len(values) - 1)
    pad = window // 2
    padded = np.pad(values, ((pad, pad), (0, 0)), mode="edge")
    kernel = np.ones(window) / window
    return np.stack(
        [np.convolve(padded[:, k], kernel, mode="valid") for k in range(values.shape[1])], axis=1
    )
