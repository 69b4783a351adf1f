from __future__ import annotations

from pathlib import Path

import pytest

from detector.sniff import Sniffed, sniff, sniff_bytes
from tests.support.credentials import plain_image, plain_video


def ftyp(brand: bytes, compatible: bytes = b"isom") -> bytes:
    body = b"ftyp" + brand + b"\x00\x00\x02\x00" + compatible
    return (8 + len(body) - 4).to_bytes(4, "big") + body + bytes(32)


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
        (b"\xff\xd8\xff\xe1\x00\x18Exif\x00\x00", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"GIF87a\x10\x00\x10\x00", "image/gif"),
        (b"GIF89a\x10\x00\x10\x00", "image/gif"),
        (b"II*\x00\x08\x00\x00\x00", "image/tiff"),
        (b"MM\x00*\x00\x00\x00\x08", "image/tiff"),
        (ftyp(b"heic", b"mif1"), "image/heic"),
        (ftyp(b"heix"), "image/heic"),
        (ftyp(b"heim"), "image/heic"),
        (ftyp(b"heis"), "image/heic"),
        (ftyp(b"mif1", b"heic"), "image/heif"),
        (ftyp(b"msf1"), "image/heif"),
        (ftyp(b"avif", b"mif1"), "image/avif"),
        (ftyp(b"avis"), "image/avif"),
    ],
)
def test_still_image_formats_are_images_with_their_mime_type(head: bytes, mime: str) -> None:
    assert sniff_bytes(head) == Sniffed("image", mime)


def test_a_bitmap_is_an_image_credentials_are_not_read_from() -> None:
    assert sniff_bytes(b"BM" + bytes(60)) == Sniffed("image", None)
    assert sniff_bytes(b"BMW, a car\n") == Sniffed("unknown", None)  # too short for a header


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (ftyp(b"isom"), "video/mp4"),
        (ftyp(b"mp42"), "video/mp4"),
        (ftyp(b"M4V "), "video/mp4"),
        (ftyp(b"qt  ", b"qt  "), "video/quicktime"),
        (b"\x00\x00\x01\x00moov" + bytes(32), "video/mp4"),
        (b"\x00\x00\x01\x00mdat" + bytes(32), "video/mp4"),
        (b"\x00\x00\x00\x08free" + bytes(32), "video/mp4"),
        (b"\x00\x00\x00\x08wide" + bytes(32), "video/mp4"),
        (b"RIFF\x00\x10\x00\x00AVI LIST", "video/avi"),
    ],
)
def test_video_containers_are_videos(head: bytes, mime: str) -> None:
    assert sniff_bytes(head) == Sniffed("video", mime)


@pytest.mark.parametrize(
    ("head", "sniffed"),
    [
        (b"RIFF\x00\x10\x00\x00WAVEfmt ", Sniffed("unknown", "audio/wav")),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00", Sniffed("unknown", "audio/mpeg")),
        (b"fLaC\x00\x00\x00\x22", Sniffed("unknown", "audio/flac")),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01", Sniffed("unknown", None)),  # Matroska, WebM
        (b"%PDF-1.7\n", Sniffed("unknown", None)),
        (b"", Sniffed("unknown", None)),
        (b"\xff\xd8", Sniffed("unknown", None)),  # not even a whole JPEG marker
    ],
)
def test_anything_else_is_unknown(head: bytes, sniffed: Sniffed) -> None:
    assert sniff_bytes(head) == sniffed


def test_files_are_sniffed_by_their_bytes_not_their_names(tmp_path: Path) -> None:
    jpeg = plain_image(tmp_path / "face.jpg")
    video = plain_video(tmp_path / "face.mp4", frames=3)

    assert sniff(jpeg.rename(tmp_path / "face-really-a-jpeg.mp4")) == Sniffed("image", "image/jpeg")
    assert sniff(video.rename(tmp_path / "clip.png")) == Sniffed("video", "video/mp4")
    assert sniff(plain_image(tmp_path / "face.webp")) == Sniffed("image", "image/webp")


def test_only_the_head_of_a_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "long.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(1 << 20))

    assert sniff(path) == Sniffed("image", "image/png")
    assert sniff_bytes(b"\x00" * 64 + b"\xff\xd8\xff") == Sniffed("unknown", None)
