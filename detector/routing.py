"""An upload's bytes decide how it is screened: as a still image or as a video.

The kind is sniffed from the content (`detector.sniff`), never taken from the
uploader's `content_type` or file name. `Extractor` is the port the pipeline
screens through; `InProcessExtractor` runs extraction on the calling thread
(`scan`), `detector.isolation.IsolatedExtractor` in worker processes (the
service).

Both let a caller keep more videos in flight than it decodes at once: a video
past extraction waits for its scores while the next one is decoded, so the
model's time overlaps decoding instead of stalling it, and memory stays
bounded by the decodes, not by the videos waiting.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from detector.config import DetectorConfig
from detector.extraction import Extraction, extract_face_clips, hash_whole_video
from detector.faces import FaceDetector, MediaPipeFaceDetector
from detector.hashing import VideoHashes
from detector.image import extract_image_clips, hash_image
from detector.memory import release_freed_memory
from detector.sniff import sniff


def videos_in_flight(decoders: int) -> int:
    """Videos a caller keeps in flight for `decoders` extractions at once: each decoder
    has a video waiting for its scores while it decodes the next (bench/README.md)."""
    return 2 * decoders


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
    """Extraction on the calling thread (for `scan`), at most `workers` at once (None: no
    limit); each extraction borrows one of the MediaPipe detectors, which are not
    thread-safe, made as needed and kept until `close`."""

    def __init__(
        self,
        config: DetectorConfig,
        face_detector: Callable[[], FaceDetector] | None = None,
        *,
        workers: int | None = None,
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError("workers is at least 1")
        self.config = config
        self._new_face_detector = face_detector or (lambda: MediaPipeFaceDetector(config.faces))
        self._slots = threading.BoundedSemaphore(workers) if workers else None
        self._idle: list[FaceDetector] = []
        self._created: list[FaceDetector] = []
        self._lock = threading.Lock()

    def extract(self, path: Path, *, clip_length: int, input_size: int) -> Extraction:
        with self._face_detector() as faces:
            return extract_clips(
                path,
                clip_length=clip_length,
                input_size=input_size,
                config=self.config,
                faces=faces,
            )

    def hash_whole(self, path: Path, *, clip_length: int) -> VideoHashes:
        with self._face_detector() as faces:
            return hash_media(path, clip_length=clip_length, config=self.config, faces=faces)

    def close(self) -> None:
        with self._lock:
            for detector in self._created:
                detector.close()
            self._created.clear()
            self._idle.clear()

    @contextlib.contextmanager
    def _face_detector(self) -> Iterator[FaceDetector]:
        """A detector for one video's extraction, within the `workers` limit; the memory the
        video's frames freed is given back when it is returned."""
        with self._slots or contextlib.nullcontext():
            with self._lock:
                detector = self._idle.pop() if self._idle else None
            if detector is None:
                detector = self._new_face_detector()
                with self._lock:
                    self._created.append(detector)
            try:
                yield detector
            finally:
                with self._lock:
                    self._idle.append(detector)
                release_freed_memory()
