"""Which files on disk are videos or still images: one list for every command.

`scan DIR`, `demo --videos DIR`, `model train`, `model evaluate` and
`model calibrate` all walk folders; they pick the same files from the same
folder because they ask here. The suffix only chooses what to try: the probe
still decides from the bytes whether a file can be screened.
"""

from __future__ import annotations

from pathlib import Path

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".3gp"}
)
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".heic", ".avif"}
)


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES and path.is_file()


def video_files(root: Path) -> list[Path]:
    """The video files under `root` (recursively), sorted by path."""
    return sorted(path for path in root.rglob("*") if is_video_file(path))


def image_files(root: Path) -> list[Path]:
    """The still images under `root` (recursively), sorted by path."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def media_files(root: Path) -> list[Path]:
    """The videos and still images under `root` (recursively), sorted by path."""
    suffixes = VIDEO_SUFFIXES | IMAGE_SUFFIXES
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
