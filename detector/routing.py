"""An upload's bytes decide how it is screened: as a still image or as a video.

The kind is sniffed from the content (`detector.sniff`), never taken from the
uploader's `content_type` or file name. `Extractor` is the port the pipeline
screens through; `InProcessExtractor` runs extraction on the calling thread
(`scan`), `detector.isolation.IsolatedExtractor` in worker processes (the
service).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from detector.config import DetectorConfig
from detector.extraction import Extraction, extract_face_clips, hash_whole_video
from detector.faces import FaceDetector, MediaPipeFaceDetector
from detector.hashing import VideoHashes
from detector.image import extract_image_clips, hash_image
from detector.sniff import sniff


def extract_clips(
    path: Path,
    *,
    clip_length: int,
    input_size: int,
    config: DetectorConfig,
    faces: FaceDetector,
) -> Extraction:
    """Face clips of a still image or a video; `Unreadable` when it is refused."""
    extract = extract_image_clips if sniff(path).kind == "image" else extract_face_clips
    return extract(path, clip_length=clip_length, input_size=input_size, config=config, faces=faces)


def hash_media(
    path: Path, *, clip_length: int, config: DetectorConfig, faces: FaceDetector
) -> VideoHashes:
    """Hashes of a whole video, or of a still, for a bank entry; `Unreadable` when refused."""
    if sniff(path).kind == "image":
        return hash_image(path, config=config, faces=faces)
    return hash_whole_video(path, clip_length=clip_length, config=config, faces=faces)


class Extractor(Protocol):
    """Runs `extract_clips` (and `hash_media`) somewhere: in this process, or an isolated one."""

    def extract(self, path: Path, *, clip_length: int, input_size: int) -> Extraction: ...

    def hash_whole(self, path: Path, *, clip_length: int) -> VideoHashes:
        """`hash_media` of `path`: every frame's hashes, for a bank entry."""
        ...

    def close(self) -> None: ...


class InProcessExtractor:
    """Extraction on the calling thread, one MediaPipe detector per thread (for `scan`)."""

    def __init__(
        self, config: DetectorConfig, face_detector: Callable[[], FaceDetector] | None = None
    ) -> None:
        self.config = config
        self._new_face_detector = face_detector or (lambda: MediaPipeFaceDetector(config.faces))
        self._local = threading.local()
        self._created: list[FaceDetector] = []
        self._lock = threading.Lock()

    def extract(self, path: Path, *, clip_length: int, input_size: int) -> Extraction:
        return extract_clips(
            path,
            clip_length=clip_length,
            input_size=input_size,
            config=self.config,
            faces=self._face_detector(),
        )

    def hash_whole(self, path: Path, *, clip_length: int) -> VideoHashes:
        return hash_media(
            path, clip_length=clip_length, config=self.config, faces=self._face_detector()
        )

    def close(self) -> None:
        with self._lock:
            for detector in self._created:
                detector.close()
            self._created.clear()

    def _face_detector(self) -> FaceDetector:
        detector: FaceDetector | None = getattr(self._local, "faces", None)
        if detector is None:
            detector = self._new_face_detector()
            self._local.faces = detector
            with self._lock:
                self._created.append(detector)
        return detector
