"""Training clips from still faces: a real clip and a self-blended pseudo-fake per still.

Labelled deepfake video is scarce; real face stills are not. Each still is
animated into a 20-frame clip with a smooth random motion, and a self-blended
copy of it (`selfblend`) is animated with the same motion and compression, so
the pair differs only in the blending traces. Both then go through the same
detection, tracking and cropping as `scan`, and into the clip cache (`data`).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path

import cv2
import numpy as np

from detector.architecture import CLIP_LENGTH
from detector.arrays import Clips, Frame
from detector.clips import cut_clip, square_crops
from detector.config import DetectorConfig
from detector.faces import FaceDetector
from detector.media_files import image_files
from detector.tracking import link_window
from detector.training.data import (
    FAKE,
    REAL,
    CacheManifest,
    ClipCache,
    LabelledClip,
    check_reusable,
    files_sha256,
)
from detector.training.selfblend import (
    RECIPE,
    FaceMeshLandmarker,
    animate,
    pad_face,
    random_motion,
    self_blend_frames,
)


class StillClipMaker:
    """A real and a self-blended 20-frame clip from one still face, via the scoring pipeline."""

    def __init__(self, faces: FaceDetector, config: DetectorConfig, input_size: int) -> None:
        self._faces = faces
        self._config = config
        self._input_size = input_size
        self._landmarker = FaceMeshLandmarker()

    def pair(
        self, image: Frame, rng: np.random.Generator, clip_length: int = CLIP_LENGTH
    ) -> tuple[Clips, Clips] | None:
        """(real clip, pseudo-fake clip) sharing motion and compression; None if no face."""
        padded = pad_face(image)
        landmarks = self._landmarker.landmarks(padded)
        if landmarks is None:
            return None
        fakes, _ = self_blend_frames(padded, landmarks, clip_length, rng)
        motion = random_motion(clip_length, (padded.shape[1], padded.shape[0]), rng)
        real_clip = self._clip(animate([padded] * clip_length, motion))
        fake_clip = self._clip(animate(fakes, motion))
        if real_clip is None or fake_clip is None:
            return None
        return real_clip, fake_clip

    def close(self) -> None:
        self._landmarker.close()

    def _clip(self, frames: list[Frame]) -> Clips | None:
        tracks = link_window([self._faces.detect(frame) for frame in frames], self._config.faces)
        if not tracks:
            return None
        largest = max(tracks, key=lambda t: float(np.prod(t.mean_box()[2:] - t.mean_box()[:2])))
        crops = square_crops(largest.boxes, self._config.faces.crop_scale)
        return cut_clip(frames, crops, self._input_size)


class Skipped(Enum):
    """Why a still gave no pair."""

    NO_FACE = "no_face"
    UNREADABLE = "unreadable"


_StillPair = tuple[str, tuple[Clips, Clips] | Skipped]
_pair_maker: tuple[StillClipMaker, FaceDetector] | None = None  # one per caching process


def _start_pair_maker(
    new_faces: Callable[[], FaceDetector], config: DetectorConfig, input_size: int
) -> None:
    global _pair_maker
    faces = new_faces()
    _pair_maker = (StillClipMaker(faces, config, input_size), faces)


def _stop_pair_maker() -> None:
    global _pair_maker
    if _pair_maker is not None:
        maker, faces = _pair_maker
        maker.close()
        faces.close()
        _pair_maker = None


def read_rgb(path: Path) -> Frame | None:
    """The image at `path` as RGB uint8; None when it does not decode (corrupt, not an image)."""
    image = cv2.imread(str(path))
    if image is None or image.ndim != 3:
        return None
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def _make_pair(job: tuple[int, Path, int]) -> _StillPair:
    number, path, seed = job
    assert _pair_maker is not None, "_start_pair_maker runs first in every caching process"
    image = read_rgb(path)
    if image is None:
        return path.name, Skipped.UNREADABLE
    rng = np.random.default_rng([seed, number])
    made = _pair_maker[0].pair(image, rng)
    return path.name, Skipped.NO_FACE if made is None else made


def build_still_cache(
    images: list[Path],
    cache_dir: Path,
    *,
    new_faces: Callable[[], FaceDetector],
    config: DetectorConfig,
    input_size: int,
    seed: int,
    workers: int = 1,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> CacheManifest:
    """Cache a real and a self-blended clip for each still (reused when the manifest matches).

    Each image is its own group. Making the pairs (face mesh, blending,
    detection on 40 frames) is the slow part of training on a CPU, so
    `workers` processes make them side by side, each with its own detector
    from `new_faces` (which must pickle). Each still's randomness depends only
    on `seed` and its position, and pairs are written in image order, so the
    cache is the same for any number of workers. A still without a face, or
    one that does not decode, is skipped and counted. Returns the manifest.
    """
    wanted = CacheManifest(kind="self-blend", recipe=RECIPE, images=len(images),
                           data_sha256=files_sha256(images), seed=seed,
                           input_size=input_size)  # fmt: skip
    existing = check_reusable(cache_dir, wanted)
    if existing is not None:
        return existing
    cache = ClipCache(cache_dir)
    jobs = [(number, path, seed) for number, path in enumerate(images)]
    maker_args = (new_faces, config, input_size)
    skipped = dict.fromkeys(Skipped, 0)
    pairs = 0
    try:
        if workers <= 1:
            _start_pair_maker(*maker_args)
            made_pairs: Iterable[_StillPair] = map(_make_pair, jobs)
            pool = None
        else:
            # spawn, not fork: MediaPipe's graph threads do not survive a fork.
            context = multiprocessing.get_context("spawn")
            pool = context.Pool(workers, initializer=_start_pair_maker, initargs=maker_args)
            made_pairs = pool.imap(_make_pair, jobs, chunksize=4)
        for number, (name, made) in enumerate(made_pairs):
            if isinstance(made, Skipped):
                skipped[made] += 1
            else:
                cache.add(LabelledClip(made[0], REAL, name))
                cache.add(LabelledClip(made[1], FAKE, name))
                pairs += 1
            progress(number + 1, len(images))
    finally:
        if workers <= 1:
            _stop_pair_maker()
        elif pool is not None:
            pool.terminate()
            pool.join()
        cache.flush()
    manifest = wanted.model_copy(
        update={
            "pairs": pairs,
            "clips": 2 * pairs,
            "skipped_no_face": skipped[Skipped.NO_FACE],
            "skipped_unreadable": skipped[Skipped.UNREADABLE],
        }
    )
    cache.write_manifest(manifest)
    return manifest


def select_images(root: Path, limit: int | None, seed: int) -> list[Path]:
    """All stills under `root`, or a seeded random `limit` of them (in name order)."""
    images = image_files(root)
    if limit is not None and limit < len(images):
        chosen = np.random.default_rng(seed).choice(len(images), size=limit, replace=False)
        images = [images[i] for i in sorted(chosen)]
    return images
