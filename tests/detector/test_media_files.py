"""One list of suffixes: every command that walks a folder picks the same files."""

from __future__ import annotations

from pathlib import Path

from consumer.cli.service import media_paths
from consumer.demo import sample_videos
from detector.media_files import VIDEO_SUFFIXES, image_files, media_files, video_files
from detector.training.data import labelled_videos


def test_scan_evaluate_and_demo_pick_the_same_videos_from_one_folder(tmp_path: Path) -> None:
    names = ["a.mp4", "b.MOV", "c.3gp", "d.ts", "e.mpeg", "notes.txt", "still.jpg", "clip.y4m"]
    for name in names:
        (tmp_path / "real" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "real" / name).write_bytes(b"x")
    (tmp_path / "real" / "folder.mp4").mkdir()  # a directory is never a video

    videos = [path.name for path in video_files(tmp_path)]
    assert videos == ["a.mp4", "b.MOV", "c.3gp", "d.ts", "e.mpeg"]
    # `scan DIR` screens still images too
    assert [p.name for p in media_paths([tmp_path])] == sorted([*videos, "still.jpg"])
    assert [p.name for p in media_files(tmp_path)] == sorted([*videos, "still.jpg"])
    assert [p.name for p, _ in labelled_videos(tmp_path)] == videos  # `model evaluate DIR`
    assert [p.name for p in sample_videos(tmp_path, limit=10)] == videos  # `demo --videos DIR`
    assert [p.name for p in image_files(tmp_path)] == ["still.jpg"]
    assert {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"} <= VIDEO_SUFFIXES
