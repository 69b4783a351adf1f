from __future__ import annotations

import struct
import subprocess
import time
from pathlib import Path

import pytest

from detector.config import MediaLimits
from detector.probe import Unreadable, probe, tracks_without_video
from detector.training.compression import ffmpeg_binary
from schemas import Reason
from tests.conftest import SyntheticVideos
from tests.support.videos import audio_only_video


def test_a_video_is_probed_for_size_rate_length_and_rotation(synthetic: SyntheticVideos) -> None:
    info = probe(synthetic.moving_face, MediaLimits())
    assert (info.width, info.height, info.fps, info.frame_count) == (320, 240, 25.0, 60)
    assert info.duration_s == pytest.approx(2.4)
    assert info.rotation == 0


def test_rotation_metadata_is_honoured(synthetic: SyntheticVideos) -> None:
    info = probe(synthetic.rotated, MediaLimits())
    assert info.rotation == 90
    assert (info.width, info.height) == (320, 240)  # displayed, not the stored 240 x 320


@pytest.mark.parametrize(
    ("video", "reason"),
    [
        ("zero_bytes", Reason.EMPTY_FILE),
        ("not_a_video", Reason.NOT_A_VIDEO),
        ("truncated", Reason.CORRUPT_CONTAINER),
        ("huge_resolution", Reason.RESOLUTION_TOO_LARGE),
        ("audio_only", Reason.NO_VIDEO_STREAM),
    ],
)
def test_bad_files_are_refused_with_a_reason(
    synthetic: SyntheticVideos, video: str, reason: Reason
) -> None:
    with pytest.raises(Unreadable) as refused:
        probe(getattr(synthetic, video), MediaLimits())
    assert refused.value.reason is reason


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (MediaLimits(max_bytes=1000), Reason.FILE_TOO_LARGE),
        (MediaLimits(max_pixels=320 * 239), Reason.RESOLUTION_TOO_LARGE),
        (MediaLimits(max_duration_s=2.0), Reason.TOO_LONG),
        (MediaLimits(max_frames=59), Reason.TOO_MANY_FRAMES),
    ],
)
def test_every_limit_is_enforced_before_decoding(
    synthetic: SyntheticVideos, limits: MediaLimits, reason: Reason
) -> None:
    with pytest.raises(Unreadable) as refused:
        probe(synthetic.moving_face, limits)
    assert refused.value.reason is reason


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".m4a", ".mkv", ".webm"])
def test_an_audio_only_file_has_no_video_stream_rather_than_a_corrupt_container(
    tmp_path: Path, suffix: str
) -> None:
    path = audio_only_video(tmp_path / f"tone{suffix}")
    with pytest.raises(Unreadable) as refused:
        probe(path, MediaLimits())
    assert refused.value.reason is Reason.NO_VIDEO_STREAM
    assert "no video track" in refused.value.detail
    assert "audio" in refused.value.detail


def test_an_audio_only_mp4_that_lost_its_moov_is_still_a_corrupt_container(
    tmp_path: Path,
) -> None:
    path = audio_only_video(tmp_path / "tone.mp4")  # moov after mdat: cut off by halving
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(Unreadable) as refused:
        probe(path, MediaLimits())
    assert refused.value.reason is Reason.CORRUPT_CONTAINER


def _box(kind: bytes, *children: bytes) -> bytes:
    payload = b"".join(children)
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _hdlr(handler: bytes) -> bytes:
    return _box(b"hdlr", bytes(8) + handler + bytes(12) + b"\0")


_FTYP = _box(b"ftyp", b"isom\0\0\2\0isomiso2mp41")


@pytest.mark.parametrize(
    "blob",
    [
        pytest.param(_FTYP + b"\xde\xad\xbe\xef" * 64, id="ftyp-then-garbage"),
        pytest.param(_FTYP + _box(b"mdat", bytes(64)), id="no-moov"),
        pytest.param(_FTYP + _box(b"moov", _box(b"trak", _box(b"tkhd", bytes(84)))), id="no-hdlr"),
        pytest.param(
            _FTYP + _box(b"moov", _box(b"trak", _box(b"mdia", _hdlr(b"vide")))), id="video-track"
        ),
        pytest.param(
            _FTYP + struct.pack(">I4s", 1 << 20, b"moov") + _box(b"trak"), id="moov-past-the-end"
        ),
        pytest.param(_FTYP + _box(b"free") * 100_000, id="too-many-boxes"),
        pytest.param(b"\x1a\x45\xdf\xa3" + b"\xde\xad\xbe\xef" * 64, id="ebml-then-garbage"),
    ],
)
def test_a_container_header_that_does_not_show_an_audio_only_movie_stays_corrupt(
    tmp_path: Path, blob: bytes
) -> None:
    path = tmp_path / "odd.mp4"
    path.write_bytes(blob)
    started = time.monotonic()
    with pytest.raises(Unreadable) as refused:
        probe(path, MediaLimits())
    assert refused.value.reason is Reason.CORRUPT_CONTAINER
    assert time.monotonic() - started < 2.0  # the header walk is bounded


def test_a_hand_made_mp4_whose_only_track_is_sound_has_no_video_stream(tmp_path: Path) -> None:
    moov = _box(b"moov", _box(b"mvhd", bytes(100)), _box(b"trak", _box(b"mdia", _hdlr(b"soun"))))
    path = tmp_path / "sound.mp4"
    path.write_bytes(_FTYP + _box(b"mdat", bytes(256)) + moov)
    with pytest.raises(Unreadable) as refused:
        probe(path, MediaLimits())
    assert refused.value.reason is Reason.NO_VIDEO_STREAM


def test_the_structure_walk_finds_the_video_track_of_real_videos(
    synthetic: SyntheticVideos, tmp_path: Path
) -> None:
    mkv = tmp_path / "moving_face.mkv"
    subprocess.run(
        [ffmpeg_binary(), "-y", "-loglevel", "error", "-i", str(synthetic.moving_face),
         "-c", "copy", str(mkv)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    for video in (synthetic.moving_face, synthetic.rotated, mkv):
        assert tracks_without_video(video) is None, video.name
