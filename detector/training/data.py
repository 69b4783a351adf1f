"""Training clips, extracted once with the very face pipeline that scoring uses.

Training and serving must preprocess identically, so training clips come out
of the same detector, tracker and cropper as in `extraction`: from labelled
videos (`real/` + `fake/`, or FaceForensics++'s `original_sequences/` +
`manipulated_sequences/`) through `extract_face_clips`, and from real still
faces through `stills` (a real and a self-blended 20-frame clip per still).

Clips are cached on disk as shards of uint8 arrays (N, T, S, S, 3) plus a JSON
sidecar with labels and groups, and a `manifest.json` (`CacheManifest`) that
says what the cache was made from, so a cache made from other data or by
another recipe is refused rather than silently reused. A group is the source
a clip came from (a video, or a still image): train/validation splits are made
by group, never by frame or clip, so near-identical clips never straddle the
split.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from detector.architecture import CLIP_LENGTH
from detector.arrays import Clips
from detector.artifact import sha256_file
from detector.config import DetectorConfig
from detector.extraction import extract_face_clips
from detector.faces import FaceDetector
from detector.media_files import VIDEO_SUFFIXES
from detector.probe import Unreadable

REAL, FAKE = 0, 1
SHARD_SIZE = 256
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class LabelledClip:
    pixels: Clips  # (T, S, S, 3)
    label: int  # 0 real, 1 fake
    group: str  # the source video or image: the unit of the train/validation split


class CacheManifest(BaseModel):
    """`manifest.json` of a clip cache: what it was made from, and what came out.

    The identity fields (`kind`, `data_sha256`, `input_size`, `recipe`, `seed`,
    `images`) decide whether an existing cache may be reused; the counts
    report what the caching found.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["videos", "self-blend"]
    data_sha256: str = Field(min_length=1)
    input_size: int | None = None
    recipe: str | None = None  # self-blend: the blending recipe (`selfblend.RECIPE`)
    seed: int | None = None  # self-blend: the randomness of the blends
    images: int | None = Field(default=None, ge=0)  # self-blend: stills offered
    pairs: int | None = Field(default=None, ge=0)  # self-blend: real + fake pairs cached
    skipped_no_face: int | None = Field(default=None, ge=0)
    skipped_unreadable: int = Field(default=0, ge=0)  # images or videos that did not decode
    videos: int | None = Field(default=None, ge=0)  # videos: labelled videos offered
    clips: int | None = Field(default=None, ge=0)

    def identity(self) -> dict[str, object]:
        return self.model_dump(include={"kind", "data_sha256", "input_size", "recipe", "seed",
                                        "images"})  # fmt: skip

    @classmethod
    def read(cls, directory: Path) -> CacheManifest | None:
        """The manifest of the cache in `directory`; None when there is none."""
        path = directory / MANIFEST_FILE
        return cls.model_validate_json(path.read_text()) if path.is_file() else None


def is_clip_cache(directory: Path) -> bool:
    return (directory / MANIFEST_FILE).is_file()


def check_reusable(directory: Path, wanted: CacheManifest) -> CacheManifest | None:
    """The existing manifest when `directory` holds a cache of the same source, else None.

    Raises ValueError when it holds a cache of something else (other data, size or recipe).
    """
    existing = CacheManifest.read(directory)
    if existing is None:
        return None
    if existing.identity() != wanted.identity():
        raise ValueError(f"{directory} holds a different cache; choose another --cache")
    return existing


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


@dataclass
class ExtractionCounts:
    """What `video_clips` found: videos read, and those it could not read (by path)."""

    videos: int = 0
    clips: int = 0
    unreadable: list[str] = field(default_factory=list)


def video_clips(
    videos: Iterable[tuple[Path, int]],
    root: Path,
    *,
    faces: FaceDetector,
    config: DetectorConfig,
    input_size: int,
    clip_length: int = CLIP_LENGTH,
    counts: ExtractionCounts | None = None,
) -> Iterator[LabelledClip]:
    """Every face clip of every labelled video, as `scan` would cut them.

    A video that cannot be read is skipped and, when `counts` is given,
    recorded there, so the caller can say how many were left out.
    """
    for path, label in videos:
        group = str(path.relative_to(root))
        if counts is not None:
            counts.videos += 1
        try:
            extraction = extract_face_clips(
                path, clip_length=clip_length, input_size=input_size, config=config, faces=faces
            )
        except Unreadable:
            if counts is not None:
                counts.unreadable.append(group)
            continue
        for clip in extraction.clips:
            if counts is not None:
                counts.clips += 1
            yield LabelledClip(clip.pixels, label, group)


def build_video_cache(
    videos: list[tuple[Path, int]],
    root: Path,
    cache_dir: Path,
    *,
    faces: FaceDetector,
    config: DetectorConfig,
    input_size: int,
) -> CacheManifest:
    """Cache every face clip of the labelled `videos` (reused when the manifest matches)."""
    wanted = CacheManifest(kind="videos", data_sha256=files_sha256(p for p, _ in videos),
                           input_size=input_size, videos=len(videos))  # fmt: skip
    existing = check_reusable(cache_dir, wanted)
    if existing is not None:
        return existing
    cache = ClipCache(cache_dir)
    counts = ExtractionCounts()
    for clip in video_clips(videos, root, faces=faces, config=config, input_size=input_size,
                            counts=counts):  # fmt: skip
        cache.add(clip)
    cache.flush()
    manifest = wanted.model_copy(
        update={"clips": counts.clips, "skipped_unreadable": len(counts.unreadable)}
    )
    cache.write_manifest(manifest)
    return manifest


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

    def write_manifest(self, manifest: CacheManifest) -> None:
        """Written last: a cache without a manifest is unfinished and is never reused."""
        (self.directory / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))


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
        digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()
