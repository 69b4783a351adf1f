"""The self-blended clip cache: stills in, real and pseudo-fake clips out, any workers alike."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector.config import DetectorConfig
from detector.faces import FaceDetector, MediaPipeFaceDetector
from detector.training.data import FAKE, REAL, CacheManifest, ClipIndex
from detector.training.selfblend import RECIPE
from detector.training.stills import build_still_cache
from tests.support.videos import astronaut_face


@pytest.fixture(scope="module")
def stills(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three UTKFace-like stills (200 px, tight around the face) and one with no face."""
    folder = tmp_path_factory.mktemp("stills")
    face = cv2.cvtColor(cv2.resize(astronaut_face(), (200, 200)), cv2.COLOR_RGB2BGR)
    paths = []
    for number, image in enumerate([face, cv2.flip(face, 1), face[:, ::-1, ::-1]]):
        paths.append(folder / f"{number}_face.jpg")
        cv2.imwrite(str(paths[-1]), np.ascontiguousarray(image))
    paths.append(folder / "3_blank.jpg")
    cv2.imwrite(str(paths[-1]), np.full((200, 200, 3), 128, np.uint8))
    return paths


def cache_with(
    workers: int, stills: list[Path], directory: Path, new_faces: object = None
) -> CacheManifest:
    config = DetectorConfig()
    return build_still_cache(
        stills, directory,
        new_faces=new_faces or functools.partial(MediaPipeFaceDetector, config.faces),
        config=config, input_size=112, seed=5, workers=workers,
    )  # fmt: skip


def no_detector() -> FaceDetector:
    raise AssertionError("a reused cache must not detect a single face again")


def test_each_still_gives_a_real_and_a_pseudo_fake_clip_grouped_by_image(
    stills: list[Path], tmp_path: Path
) -> None:
    manifest = cache_with(1, stills, tmp_path / "cache")
    assert manifest.pairs == 3 and manifest.skipped_no_face == 1 and manifest.clips == 6
    index = ClipIndex.open(tmp_path / "cache")
    assert len(index) == 6
    assert index.labels.tolist() == [REAL, FAKE] * 3
    assert index.groups == ["0_face.jpg"] * 2 + ["1_face.jpg"] * 2 + ["2_face.jpg"] * 2
    assert index.pixels(0).shape == (20, 112, 112, 3)
    on_disk = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert on_disk["images"] == 4 and on_disk["seed"] == 5


def test_parallel_workers_write_the_same_cache_as_one_process(
    stills: list[Path], tmp_path: Path
) -> None:
    one = cache_with(1, stills, tmp_path / "one")
    two = cache_with(2, stills, tmp_path / "two")
    assert one == two
    serial, parallel = ClipIndex.open(tmp_path / "one"), ClipIndex.open(tmp_path / "two")
    assert serial.groups == parallel.groups
    assert np.array_equal(serial.labels, parallel.labels)
    for row in range(len(serial)):
        assert np.array_equal(serial.pixels(row), parallel.pixels(row))


def test_an_existing_cache_is_reused_only_when_it_matches(
    stills: list[Path], tmp_path: Path
) -> None:
    first = cache_with(1, stills, tmp_path / "cache")
    shards = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "cache").iterdir()}
    again = cache_with(1, stills, tmp_path / "cache", new_faces=no_detector)
    assert again == first
    after = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "cache").iterdir()}
    assert after == shards  # no shard written, none rewritten
    assert len(ClipIndex.open(tmp_path / "cache")) == 6
    with pytest.raises(ValueError, match="different cache"):
        cache_with(1, stills[:2], tmp_path / "cache")


def test_a_cache_made_by_another_recipe_is_not_reused(stills: list[Path], tmp_path: Path) -> None:
    """Clips made the old way (say, JPEG instead of H.264) must not train a new model."""
    first = cache_with(1, stills, tmp_path / "cache")
    assert first.recipe == RECIPE
    manifest = tmp_path / "cache" / "manifest.json"
    manifest.write_text(first.model_copy(update={"recipe": "sbi/jpeg"}).model_dump_json())
    with pytest.raises(ValueError, match="different cache"):
        cache_with(1, stills, tmp_path / "cache")


def test_an_image_that_does_not_decode_is_skipped_and_counted(
    stills: list[Path], tmp_path: Path
) -> None:
    """One corrupt file among thousands of stills must not abort the whole cache."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    manifest = cache_with(1, [broken, *stills], tmp_path / "cache")
    assert manifest.skipped_unreadable == 1
    assert manifest.pairs == 3 and manifest.skipped_no_face == 1
    assert len(ClipIndex.open(tmp_path / "cache")) == 6
