"""Open a video, look at it before decoding it, and refuse what is over the limits.

The probe reads the container's header and its packet index with PyAV (FFmpeg),
the same library and the same open container the window reader decodes from
(`detector.decoding`), so the frame count the windows are planned on is the one
decoding sees. Header facts are checked against the limits first; the packet
index (timestamps and keyframe flags, no decoding) is read only for a video
within them, and stops at the frame limit and the decoding deadline. Anything
the probe cannot vouch for becomes an `Unreadable` with a reason code.

FFmpeg is opened with only the `file` protocol and only the video containers
deepscreen screens, so a playlist or a concat script in an upload cannot make
the decoder read other files or the network.

When FFmpeg refuses a file that starts like an ISO BMFF (MP4, MOV, M4A, 3GP)
or Matroska (MKV, WebM) container, the probe walks the container's structure
itself to tell an audio-only file from a corrupt one: box or element headers
only (ISO BMFF: `moov/trak/mdia/hdlr`, the handler type of each track;
Matroska: `Segment/Tracks/TrackEntry/TrackType`), never sample data, and at
most `_MAX_STRUCTURE_READS` reads of at most 16 bytes each, whatever the
file's size. Only when every box or element on the way to the track list
parses and no track may carry pictures is the file `no_video_stream`;
anything else stays `corrupt_container`.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, NoReturn

import av
import av.container
import av.video.stream
import numpy as np
import numpy.typing as npt

from detector.config import MediaLimits
from schemas.verdict import Reason, VideoProperties

# Leading bytes of containers FFmpeg reads; a file with one of them that still
# fails to open is corrupt rather than "not a video".
_CONTAINER_MAGIC: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"),  # MP4, MOV, 3GP
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"free"),
    (4, b"wide"),
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska, WebM
    (0, b"RIFF"),  # AVI
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),  # MPEG program stream
    (0, b"\x47"),  # MPEG transport stream (sync byte)
    (0, b"YUV4MPEG2"),
    (0, b"OggS"),
)


# The structure walk's bound: reads of box or element headers, 16 bytes at most each.
_MAX_STRUCTURE_READS = 4096
_HEADER_READ = 16

# ISO BMFF top-level box types a file may start with (those `_CONTAINER_MAGIC` knows).
_BMFF_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"wide"})
# Handler types (`hdlr`) of ISO BMFF tracks. Anything that may carry pictures counts as
# video, so that the walk never calls a file with pictures "no video".
_BMFF_VIDEO_HANDLERS = frozenset({b"vide", b"pict", b"auxv"})
_BMFF_HANDLER_KINDS = {
    b"soun": "audio",
    b"sbtl": "subtitles",
    b"subt": "subtitles",
    b"text": "text",
    b"clcp": "captions",
    b"meta": "metadata",
    b"hint": "hint",
    b"tmcd": "timecode",
}

_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_EBML_HEADER = 0x1A45DFA3
_MKV_SEGMENT = 0x18538067
_MKV_TRACKS = 0x1654AE6B
_MKV_TRACK_ENTRY = 0xAE
_MKV_TRACK_TYPE = 0x83
_MKV_CLUSTER = 0x1F43B675
# TrackType values; 1 (video) and 3 (complex: audio and video together) count as video.
_MKV_VIDEO_TYPES = frozenset({1, 3})
_MKV_TRACK_KINDS = {
    2: "audio",
    0x10: "logo",
    0x11: "subtitles",
    0x12: "buttons",
    0x20: "control",
    0x21: "metadata",
}


class Unreadable(Exception):
    """The video cannot or must not be decoded; `reason` is the verdict's reason code."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Probe:
    """Header facts of a video, in displayed orientation (after rotation).

    `frame_count` is the number of frames in the packet index (what decoding
    yields), not the container's declaration.
    """

    width: int
    height: int
    fps: float
    frame_count: int
    rotation: int  # the clockwise turn a player applies to the stored frames
    size_bytes: int

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps

    def properties(self) -> VideoProperties:
        return VideoProperties(
            width=self.width,
            height=self.height,
            fps=round(self.fps, 3),
            frame_count=self.frame_count,
            duration_s=round(self.duration_s, 3),
            rotation=self.rotation,
            size_bytes=self.size_bytes,
        )


@dataclass(frozen=True)
class FrameIndex:
    """Every frame's presentation timestamp in presentation order, and which are keyframes.

    Read from the demuxer's packets (one packet, one frame), without decoding.
    `exact` says every frame has its own timestamp: only then can a decoded frame
    be told apart by its timestamp, and only then is seeking safe.
    """

    pts: npt.NDArray[np.int64]  # (F,) ascending
    keyframe: npt.NDArray[np.bool_]  # (F,) the frame at this position starts a decodable run
    # (F,) the timestamp to seek to for the frame's packet: its decoding timestamp where
    # the container has one (never after its presentation), else its presentation one
    seek_to: npt.NDArray[np.int64]
    time_base: Fraction
    exact: bool

    def __len__(self) -> int:
        return len(self.pts)

    def position_of(self, pts: int | None) -> int | None:
        """The frame position (0-based, presentation order) of `pts`, or None if not indexed."""
        if pts is None or not self.exact:
            return None
        position = int(np.searchsorted(self.pts, pts))
        if position < len(self.pts) and int(self.pts[position]) == pts:
            return position
        return None

    def keyframe_at_or_before(self, position: int) -> int | None:
        """The last keyframe's position at or before `position` (None: none is indexed)."""
        keys = np.flatnonzero(self.keyframe[: position + 1])
        return int(keys[-1]) if len(keys) else None

    def seconds(self, position: int) -> float:
        """Time of the frame at `position` from the first frame, in seconds."""
        if not self.exact:
            return 0.0
        return float((int(self.pts[position]) - int(self.pts[0])) * self.time_base)


# Demuxers FFmpeg may use on an upload: the containers videos are uploaded in. Not
# playlists or scripts (hls, dash, concat), which would open other files or URLs, nor
# text renderers (tty), devices or raw images (those are screened as images).
_VIDEO_FORMATS = (
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,mpegvideo,ogg,"
    "yuv4mpegpipe,asf,m4v,h264,hevc,ivf,nut,mxf,dv,rm,obu"
)
_OPEN_OPTIONS = {"protocol_whitelist": "file", "format_whitelist": _VIDEO_FORMATS}
_INDEX_DEADLINE_EVERY = 512  # packets between deadline checks while indexing


class OpenVideo:
    """An open container, its video stream, its probe and its frame index.

    The window reader (`detector.decoding`) decodes from this same container.
    Close it (or use it as a context manager) when done.
    """

    def __init__(
        self,
        container: av.container.InputContainer,
        stream: av.video.stream.VideoStream,
        probe: Probe,
        index: FrameIndex,
    ) -> None:
        self.container = container
        self.stream = stream
        self.probe = probe
        self.index = index

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> OpenVideo:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def looks_like_container(head: bytes) -> bool:
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _CONTAINER_MAGIC)


def probe(path: Path, limits: MediaLimits) -> Probe:
    """Header facts of `path`, or `Unreadable` when it is empty, over a limit or not a video."""
    with open_video(path, limits) as video:
        return video.probe


def open_video(
    path: Path, limits: MediaLimits, *, threads: int = 1, deadline: float | None = None
) -> OpenVideo:
    """`path` opened for decoding, probed and indexed; `Unreadable` when it must not be decoded.

    `threads` are the decoder's threads (set before the codec opens); `deadline`
    (a `time.monotonic()` value) bounds the indexing of a huge file.
    """
    size = path.stat().st_size
    if size == 0:
        raise Unreadable(Reason.EMPTY_FILE, "the file is empty")
    if size > limits.max_bytes:
        raise Unreadable(Reason.FILE_TOO_LARGE, f"{size} bytes > limit {limits.max_bytes}")
    with path.open("rb") as file:
        head = file.read(16)
    try:
        container = av.open(str(path), options=_OPEN_OPTIONS, metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        _refuse_unopenable(path, head)
    try:
        stream = _video_stream(container, path, head)
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        facts = _header_facts(stream, limits)
        index = _read_index(container, stream, limits, deadline)
        rotation = _rotation(container, stream, index)
    except BaseException:
        container.close()
        raise
    width, height = facts
    if rotation in (90, 270):
        width, height = height, width
    fps = _frame_rate(stream)
    info = Probe(width, height, fps, len(index), rotation, size)
    if info.duration_s > limits.max_duration_s:
        container.close()
        raise Unreadable(
            Reason.TOO_LONG, f"{info.duration_s:.1f} s > limit {limits.max_duration_s:.0f} s"
        )
    return OpenVideo(container, stream, info, index)


def _refuse_unopenable(path: Path, head: bytes) -> NoReturn:
    if looks_like_container(head):
        no_video = tracks_without_video(path)
        if no_video is not None:
            raise Unreadable(Reason.NO_VIDEO_STREAM, no_video)
        raise Unreadable(Reason.CORRUPT_CONTAINER, "a video container that cannot be opened")
    raise Unreadable(Reason.NOT_A_VIDEO, "no video container recognised")


def _video_stream(
    container: av.container.InputContainer, path: Path, head: bytes
) -> av.video.stream.VideoStream:
    """The first video stream, or why there is none.

    MP4/MOV and Matroska files are judged by their own track list (the structure
    walk), so a track FFmpeg cannot name never makes a file "no video"; other
    containers by FFmpeg's streams, when all of them are sound or subtitles.
    """
    if container.streams.video:
        stream = container.streams.video[0]
        if stream.codec_context is None:  # a track that names no codec FFmpeg has
            raise Unreadable(Reason.CORRUPT_CONTAINER, "a video track without a usable codec")
        return stream
    walked = tracks_without_video(path)
    if walked is not None:
        raise Unreadable(Reason.NO_VIDEO_STREAM, walked)
    kinds = [stream.type for stream in container.streams]
    walkable = head[4:8] in _BMFF_FIRST_BOXES or head[:4] == _EBML_MAGIC
    if kinds and not walkable and all(kind in ("audio", "subtitle") for kind in kinds):
        name = container.format.long_name or container.format.name
        counts = {kind: kinds.count(kind) for kind in kinds}
        listed = ", ".join(f"{n} {kind} track{'' if n == 1 else 's'}" for kind, n in counts.items())
        raise Unreadable(
            Reason.NO_VIDEO_STREAM, f"a {name} container with no video track, only {listed}"
        )
    raise Unreadable(Reason.CORRUPT_CONTAINER, "a container without a readable video stream")


def _header_facts(stream: av.video.stream.VideoStream, limits: MediaLimits) -> tuple[int, int]:
    """(stored width, height), after refusing what the header alone shows to be over a limit."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise Unreadable(Reason.NO_VIDEO_STREAM, "the container has no decodable video stream")
    if width * height > limits.max_pixels:
        raise Unreadable(
            Reason.RESOLUTION_TOO_LARGE,
            f"{width}x{height} > limit of {limits.max_pixels} pixels",
        )
    fps = _frame_rate(stream)
    if not math.isfinite(fps) or fps <= 0 or fps > 1000:
        raise Unreadable(Reason.NO_VIDEO_STREAM, f"implausible frame rate {fps}")
    declared = stream.frames
    if declared > limits.max_frames:
        raise Unreadable(Reason.TOO_MANY_FRAMES, f"{declared} frames > limit {limits.max_frames}")
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
        if seconds > limits.max_duration_s:
            raise Unreadable(
                Reason.TOO_LONG, f"{seconds:.1f} s > limit {limits.max_duration_s:.0f} s"
            )
    return width, height


def _frame_rate(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _read_index(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    limits: MediaLimits,
    deadline: float | None,
) -> FrameIndex:
    """Timestamps and keyframe flags of every packet of `stream`, demuxed without decoding.

    A demuxing error ends the index where it happened: decoding would end there too.
    """
    stamps: list[int | None] = []
    decoding: list[int | None] = []
    keys: list[bool] = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                continue  # the end-of-stream marker; frames an edit list drops
            stamps.append(packet.pts)
            decoding.append(packet.dts)
            keys.append(packet.is_keyframe)
            if len(stamps) > limits.max_frames:
                raise Unreadable(
                    Reason.TOO_MANY_FRAMES, f"more than {limits.max_frames} frames (limit)"
                )
            checkpoint = len(stamps) % _INDEX_DEADLINE_EVERY == 0
            if checkpoint and deadline is not None and time.monotonic() > deadline:
                raise Unreadable(
                    Reason.DECODE_TIMEOUT, "reading the packet index took past the time limit"
                )
    except av.FFmpegError:
        pass
    if not stamps:
        raise Unreadable(Reason.NO_VIDEO_STREAM, "the video stream holds no frames")
    time_base = stream.time_base or Fraction(1, 1)
    if any(stamp is None for stamp in stamps):
        # No timestamps to find frames by: frames are counted in decoding order.
        positions = np.arange(len(stamps), dtype=np.int64)
        return FrameIndex(
            positions, np.zeros(len(stamps), dtype=bool), positions, time_base, exact=False
        )
    pts = np.array(stamps, dtype=np.int64)
    seek_to = np.array(
        [p if d is None else min(p, d) for p, d in zip(pts.tolist(), decoding, strict=True)],
        dtype=np.int64,
    )
    order = np.argsort(pts, kind="stable")
    sorted_pts = pts[order]
    exact = bool(np.all(np.diff(sorted_pts) > 0))
    keyframe = np.array(keys, dtype=bool)[order]
    return FrameIndex(sorted_pts, keyframe, seek_to[order], time_base, exact)


def _rotation(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    index: FrameIndex,
) -> int:
    """The clockwise turn for display, from the first decoded frame's display matrix.

    FFmpeg attaches the stream's display matrix to decoded frames; PyAV gives no
    other way to read it. A first frame that does not decode says 0: decoding the
    windows will then say what is wrong.
    """
    try:
        if index.exact:
            container.seek(int(index.seek_to.min()), stream=stream)
        else:
            container.seek(0)
        for frame in container.decode(stream):
            return (-int(frame.rotation)) % 360  # FFmpeg's angle is counter-clockwise
    except av.FFmpegError:
        pass
    return 0


def tracks_without_video(path: Path) -> str | None:
    """Why `path` is a well-formed container without a video track, or None.

    None when it is no ISO BMFF or Matroska container, when its structure does not
    parse, when the bounded walk does not reach the track list, or when a track may
    carry pictures: the caller then keeps calling the file corrupt.
    """
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(8)
        walk = _StructureWalk(file, size)
        try:
            if head[4:8] in _BMFF_FIRST_BOXES:
                container = "an MP4/MOV (ISO BMFF)"
                kinds = _bmff_track_kinds(walk)
            elif head[:4] == _EBML_MAGIC:
                container = "a Matroska/WebM"
                kinds = _matroska_track_kinds(walk)
            else:
                return None
        except _Malformed:
            return None
    if "video" in kinds:
        return None
    if not kinds:
        return f"{container} container with no video track (no tracks at all)"
    counts = {kind: kinds.count(kind) for kind in kinds}
    listed = ", ".join(f"{n} {kind} track{'' if n == 1 else 's'}" for kind, n in counts.items())
    return f"{container} container with no video track, only {listed}"


class _Malformed(Exception):
    """The structure walk met something it cannot vouch for (or ran out of reads)."""


class _StructureWalk:
    """Bounded reads of headers from one open file."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self.size = size
        self._reads = 0

    def read(self, offset: int, length: int) -> bytes:
        """Exactly `length` (<= 16) bytes at `offset`, or `_Malformed`."""
        self._reads += 1
        if self._reads > _MAX_STRUCTURE_READS:
            raise _Malformed("too many boxes or elements to look at")
        if length > _HEADER_READ or offset < 0 or offset + length > self.size:
            raise _Malformed("a read outside the file")
        self._file.seek(offset)
        data = self._file.read(length)
        if len(data) != length:
            raise _Malformed("the file ended early")
        return data


def _bmff_boxes(walk: _StructureWalk, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, end) of each ISO BMFF box in `[start, end)`."""
    position = start
    while position < end:
        if end - position < 8:
            raise _Malformed("a box header cut short")
        size, kind = struct.unpack(">I4s", walk.read(position, 8))
        header = 8
        if size == 1:  # a 64-bit size follows the type
            if end - position < 16:
                raise _Malformed("a box header cut short")
            (size,) = struct.unpack(">Q", walk.read(position + 8, 8))
            header = 16
        elif size == 0:  # the box runs to the end of its parent
            size = end - position
        if size < header or size > end - position:
            raise _Malformed(f"box {kind!r} does not fit where it is")
        yield kind, position + header, position + size
        position += size


def _bmff_track_kinds(walk: _StructureWalk) -> list[str]:
    """What each track of the movie carries (from its `moov/trak/mdia/hdlr`)."""
    for kind, start, end in _bmff_boxes(walk, 0, walk.size):
        if kind == b"moov":
            return [
                _bmff_track_kind(walk, track_start, track_end)
                for child, track_start, track_end in _bmff_boxes(walk, start, end)
                if child == b"trak"
            ]
    raise _Malformed("no movie box")


def _bmff_track_kind(walk: _StructureWalk, start: int, end: int) -> str:
    for kind, media_start, media_end in _bmff_boxes(walk, start, end):
        if kind != b"mdia":
            continue
        for child, handler_start, handler_end in _bmff_boxes(walk, media_start, media_end):
            if child == b"hdlr":
                # version and flags (4), pre_defined (4), then the handler type (4).
                if handler_end - handler_start < 12:
                    raise _Malformed("a handler box cut short")
                handler = walk.read(handler_start + 8, 4)
                if handler in _BMFF_VIDEO_HANDLERS:
                    return "video"
                return _BMFF_HANDLER_KINDS.get(handler, handler.decode("latin-1"))
    raise _Malformed("a track without a media handler")


def _vint_length(first: int) -> int:
    """The length of an EBML variable-length integer from its first byte (0: invalid)."""
    return 0 if first == 0 else 9 - first.bit_length()


def _ebml_elements(walk: _StructureWalk, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(id, payload start, end) of each EBML element in `[start, end)`.

    An element of unknown size (allowed for a Segment or a Cluster) runs to `end`.
    """
    position = start
    while position < end:
        head = walk.read(position, min(12, end - position))
        id_length = _vint_length(head[0])
        if not 1 <= id_length <= 4 or id_length >= len(head):
            raise _Malformed("a bad element id")
        size_length = _vint_length(head[id_length])
        if not 1 <= size_length <= 8 or id_length + size_length > len(head):
            raise _Malformed("a bad element size")
        ident = int.from_bytes(head[:id_length], "big")
        raw_size = int.from_bytes(head[id_length : id_length + size_length], "big")
        unknown = (1 << (7 * size_length)) - 1
        size = raw_size & unknown
        payload = position + id_length + size_length
        element_end = end if size == unknown else payload + size
        if element_end > end or payload > element_end:
            raise _Malformed(f"element {ident:#x} does not fit where it is")
        yield ident, payload, element_end
        position = element_end


def _matroska_track_kinds(walk: _StructureWalk) -> list[str]:
    """What each track of the segment carries (from `Segment/Tracks/TrackEntry/TrackType`)."""
    elements = _ebml_elements(walk, 0, walk.size)
    first = next(elements, None)
    if first is None or first[0] != _EBML_HEADER:
        raise _Malformed("no EBML header")
    for ident, start, end in elements:
        if ident != _MKV_SEGMENT:
            continue
        for child, tracks_start, tracks_end in _ebml_elements(walk, start, end):
            if child == _MKV_TRACKS:
                return [
                    _matroska_track_kind(walk, entry_start, entry_end)
                    for entry, entry_start, entry_end in _ebml_elements(
                        walk, tracks_start, tracks_end
                    )
                    if entry == _MKV_TRACK_ENTRY
                ]
            if child == _MKV_CLUSTER:
                raise _Malformed("media before the track list")
        raise _Malformed("a segment without a track list")
    raise _Malformed("no segment")


def _matroska_track_kind(walk: _StructureWalk, start: int, end: int) -> str:
    for ident, value_start, value_end in _ebml_elements(walk, start, end):
        if ident == _MKV_TRACK_TYPE:
            if not 1 <= value_end - value_start <= 8:
                raise _Malformed("a bad track type")
            track_type = int.from_bytes(walk.read(value_start, value_end - value_start), "big")
            if track_type in _MKV_VIDEO_TYPES:
                return "video"
            return _MKV_TRACK_KINDS.get(track_type, f"type {track_type}")
    raise _Malformed("a track without a type")
