"""Find faces in a frame with MediaPipe's bundled face detector.

MediaPipe 0.10.21 ships its detection models inside the wheel, so nothing is
downloaded. The full-range model letterboxes the frame to 192x192; frames
larger than `detect_max_side` are downscaled first (it sees no more detail
anyway). When a frame yields no face, it is retried once with its luminance
equalised (CLAHE): dim, low-contrast footage is common in uploads and the
detector misses faces there that equalisation makes visible.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from detector.arrays import Frame
from detector.config import FaceConfig


@dataclass(frozen=True)
class Detection:
    """A face box in pixels of the frame it was found in: [x0, x1) x [y0, y1)."""

    x0: float
    y0: float
    x1: float
    y1: float
    confidence: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0


class FaceDetector(Protocol):
    def detect(self, frame_rgb: Frame) -> list[Detection]:
        """Faces in an RGB uint8 frame of shape (H, W, 3)."""
        ...

    def close(self) -> None: ...


class MediaPipeFaceDetector:
    """`FaceDetector` on MediaPipe's face detection solution. Not thread-safe: one per worker."""

    def __init__(self, config: FaceConfig) -> None:
        import mediapipe as mp  # deferred: importing it costs ~1 s and loads TFLite

        self._config = config
        with _native_stderr_silenced():
            self._solution: Any = mp.solutions.face_detection.FaceDetection(
                model_selection=config.model_selection,
                min_detection_confidence=config.min_confidence,
            )
            # The first inference logs TFLite's delegate set-up; get it over with here.
            self._solution.process(np.zeros((64, 64, 3), dtype=np.uint8))
        self._clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8))

    def detect(self, frame_rgb: Frame) -> list[Detection]:
        height, width = frame_rgb.shape[:2]
        scale = min(1.0, self._config.detect_max_side / max(height, width))
        small = frame_rgb
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = np.asarray(cv2.resize(frame_rgb, size, interpolation=cv2.INTER_AREA))
        found = self._run(small, width, height)
        if not found:
            found = self._run(self._equalised(small), width, height)
        return found

    def close(self) -> None:
        self._solution.close()

    def _equalised(self, frame_rgb: Frame) -> Frame:
        lab = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2LAB)
        lab[..., 0] = self._clahe.apply(lab[..., 0])
        return np.ascontiguousarray(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB))

    def _run(self, frame_rgb: Frame, width: int, height: int) -> list[Detection]:
        result = self._solution.process(np.ascontiguousarray(frame_rgb))
        detections: list[Detection] = []
        for found in result.detections or []:
            box = found.location_data.relative_bounding_box
            x0 = max(0.0, box.xmin * width)
            y0 = max(0.0, box.ymin * height)
            x1 = min(float(width), (box.xmin + box.width) * width)
            y1 = min(float(height), (box.ymin + box.height) * height)
            if min(x1 - x0, y1 - y0) < self._config.min_face_px:
                continue
            detections.append(Detection(x0, y0, x1, y1, float(found.score[0])))
        return detections


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Silence C++ logging (TFLite, absl) written straight to file descriptor 2."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with Path(os.devnull).open("wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
