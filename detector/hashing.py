"""Perceptual hashes of a video: PDQ of sampled frames and of face crops, vPDQ-style.

The bank of known fakes recognises re-uploads by perceptual hashes rather than
bytes: a re-encoded, resized or trimmed copy has other bytes but nearly the
same pictures. PDQ (Meta's 256-bit image hash) is what industry hash-sharing
uses, and vPDQ, its video form, is a bag of per-frame PDQ features (frame
number, timestamp, quality, hash), so a bank built of these features can be
exchanged with vPDQ users.

Whole frames are not enough for deepfakes: a fake and the real video it was
made from are near-duplicates everywhere but the face. So the face regions of
the tracks are hashed too, and the bank's match rule asks for both.

A face region is not the detector's crop itself: PDQ of a face crop moves by
about 26 bits when the crop shifts by 1 % of its side and by 50 bits at 2 %
(measured on the shared clips), and the detector's boxes on a re-encoded copy
drift by more than that. So each face crop (`detector.clips.square_crops`) is
snapped to a *face tile*: a square of the frame's content whose side is the
smallest rung of a ladder (the content's short side times 2^(-k/2)) that
holds the crop, centred on a grid of a quarter of that side. A re-encoded,
resized or letterboxed copy snaps its faces to the same tiles, which are then
compared pixel-aligned, as whole frames are. Where the crop lies near a rung
or grid boundary, the neighbouring tiles are hashed too (`face_probes`): a
query tries them, a bank entry keeps only the snapped tile.

The hasher does not decode. The decoder feeds it the RGB frames it already
holds for the sampled windows, with their numbers, timestamps and face crop
boxes, so hashing costs what the windows cost and never a second pass over
the video. It hashes every `frame_stride`-th frame number it is offered.

Frames are downscaled (area interpolation) to at most `max_side` pixels before
PDQ, which costs in proportion to the pixels it is given; PDQ itself reduces
every picture to 64x64, so this moves a 1080p frame's hash by a few bits
(about 4 at 640 px) while cutting its cost about tenfold. Bank and query are
hashed the same way. Uniform borders (letterboxing, pillarboxing) are cut
before hashing a whole frame, so that a letterboxed copy hashes like its
source. A mirrored copy is recognised by hashing the query's pictures
mirrored as well (`mirrored_*`); the bank keeps one orientation.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import cv2
import numpy as np
import pdqhash
from numpy.typing import NDArray

from detector.arrays import Boxes, Frame
from detector.clips import cut_clip
from detector.config import HashingConfig

PDQ_BITS: Final = 256
PDQ_HEX_LENGTH: Final = PDQ_BITS // 4
PDQ_BYTES: Final = PDQ_BITS // 8

HashBits = NDArray[np.uint8]  # (N, 32) packed PDQ hashes, most significant bit first


@dataclass(frozen=True)
class PdqFeature:
    """One hashed picture (a sampled frame, or a face crop in it): a vPDQ feature.

    `quality` is PDQ's own 0-100 measure of how much structure the picture
    has; flat pictures (black frames, fades) hash alike whatever they show,
    so matching ignores features under a minimum quality, as vPDQ does.
    """

    frame_number: int
    timestamp_s: float
    quality: int
    pdq_hex: str  # 64 lower-case hex digits, the PDQ reference implementation's text form

    def __post_init__(self) -> None:
        if len(self.pdq_hex) != PDQ_HEX_LENGTH or self.pdq_hex != self.pdq_hex.lower():
            raise ValueError(f"a PDQ hash is {PDQ_HEX_LENGTH} lower-case hex digits")
        int(self.pdq_hex, 16)  # ValueError when not hex
        if not 0 <= self.quality <= 100:
            raise ValueError(f"PDQ quality is 0-100, not {self.quality}")
        if self.frame_number < 0 or self.timestamp_s < 0:
            raise ValueError("frame number and timestamp are not negative")


@dataclass(frozen=True)
class VideoHashes:
    """What a video contributes to the bank (`frames`, `faces`) or asks of it (all four)."""

    frames: tuple[PdqFeature, ...] = ()
    faces: tuple[PdqFeature, ...] = ()  # the snapped face tile of each face in each frame
    face_probes: tuple[tuple[PdqFeature, ...], ...] = ()  # faces[i]'s neighbouring tiles
    mirrored_frames: tuple[PdqFeature, ...] = ()
    mirrored_faces: tuple[PdqFeature, ...] = ()
    mirrored_face_probes: tuple[tuple[PdqFeature, ...], ...] = ()
    # every frame of the video was offered (`hash_whole`), not only the screened windows
    whole: bool = False


def hashing_fingerprint(config: HashingConfig) -> str:
    """A short hash of the hashing configuration: hashes made under another one never mix."""
    return hashlib.sha256(repr(config).encode()).hexdigest()[:16]


def pdq_hash(image_rgb: Frame) -> tuple[str, int]:
    """PDQ of an RGB uint8 picture (H, W, 3) as (64 hex digits, quality 0-100)."""
    bits, quality = pdqhash.compute(np.ascontiguousarray(image_rgb))
    return _hex(np.asarray(bits, dtype=np.uint8)), int(quality)


def hex_to_bits(hashes: Sequence[str]) -> HashBits:
    """Packed hashes (N, 32) uint8 of hex PDQ hashes, as FAISS binary indexes take them."""
    if not hashes:
        return np.zeros((0, PDQ_BYTES), dtype=np.uint8)
    return np.frombuffer(bytes.fromhex("".join(hashes)), dtype=np.uint8).reshape(-1, PDQ_BYTES)


def bits_to_hex(bits: HashBits) -> list[str]:
    """The inverse of `hex_to_bits`."""
    return [row.tobytes().hex() for row in np.asarray(bits, dtype=np.uint8)]


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hex PDQ hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def frame_for_hashing(frame_rgb: Frame, config: HashingConfig) -> Frame:
    """The whole frame as it is hashed: borders cut, downscaled to `max_side`."""
    picture = trim_uniform_borders(frame_rgb, config)
    return _downscaled(np.ascontiguousarray(picture), config.max_side)


def trim_uniform_borders(frame_rgb: Frame, config: HashingConfig) -> Frame:
    """The frame without the near-black rows and columns along its edges.

    Only dark borders are cut, each at most `border_max_share` of its side, so
    a dark scene is not cropped to nothing.
    """
    top, bottom, left, right = content_rect(frame_rgb, config)
    return frame_rgb[top:bottom, left:right]


def content_rect(frame_rgb: Frame, config: HashingConfig) -> tuple[int, int, int, int]:
    """Rows [top, bottom) and columns [left, right) inside the frame's dark borders."""
    if not config.trim_borders:
        return 0, frame_rgb.shape[0], 0, frame_rgb.shape[1]
    height = frame_rgb.shape[0]
    # a row (column) is border when its brightest value is dark; reductions in memory order
    row_peak = np.asarray(frame_rgb).reshape(height, -1).max(axis=1)
    column_peak = np.asarray(frame_rgb).max(axis=0).max(axis=1)
    top, bottom = _content_span(row_peak > config.border_tolerance, config.border_max_share)
    left, right = _content_span(column_peak > config.border_tolerance, config.border_max_share)
    return top, bottom, left, right


def face_tiles(content_size: tuple[int, int], crop: Boxes, config: HashingConfig) -> list[Boxes]:
    """The face tile a crop snaps to, then the neighbouring tiles worth probing.

    `content_size` is (height, width) of the frame's content and `crop` its
    x0, y0, x1, y1 in the content's pixels; tiles are given the same way.
    """
    height, width = content_size
    short = float(min(height, width))
    side = max(float(crop[2] - crop[0]), float(crop[3] - crop[1]), 1.0)
    rung = min(max(-2.0 * math.log2(side / short), 0.0), config.tile_rungs - 1.0)
    rungs = _snapped(rung, config.probe_margin, floor=True)
    tiles: list[Boxes] = []
    for k in rungs:
        k = min(max(k, 0), config.tile_rungs - 1)
        tile_side = short * 2.0 ** (-k / 2)
        step = tile_side * config.tile_grid
        centre_x = (float(crop[0]) + float(crop[2])) / 2 / step
        centre_y = (float(crop[1]) + float(crop[3])) / 2 / step
        for gx in _snapped(centre_x, config.probe_margin, floor=False):
            for gy in _snapped(centre_y, config.probe_margin, floor=False):
                cx, cy, half = gx * step, gy * step, tile_side / 2
                tile = np.array([cx - half, cy - half, cx + half, cy + half])
                if not any(np.allclose(tile, known) for known in tiles):
                    tiles.append(tile)
    return tiles


def _snapped(position: float, margin: float, *, floor: bool) -> list[int]:
    """The grid index `position` snaps to, and its neighbour when it lies near the boundary."""
    if floor:  # rungs: the largest k whose tile still holds the crop
        snapped = math.floor(position + 1e-9)
        offset = position - snapped  # 0 at this rung's boundary, 1 at the next one's
        if offset < margin:
            return [snapped, snapped - 1]
        if offset > 1 - margin:
            return [snapped, snapped + 1]
        return [snapped]
    snapped = round(position)
    offset = position - snapped  # in [-0.5, 0.5]
    if offset > 0.5 - margin:
        return [snapped, snapped + 1]
    if offset < margin - 0.5:
        return [snapped, snapped - 1]
    return [snapped]


def _content_span(has_content: NDArray[np.bool_], max_share: float) -> tuple[int, int]:
    length = len(has_content)
    limit = int(length * max_share)
    found = np.flatnonzero(has_content)
    if len(found) == 0:
        return 0, length
    start = min(int(found[0]), limit)
    end = max(int(found[-1]) + 1, length - limit)
    return start, end


class VideoHasher:
    """Collects a video's PDQ features while the decoder walks its sampled windows.

    Not thread-safe: one per video being decoded.
    """

    def __init__(self, config: HashingConfig | None = None) -> None:
        self.config = config or HashingConfig()
        self._upright = _Collected()
        self._mirrored = _Collected()

    def wants(self, frame_number: int) -> bool:
        """Whether `add_frame` would hash this frame (the decoder may skip the others)."""
        return frame_number % self.config.frame_stride == 0

    def add_frame(
        self,
        frame_rgb: Frame,
        frame_number: int,
        timestamp_s: float,
        face_crops: Boxes | None = None,
    ) -> None:
        """Hash a decoded frame and its faces, if its number is one that is hashed.

        `face_crops` (K, 4) are the square crop boxes of the faces in this
        frame, x0, y0, x1, y1 pixels (`detector.clips.square_crops` of a track).
        """
        if not self.wants(frame_number):
            return
        top, bottom, left, right = content_rect(frame_rgb, self.config)
        content = np.ascontiguousarray(frame_rgb[top:bottom, left:right])
        crops = np.zeros((0, 4))
        if face_crops is not None:
            crops = np.asarray(face_crops, dtype=np.float64).reshape(-1, 4) - [left, top, left, top]
        moment = (frame_number, round(timestamp_s, 3))
        whole = _downscaled(content, self.config.max_side)
        self._upright.add(whole, content, crops, moment, self.config)
        if self.config.mirrored:
            width = content.shape[1]
            mirrored_crops = np.stack(
                [width - crops[:, 2], crops[:, 1], width - crops[:, 0], crops[:, 3]], axis=1
            )
            if max(content.shape[:2]) <= self.config.max_side:  # not downscaled: flip it whole
                flipped = _flipped(content)
                self._mirrored.add(flipped, flipped, mirrored_crops, moment, self.config)
            else:
                # A large one's mirrored pictures are cut from the upright frame and flipped
                # once small: flipping a 1080p frame cost more than hashing it.
                mirrored_whole = _flipped(whole)
                self._mirrored.add(
                    mirrored_whole, content, mirrored_crops, moment, self.config, mirrored=True
                )

    def add_window(
        self,
        frames: Sequence[Frame],
        first_frame_number: int,
        fps: float,
        track_crops: Sequence[Boxes] = (),
    ) -> None:
        """Hash one decoded window: `track_crops` holds each track's (T, 4) crop boxes."""
        for t, frame in enumerate(frames):
            number = first_frame_number + t
            crops = [track[t] for track in track_crops]
            self.add_frame(
                frame,
                number,
                number / fps if fps > 0 else 0.0,
                np.stack(crops) if crops else None,
            )

    def hashes(self, *, whole: bool = False) -> VideoHashes:
        """Everything hashed so far, in the order it was offered.

        `whole`: what was offered is every frame there is to hash (a still, or
        `hash_whole_video`), not only the windows screened.
        """
        return VideoHashes(
            frames=tuple(self._upright.frames),
            faces=tuple(self._upright.faces),
            face_probes=tuple(self._upright.face_probes),
            mirrored_frames=tuple(self._mirrored.frames),
            mirrored_faces=tuple(self._mirrored.faces),
            mirrored_face_probes=tuple(self._mirrored.face_probes),
            whole=whole,
        )


@dataclass
class _Collected:
    """The features of one orientation."""

    frames: list[PdqFeature] = field(default_factory=list)
    faces: list[PdqFeature] = field(default_factory=list)
    face_probes: list[tuple[PdqFeature, ...]] = field(default_factory=list)

    def add(
        self,
        whole: Frame,
        content: Frame,
        crops: Boxes,
        moment: tuple[int, float],
        config: HashingConfig,
        *,
        mirrored: bool = False,
    ) -> None:
        """`whole`: the frame as hashed, in this orientation; `content`: the upright frame
        (borders cut) the face tiles are cut from; `crops`: face crops in this orientation."""
        frame_number, timestamp_s = moment
        self.frames.append(PdqFeature(frame_number, timestamp_s, *_quality_last(whole)))
        size = (content.shape[0], content.shape[1])
        for crop in crops:
            features = [
                PdqFeature(
                    frame_number,
                    timestamp_s,
                    *_quality_last(_face_tile(content, tile, config.face_size, mirrored)),
                )
                for tile in face_tiles(size, crop, config)
            ]
            self.faces.append(features[0])
            self.face_probes.append(tuple(features[1:]))


def _face_tile(content: Frame, tile: Boxes, size: int, mirrored: bool) -> Frame:
    """The tile's picture, `size` square; a mirrored tile (given in the mirrored frame's
    pixels) is cut from the upright content and flipped."""
    if not mirrored:
        return np.asarray(cut_clip([content], tile[None, :], size)[0])
    width = content.shape[1]
    upright = np.array([width - tile[2], tile[1], width - tile[0], tile[3]])
    return _flipped(cut_clip([content], upright[None, :], size)[0])


def _flipped(picture: Frame) -> Frame:
    """The picture mirrored left to right: OpenCV's flip is about ten times as fast as
    copying numpy's reversed view of an RGB picture (its 3-byte pixels defeat SIMD)."""
    return np.asarray(cv2.flip(np.ascontiguousarray(picture), 1))


def _quality_last(picture: Frame) -> tuple[int, str]:
    digest, quality = pdq_hash(picture)
    return quality, digest


def _downscaled(picture: Frame, max_side: int) -> Frame:
    height, width = picture.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return picture
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(cv2.resize(picture, size, interpolation=cv2.INTER_AREA))


def _hex(bits: NDArray[np.uint8]) -> str:
    if bits.shape != (PDQ_BITS,):
        raise ValueError(f"PDQ gives {PDQ_BITS} bits, not {bits.shape}")
    return np.packbits(bits).tobytes().hex()
