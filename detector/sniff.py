"""What kind of media a file holds, from its leading bytes alone.

The upload's `content_type` and file name are the uploader's word; the bytes
are not. Whether an upload is screened as a still image or as a video, and
which format the content-credentials reader is told, are decided here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

_HEAD_BYTES = 64

# ISO BMFF brands of still-image files (HEIF, HEIC, AVIF); other brands are video.
_IMAGE_BRANDS = {
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"heim": "image/heic",
    b"heis": "image/heic",
    b"mif1": "image/heif",
    b"msf1": "image/heif",
    b"avif": "image/avif",
    b"avis": "image/avif",
}


@dataclass(frozen=True)
class Sniffed:
    kind: Literal["image", "video", "unknown"]
    mime: str | None  # None: a format content credentials are not read from


def sniff(path: Path) -> Sniffed:
    with path.open("rb") as file:
        return sniff_bytes(file.read(_HEAD_BYTES))


def sniff_bytes(head: bytes) -> Sniffed:
    """Classify by magic numbers; anything unrecognised is left to the video probe."""
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("image", "image/jpeg")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image", "image/png")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed("image", "image/webp")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed("image", "image/gif")
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return Sniffed("image", "image/tiff")
    if head[:2] == b"BM" and len(head) >= 26:
        return Sniffed("image", None)
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _IMAGE_BRANDS:
            return Sniffed("image", _IMAGE_BRANDS[brand])
        return Sniffed("video", "video/quicktime" if brand == b"qt  " else "video/mp4")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Sniffed("video", "video/avi")
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return Sniffed("unknown", "audio/wav")
    if head[:3] == b"ID3" or head[:4] == b"fLaC":
        return Sniffed("unknown", "audio/mpeg" if head[:3] == b"ID3" else "audio/flac")
    # ISO BMFF files that start with another box (moov, mdat, free, wide) are video
    if head[4:8] in (b"moov", b"mdat", b"free", b"wide"):
        return Sniffed("video", "video/mp4")
    return Sniffed("unknown", None)
