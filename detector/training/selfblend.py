"""Self-blended images (Shiohara & Yamasaki, CVPR 2022): pseudo-fakes from real faces alone.

No deepfake training set can be had, and users will train on their own data:
self-blending makes training pairs from real faces only. A face is blended
with a colour- and geometry-perturbed copy of itself inside a mask derived
from its landmark hull, which leaves the generic traces of face swapping
(blending boundaries, colour and sharpness mismatches) without any identity
change, so a detector learns those traces rather than particular faces.

Still images become 20-frame clips by moving the (real or blended) face along
a smooth random path of small shifts, zooms and rotations, so the LSTM sees
plausible frame-to-frame motion, and the clip is encoded as H.264 at a random
rate factor and decoded again (`compression`), as uploads are. Each clip
is also "filmed" at a random resolution (a quarter to all of the still's
size), because uploads come at any resolution: without it every training
face is equally sharp, and a model learns "a soft face is fake" (the blend's
source is often down-sampled), which on real uploads just means "a
low-resolution video". The real and the pseudo-fake clip of a still share the
path, the resolution and the compression: they differ only in the blend.

A pseudo-fake is blended afresh in every frame with a small random wobble of
the pasted face, as a face swap pastes each frame on its own
(`self_blend_frames`), so the LSTM has a temporal trace to learn as well.

Landmarks come from MediaPipe's face mesh, whose model ships in the wheel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from detector.arrays import Frame, Points, Weights
from detector.training.compression import CRF_RANGE, h264_round_trip

Landmarks = Points  # (468, 2) pixel coordinates (x, y)
SoftMask = Weights

# How a still becomes a training pair; a clip cache made by another recipe is not reused.
RECIPE = "sbi/hull-blend/per-frame-wobble/smooth-motion/resolution-0.25-1/h264-crf-18-38"


class FaceMeshLandmarker:
    """468 face landmarks of the most prominent face in a still (MediaPipe face mesh)."""

    def __init__(self) -> None:
        import mediapipe as mp

        self._mesh: Any = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=False,
            min_detection_confidence=0.5,
        )  # fmt: skip

    def landmarks(self, image: Frame) -> Landmarks | None:
        result = self._mesh.process(np.ascontiguousarray(image))
        if not result.multi_face_landmarks:
            return None
        height, width = image.shape[:2]
        points = result.multi_face_landmarks[0].landmark
        return np.array([(p.x * width, p.y * height) for p in points], dtype=np.float64)

    def close(self) -> None:
        self._mesh.close()


def pad_face(image: Frame, ratio: float = 0.6) -> Frame:
    """Tight face crops (UTKFace) padded by `ratio` of their size on each side.

    The padding repeats the edge pixels and is blurred, so the detector finds
    the face and the square crop around it has context, without hard black
    edges (mirroring would put ghost faces around it for the detector to find).
    """
    height, width = image.shape[:2]
    pad_y, pad_x = round(height * ratio), round(width * ratio)
    padded = cv2.copyMakeBorder(image, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REPLICATE)
    blurred = cv2.GaussianBlur(padded, (0, 0), sigmaX=max(height, width) / 25)
    blurred[pad_y : pad_y + height, pad_x : pad_x + width] = image
    return np.asarray(blurred, dtype=np.uint8)


def hull_mask(landmarks: Landmarks, shape: tuple[int, int]) -> Frame:
    """The filled convex hull of the landmarks, as a uint8 {0, 1} mask of `shape`."""
    mask = np.zeros(shape, dtype=np.uint8)
    hull = cv2.convexHull(np.round(landmarks).astype(np.int32))
    cv2.fillConvexPoly(mask, np.asarray(hull), (1,))
    return mask


def blend_mask(landmarks: Landmarks, shape: tuple[int, int], rng: np.random.Generator) -> SoftMask:
    """A soft blending mask inside the face hull: eroded by a random margin, then blurred.

    The erosion is at least the blur's reach, and what little the Gaussian's
    tail still spreads past the hull is cut, so the mask is zero outside the
    hull: the blend never touches hair, background or the image border.
    """
    hard = hull_mask(landmarks, shape)
    face_size = float(np.sqrt(max(int(hard.sum()), 1)))
    blur = max(1, round(face_size * rng.uniform(0.015, 0.04)))  # Gaussian sigma, pixels
    reach = 2 * blur  # the blur spreads the edge about this far
    erode = reach + round(face_size * rng.uniform(0.0, 0.04))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode + 1, 2 * erode + 1))
    inner = np.asarray(cv2.erode(hard, kernel), dtype=np.uint8)
    if inner.sum() == 0:
        inner = hard
    soft = np.asarray(
        cv2.GaussianBlur(inner.astype(np.float32), (2 * reach + 1, 2 * reach + 1), blur),
        dtype=np.float32,
    )
    soft *= hard  # exact confinement even if the kernel truncation leaks a hair
    peak = float(soft.max())
    return soft / peak if peak > 0 else soft


def perturbed_source(image: Frame, rng: np.random.Generator) -> Frame:
    """The blend's source: the same face with shifted colours, sharpness and geometry."""
    source = image.astype(np.float32)
    if rng.random() < 0.9:  # colour: per-channel shift, brightness and contrast
        source = source * rng.uniform(0.85, 1.15) + rng.uniform(-20, 20, size=3)
        mean = source.mean()
        source = (source - mean) * rng.uniform(0.85, 1.15) + mean
    source = np.clip(source, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:  # hue and saturation
        hsv = cv2.cvtColor(source, cv2.COLOR_RGB2HSV).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-8, 9))) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] + int(rng.integers(-25, 26)), 0, 255)
        source = np.asarray(cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB), np.uint8)
    if rng.random() < 0.5:  # sharpness: down- and up-sampling, as face-swap decoders do
        height, width = source.shape[:2]
        factor = rng.uniform(0.35, 0.8)
        small = cv2.resize(source, (max(8, round(width * factor)), max(8, round(height * factor))))
        source = np.asarray(cv2.resize(small, (width, height)), dtype=np.uint8)
    height, width = source.shape[:2]
    scale = rng.uniform(0.95, 1.05)
    shift = rng.uniform(-0.03, 0.03, size=2) * (width, height)
    matrix = np.array([[scale, 0, (1 - scale) * width / 2 + shift[0]],
                       [0, scale, (1 - scale) * height / 2 + shift[1]]])  # fmt: skip
    warped = cv2.warpAffine(source, matrix, (width, height), borderMode=cv2.BORDER_REFLECT_101)
    return np.asarray(warped, dtype=np.uint8)


def self_blend(
    image: Frame, landmarks: Landmarks, rng: np.random.Generator
) -> tuple[Frame, SoftMask]:
    """A pseudo-fake of `image` and the mask used: source * m + image * (1 - m)."""
    frames, mask = self_blend_frames(image, landmarks, 1, rng, wobble=False)
    return frames[0], mask


def self_blend_frames(
    image: Frame,
    landmarks: Landmarks,
    length: int,
    rng: np.random.Generator,
    *,
    wobble: bool = True,
) -> tuple[list[Frame], SoftMask]:
    """`length` pseudo-fakes of `image`, one per frame, and the mask they share.

    A face swap keeps one face and one colour correction through a clip, but
    it aligns and pastes every frame on its own, so the pasted face wobbles
    against the head and its tone flickers a little from frame to frame: a
    trace only a model that looks across frames can see. One source and one
    mask serve the clip; with `wobble`, each frame's source is then shifted
    and offset by a few grey levels, independently per frame, by a per-clip
    amount from none (a third of clips, so a still blend must be caught too)
    up to 0.8 % of the face's size. The mask never moves, so every frame's
    blend stays inside the face hull.
    """
    height, width = image.shape[:2]
    mask = blend_mask(landmarks, (height, width), rng) * rng.choice([0.25, 0.5, 0.75, 1, 1, 1])
    source = perturbed_source(image, rng).astype(np.float32)
    shift_sd = tone_sd = 0.0
    if wobble and rng.random() >= 1 / 3:
        face_size = float(np.sqrt(max(int(hull_mask(landmarks, (height, width)).sum()), 1)))
        shift_sd = face_size * rng.uniform(0.001, 0.008)
        tone_sd = rng.uniform(0.5, 3.0)
    weight = mask[..., None]
    base = image.astype(np.float32) * (1 - weight)

    def paste(face: NDArray[np.float32]) -> Frame:
        return np.asarray(np.clip(np.rint(face * weight + base), 0, 255), dtype=np.uint8)

    if shift_sd == 0:  # a still blend: one frame, shown `length` times (as a real clip's still)
        return [paste(source)] * length, mask.astype(np.float32)
    frames = []
    for _ in range(length):
        dx, dy = rng.normal(0.0, shift_sd, size=2)
        shifted = np.asarray(
            cv2.warpAffine(source, np.array([[1, 0, dx], [0, 1, dy]]), (width, height),
                           borderMode=cv2.BORDER_REFLECT_101),
            dtype=np.float32,
        )  # fmt: skip
        frames.append(paste(shifted + rng.normal(0.0, tone_sd, size=3).astype(np.float32)))
    return frames, mask.astype(np.float32)


@dataclass(frozen=True)
class Motion:
    """Per-frame affine matrices (T, 2, 3) of a smooth small camera/head movement."""

    matrices: NDArray[np.float64]
    crf: int  # H.264 constant rate factor of the whole clip
    resolution: float = 1.0  # frame size as a fraction of the still's


def random_motion(
    length: int, size: tuple[int, int], rng: np.random.Generator, keyframes: int = 4
) -> Motion:
    """Shifts (±3 %), zooms (±5 %) and rotations (±4°) interpolated between random keyframes.

    The resolution is log-uniform between a quarter and the full size; the
    H.264 rate factor uniform over `CRF_RANGE`.
    """
    width, height = size
    times = np.linspace(0, length - 1, keyframes)
    shift_x = rng.uniform(-0.03, 0.03, keyframes) * width
    shift_y = rng.uniform(-0.03, 0.03, keyframes) * height
    zoom = rng.uniform(0.95, 1.05, keyframes)
    angle = rng.uniform(-4, 4, keyframes)
    frames = np.arange(length)
    matrices = np.empty((length, 2, 3))
    for t in frames:
        m = cv2.getRotationMatrix2D(
            (width / 2, height / 2), float(np.interp(t, times, angle)),
            float(np.interp(t, times, zoom)),
        )  # fmt: skip
        m[0, 2] += np.interp(t, times, shift_x)
        m[1, 2] += np.interp(t, times, shift_y)
        matrices[t] = m
    resolution = float(np.exp(rng.uniform(np.log(0.25), 0.0)))
    crf = int(rng.integers(CRF_RANGE[0], CRF_RANGE[1] + 1))
    return Motion(matrices, crf, resolution)


def animate(stills: Sequence[Frame], motion: Motion) -> list[Frame]:
    """Frame t is `stills[t]` moved by `motion`'s matrix t, at its resolution, through H.264.

    One still serves every frame of a real clip; a pseudo-fake has one per frame.
    """
    if len(stills) != len(motion.matrices):
        raise ValueError(f"{len(stills)} stills for {len(motion.matrices)} frames of motion")
    height, width = stills[0].shape[:2]
    size = (max(16, round(width * motion.resolution)), max(16, round(height * motion.resolution)))
    frames = []
    for still, matrix in zip(stills, motion.matrices, strict=True):
        frame = cv2.warpAffine(still, matrix, (width, height), borderMode=cv2.BORDER_REFLECT_101)
        if size != (width, height):
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        frames.append(np.asarray(frame, dtype=np.uint8))
    return h264_round_trip(frames, motion.crf)
