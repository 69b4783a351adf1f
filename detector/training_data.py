"""Training clips, extracted once with the very face pipeline that scoring uses.

Training and serving must preprocess identically, so training clips come out
of the same detector, tracker and cropper as in `extraction`: from labelled
videos (`real/` + `fake/`, or FaceForensics++'s `original_sequences/` +
`manipulated_sequences/`) through `extract_face_clips`, and from real still
faces through `selfblend` (a real and a pseudo-fake 20-frame clip per still)
and then the same detection, tracking and cropping.

Clips are cached on disk as shards of uint8 arrays (N, T, S, S, 3) plus a JSON
sidecar with labels and groups. A group is the source a clip came from (a
video, or a still image): train/validation splits are made by group, never by
frame or clip, so near-identical clips never straddle the split.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from detector.arrays import Clips, Frame
from detector.clips import cut_clip, square_crops
from detector.config import DetectorConfig
from detector.extraction import extract_face_clips
from detector.faces import FaceDetector
from detector.probe import Unreadable
from detector.selfblend import (
    RECIPE,
    FaceMeshLandmarker,
    animate,
    pad_face,
    random_motion,
    self_blend_frames,
)
from detector.tracking import link_window

REAL, FAKE = 0, 1
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SHARD_SIZE = 256


@dataclass(frozen=True)
class LabelledClip:
    pixels: Clips  # (T, S, S, 3)
    label: int  # 0 real, 1 fake
    group: str  # the source video or image: the unit of the train/validation split


def labelled_videos(root: Path) -> list[tuple[Path, int]]:
    """(video, label) pairs under `root`, in either supported layout."""
    layouts = [("real", REAL), ("fake", FAKE), ("original_sequences", REAL),
               ("manipulated_sequences", FAKE)]  # fmt: skip
    found = []
    for folder, label in layouts:
        base = root / folder
        if base.is_dir():
            found += [
                (path, label)
                for path in sorted(base.rglob("*"))
                if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES
            ]
    return found


def still_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def video_clips(
    videos: Iterable[tuple[Path, int]],
    root: Path,
    *,
    faces: FaceDetector,
    config: DetectorConfig,
    input_size: int,
    clip_length: int = 20,
) -> Iterator[LabelledClip]:
    """Every face clip of every labelled video, as `scan` would cut them."""
    for path, label in videos:
        try:
            extraction = extract_face_clips(
                path, clip_length=clip_length, input_size=input_size, config=config, faces=faces
            )
        except Unreadable:
            continue
        group = str(path.relative_to(root))
        for clip in extraction.clips:
            yield LabelledClip(clip.pixels, label, group)


class StillClipMaker:
    """A real and a self-blended 20-frame clip from one still face, via the scoring pipeline."""

    def __init__(self, faces: FaceDetector, config: DetectorConfig, input_size: int) -> None:
        self._faces = faces
        self._config = config
        self._input_size = input_size
        self._landmarker = FaceMeshLandmarker()

    def pair(
        self, image: Frame, rng: np.random.Generator, clip_length: int = 20
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


class ClipCache:
    """Shards of clips on disk: `shard-NNNNN.npy` (uint8) + `shard-NNNNN.json` (labels, groups)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._pending: list[LabelledClip] = []
        self._next = len(list(directory.glob("shard-*.npy")))

    def add(self, clip: LabelledClip) -> None:
        self._pending.append(clip)
        if len(self._pending) >= SHARD_SIZE:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        name = f"shard-{self._next:05d}"
        np.save(self.directory / f"{name}.npy", np.stack([c.pixels for c in self._pending]))
        meta = {"labels": [c.label for c in self._pending],
                "groups": [c.group for c in self._pending]}  # fmt: skip
        (self.directory / f"{name}.json").write_text(json.dumps(meta))
        self._pending.clear()
        self._next += 1

    def write_manifest(self, manifest: dict[str, object]) -> None:
        (self.directory / "manifest.json").write_text(json.dumps(manifest, indent=2))


@dataclass
class ClipIndex:
    """All cached clips, memory-mapped: `pixels(i)`, `labels`, `groups`."""

    shards: list[Clips]
    locations: list[tuple[int, int]]  # clip i → (shard, row)
    labels: NDArray[np.int64]
    groups: list[str]

    @classmethod
    def open(cls, directory: Path) -> ClipIndex:
        shards, locations, labels, groups = [], [], [], []
        for number, path in enumerate(sorted(directory.glob("shard-*.npy"))):
            shards.append(np.load(path, mmap_mode="r"))
            meta = json.loads(path.with_suffix(".json").read_text())
            for row, (label, group) in enumerate(zip(meta["labels"], meta["groups"], strict=True)):
                locations.append((number, row))
                labels.append(label)
                groups.append(group)
        if not locations:
            raise ValueError(f"no cached clips in {directory}")
        return cls(shards, locations, np.array(labels, dtype=np.int64), groups)

    def __len__(self) -> int:
        return len(self.locations)

    def pixels(self, index: int) -> Clips:
        shard, row = self.locations[index]
        return np.asarray(self.shards[shard][row])


def split_by_group(
    groups: list[str], validation_share: float, seed: int
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Indices of training and validation clips; a group lands wholly on one side."""

    def in_validation(group: str) -> bool:
        bucket = zlib.crc32(f"{seed}:{group}".encode()) % 10_000
        return bucket < validation_share * 10_000

    mask = np.array([in_validation(group) for group in groups], dtype=bool)
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def files_sha256(paths: Iterable[Path]) -> str:
    """One digest over the files' names and contents (the training data's identity)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


_StillPair = tuple[str, tuple[Clips, Clips] | None]
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


def _make_pair(job: tuple[int, Path, int]) -> _StillPair:
    number, path, seed = job
    assert _pair_maker is not None, "_start_pair_maker runs first in every caching process"
    rng = np.random.default_rng([seed, number])
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return path.name, _pair_maker[0].pair(np.asarray(image, dtype=np.uint8), rng)


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
) -> dict[str, object]:
    """Cache a real and a self-blended clip for each still (reused when the manifest matches).

    Each image is its own group. Making the pairs (face mesh, blending,
    detection on 40 frames) is the slow part of training on a CPU, so
    `workers` processes make them side by side, each with its own detector
    from `new_faces` (which must pickle). Each still's randomness depends only
    on `seed` and its position, and pairs are written in image order, so the
    cache is the same for any number of workers. Returns the cache's manifest.
    """
    manifest: dict[str, object] = {
        "kind": "self-blend",
        "recipe": RECIPE,
        "images": len(images),
        "data_sha256": files_sha256(images),
        "seed": seed,
        "input_size": input_size,
    }
    manifest_path = cache_dir / "manifest.json"
    if manifest_path.exists():
        existing = json.loads(manifest_path.read_text())
        if all(existing.get(key) == value for key, value in manifest.items()):
            return dict(existing)
        raise ValueError(f"{cache_dir} holds a different cache; choose another --cache")
    cache = ClipCache(cache_dir)
    jobs = [(number, path, seed) for number, path in enumerate(images)]
    maker_args = (new_faces, config, input_size)
    pairs = skipped = 0
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
            if made is None:
                skipped += 1
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
    manifest |= {"pairs": pairs, "skipped_no_face": skipped}
    cache.write_manifest(manifest)
    return manifest


def select_images(root: Path, limit: int | None, seed: int) -> list[Path]:
    """All stills under `root`, or a seeded random `limit` of them (in name order)."""
    images = still_images(root)
    if limit is not None and limit < len(images):
        chosen = np.random.default_rng(seed).choice(len(images), size=limit, replace=False)
        images = [images[i] for i in sorted(chosen)]
    return images
