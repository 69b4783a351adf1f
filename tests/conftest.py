"""Fixtures shared by the whole suite: synthetic videos, a reference model, quiet logs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
# Derived model forms the tests make (detector.derived, under $XDG_CACHE_HOME) go to a
# scratch cache of this session, never the user's: every session makes them afresh.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="deepscreen-tests-cache-")

from tests.support import videos

# Modules holding a test with one of these marks take minutes; they run first.
LONG_MARKS = ("slow", "faults")

REPO = Path(__file__).resolve().parents[1]
SHARED_CLIPS = REPO.parent / "shared" / "data" / "clips"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with long tests first, each module's tests kept together and in order.

    The suite runs on two xdist workers, a module to a worker at a time, handed out in
    collection order (pyproject.toml's `addopts`): a module of minutes handed out last
    would end the run on one worker while the other waits.
    """
    long_modules = {
        item.path for item in items if any(item.get_closest_marker(m) for m in LONG_MARKS)
    }
    items.sort(key=lambda item: item.path not in long_modules)


class SyntheticVideos:
    """The suite's synthetic videos, written once per session."""

    def __init__(self, root: Path) -> None:
        self.moving_face = videos.moving_face_video(root / "moving_face.mp4", frames=60)
        self.two_faces = videos.two_faces_video(root / "two_faces.mp4", frames=40)
        self.no_face = videos.no_face_video(root / "no_face.mp4", frames=40)
        self.short = videos.short_video(root / "short.mp4", frames=12)
        self.rotated = videos.rotated_video(root / "rotated.mp4", rotation=90, frames=40)
        self.truncated = videos.truncated_video(root / "truncated.mp4")
        self.zero_bytes = videos.zero_byte_file(root / "zero.mp4")
        self.not_a_video = videos.not_a_video(root / "notes.mp4")
        self.huge_resolution = videos.huge_resolution_video(root / "huge.y4m")
        self.audio_only = videos.audio_only_video(root / "audio_only.mp4")


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticVideos:
    return SyntheticVideos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="session")
def reference_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained ResNeXt50+LSTM artifact at 112 px (seeded, so scores are reproducible)."""
    from detector.training.export import init_reference

    path = tmp_path_factory.mktemp("models") / "reference-112.pt"
    init_reference(path, input_size=112, seed=7)
    return path
