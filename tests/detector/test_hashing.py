from __future__ import annotations

import cv2
import numpy as np
import pdqhash
import pytest
from skimage import data

from detector.arrays import Frame
from detector.clips import cut_clip
from detector.hashing import (
    HashingConfig,
    PdqFeature,
    VideoHasher,
    bits_to_hex,
    face_tiles,
    frame_for_hashing,
    hamming,
    hex_to_bits,
    pdq_hash,
    trim_uniform_borders,
)

ASTRONAUT: Frame = np.ascontiguousarray(data.astronaut())  # 512 x 512 RGB
COFFEE: Frame = np.ascontiguousarray(data.coffee())  # 400 x 600 RGB


def jpeg(image: Frame, quality: int) -> Frame:
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    assert ok
    return np.ascontiguousarray(cv2.cvtColor(cv2.imdecode(encoded, 1), cv2.COLOR_BGR2RGB))


def test_a_pdq_hash_is_64_lower_case_hex_digits_of_pdqs_bits_most_significant_first() -> None:
    digest, quality = pdq_hash(ASTRONAUT)
    assert len(digest) == 64 and digest == digest.lower()
    reference_bits, reference_quality = pdqhash.compute(ASTRONAUT)
    assert np.array_equal(np.unpackbits(hex_to_bits([digest])[0]), reference_bits)
    assert quality == reference_quality == 100


def test_hex_and_packed_bits_convert_both_ways_and_hamming_counts_differing_bits() -> None:
    first, second = pdq_hash(ASTRONAUT)[0], pdq_hash(COFFEE)[0]
    packed = hex_to_bits([first, second])
    assert packed.shape == (2, 32) and packed.dtype == np.uint8
    assert bits_to_hex(packed) == [first, second]
    assert hamming(first, second) == int(np.unpackbits(packed[0] ^ packed[1]).sum())
    assert hamming(first, first) == 0
    assert hex_to_bits([]).shape == (0, 32)


def test_a_recompressed_picture_hashes_close_and_another_picture_far() -> None:
    original = pdq_hash(ASTRONAUT)[0]
    assert hamming(original, pdq_hash(jpeg(ASTRONAUT, 30))[0]) <= 16
    assert hamming(original, pdq_hash(COFFEE)[0]) >= 80


def test_a_flat_picture_has_low_quality() -> None:
    black = np.zeros((240, 320, 3), dtype=np.uint8)
    assert pdq_hash(black)[1] < 50


@pytest.mark.parametrize(
    "field",
    [
        {"pdq_hex": "ab" * 31},
        {"pdq_hex": "AB" * 32},
        {"pdq_hex": "zz" * 32},
        {"quality": 101},
        {"frame_number": -1},
        {"timestamp_s": -0.5},
    ],
)
def test_a_feature_refuses_what_is_not_a_vpdq_feature(field: dict[str, object]) -> None:
    valid: dict[str, object] = {
        "frame_number": 0,
        "timestamp_s": 0.0,
        "quality": 100,
        "pdq_hex": "ab" * 32,
    }
    with pytest.raises(ValueError):
        PdqFeature(**{**valid, **field})  # type: ignore[arg-type]


def test_black_letterbox_bars_are_cut_before_hashing_a_frame() -> None:
    bars = np.zeros((64, 512, 3), dtype=np.uint8)
    letterboxed = np.ascontiguousarray(np.concatenate([bars, ASTRONAUT, bars]))
    config = HashingConfig()
    assert trim_uniform_borders(letterboxed, config).shape == ASTRONAUT.shape
    trimmed = pdq_hash(frame_for_hashing(letterboxed, config))[0]
    untrimmed = pdq_hash(letterboxed)[0]
    original = pdq_hash(frame_for_hashing(ASTRONAUT, config))[0]
    assert hamming(trimmed, original) <= 4
    assert hamming(untrimmed, original) > hamming(trimmed, original)


def test_a_dark_scene_is_not_trimmed_to_nothing() -> None:
    night = np.zeros((200, 300, 3), dtype=np.uint8)
    night[90:110, 140:160] = 200  # one lit window in the middle
    trimmed = trim_uniform_borders(night, HashingConfig())
    assert trimmed.shape[0] >= 200 // 2 and trimmed.shape[1] >= 300 // 2


def test_large_frames_are_downscaled_before_hashing_and_hash_close_to_full_size() -> None:
    full_hd = np.ascontiguousarray(cv2.resize(ASTRONAUT, (1920, 1080)))
    prepared = frame_for_hashing(full_hd, HashingConfig(max_side=640))
    assert max(prepared.shape[:2]) == 640
    assert hamming(pdq_hash(prepared)[0], pdq_hash(full_hd)[0]) <= 10


def window(frames: int = 20, size: int = 320) -> list[Frame]:
    """A pan across the astronaut: every frame a little different."""
    big = cv2.resize(ASTRONAUT, (size + frames * 4, size + frames * 4))
    return [
        np.ascontiguousarray(big[2 * t : 2 * t + size, 4 * t : 4 * t + size]) for t in range(frames)
    ]


def test_the_hasher_hashes_every_strided_frame_of_a_window_with_its_time_and_faces() -> None:
    frames = window()
    face_track = np.tile(np.array([[100.0, 40.0, 260.0, 200.0]]), (len(frames), 1))
    hasher = VideoHasher(HashingConfig(frame_stride=5))
    hasher.add_window(frames, first_frame_number=33, fps=25.0, track_crops=[face_track])
    hashes = hasher.hashes()

    assert [f.frame_number for f in hashes.frames] == [35, 40, 45, 50]
    assert [f.timestamp_s for f in hashes.frames] == [1.4, 1.6, 1.8, 2.0]
    assert [f.frame_number for f in hashes.faces] == [35, 40, 45, 50]
    assert len(hashes.mirrored_frames) == len(hashes.mirrored_faces) == 4
    assert len({f.pdq_hex for f in hashes.frames}) == 4  # the pan moves every frame


def test_a_face_crop_snaps_to_the_smallest_rung_that_holds_it_on_a_quarter_side_grid() -> None:
    config = HashingConfig(tile_grid=0.25)
    tile = face_tiles((400, 600), np.array([210.0, 110.0, 330.0, 230.0]), config)[0]
    side = tile[2] - tile[0]
    # rungs of a 400 px short side: 400, 283, 200, 141, 100, ...: 141 is the least above 120
    assert side == pytest.approx(400 * 2 ** (-3 / 2))
    centre = np.array([(tile[0] + tile[2]) / 2, (tile[1] + tile[3]) / 2]) / (side / 4)
    assert np.allclose(centre, np.round(centre))
    assert np.allclose(centre * side / 4, [270, 170], atol=side / 8)


def test_a_re_detected_face_hashes_alike_where_its_crop_itself_does_not() -> None:
    """PDQ of a face crop moves ~50 bits when the crop moves 2 %; the snapped tile does not."""
    frame = np.ascontiguousarray(cv2.resize(ASTRONAUT, (640, 640)))
    crop = np.array([231.0, 61.0, 411.0, 241.0])
    moved = crop + np.array([3.6, -3.6, 3.6, -3.6])  # 2 % of the crop's side
    config = HashingConfig(frame_stride=1, mirrored=False)
    first, second = VideoHasher(config), VideoHasher(config)
    first.add_frame(frame, 0, 0.0, crop[None, :])
    second.add_frame(frame, 0, 0.0, moved[None, :])
    assert first.hashes().faces == second.hashes().faces
    raw = [pdq_hash(cut_clip([frame], box[None, :], 256)[0])[0] for box in (crop, moved)]
    assert hamming(*raw) > 31


def test_face_tiles_scale_with_the_frame() -> None:
    config = HashingConfig()
    crop = np.array([210.0, 110.0, 330.0, 230.0])
    full = face_tiles((400, 600), crop, config)[0]
    half = face_tiles((200, 300), crop / 2, config)[0]
    assert np.allclose(full / 2, half)


def test_near_a_grid_boundary_the_neighbouring_tile_is_probed_too() -> None:
    config = HashingConfig(probe_margin=0.3)
    side = 400 * 2 ** (-3 / 2)  # the rung a 120 px crop snaps to
    step = side / 4
    centred = np.array([10 * step - 60, 8 * step - 60, 10 * step + 60, 8 * step + 60])
    # almost half a step to the right
    between = centred + np.array([step / 2 - 1, 0, step / 2 - 1, 0])
    assert len(face_tiles((400, 600), centred, config)) == 1
    tiles = face_tiles((400, 600), between, config)
    assert len(tiles) == 2
    assert tiles[1][0] - tiles[0][0] == pytest.approx(step)


def test_a_face_in_a_letterboxed_frame_hashes_as_in_the_original() -> None:
    frame = np.ascontiguousarray(cv2.resize(ASTRONAUT, (640, 480)))
    bars = np.zeros((48, 640, 3), dtype=np.uint8)
    letterboxed = np.ascontiguousarray(np.concatenate([bars, frame, bars]))
    crop = np.array([250.0, 40.0, 410.0, 200.0])
    config = HashingConfig(frame_stride=1, mirrored=False)
    original, boxed = VideoHasher(config), VideoHasher(config)
    original.add_frame(frame, 0, 0.0, crop[None, :])
    boxed.add_frame(letterboxed, 0, 0.0, (crop + np.array([0, 48, 0, 48]))[None, :])
    assert hamming(original.hashes().faces[0].pdq_hex, boxed.hashes().faces[0].pdq_hex) <= 4


def test_two_faces_in_a_frame_give_two_face_features() -> None:
    hasher = VideoHasher(HashingConfig(frame_stride=1))
    crops = np.array([[0.0, 0.0, 150.0, 150.0], [160.0, 160.0, 310.0, 310.0]])
    hasher.add_frame(window(frames=1)[0], frame_number=0, timestamp_s=0.0, face_crops=crops)
    assert len(hasher.hashes().faces) == 2


def test_frames_off_the_stride_are_not_hashed_and_say_so() -> None:
    hasher = VideoHasher(HashingConfig(frame_stride=5))
    assert hasher.wants(10) and not hasher.wants(11)
    hasher.add_frame(window(frames=1)[0], frame_number=11, timestamp_s=0.44)
    assert hasher.hashes().frames == ()


def test_the_mirrored_features_of_a_flipped_copy_are_the_originals_features() -> None:
    frame = window(frames=1)[0]
    flipped = np.ascontiguousarray(frame[:, ::-1])
    crop = np.array([[40.0, 60.0, 160.0, 180.0]])
    width = frame.shape[1]
    flipped_crop = np.array([[width - 160.0, 60.0, width - 40.0, 180.0]])
    original, copy = VideoHasher(), VideoHasher()
    original.add_frame(frame, frame_number=0, timestamp_s=0.0, face_crops=crop)
    copy.add_frame(flipped, frame_number=0, timestamp_s=0.0, face_crops=flipped_crop)
    assert copy.hashes().mirrored_frames[0].pdq_hex == original.hashes().frames[0].pdq_hex
    assert copy.hashes().mirrored_faces[0].pdq_hex == original.hashes().faces[0].pdq_hex
    assert hamming(copy.hashes().frames[0].pdq_hex, original.hashes().frames[0].pdq_hex) > 31


def test_without_mirroring_no_mirrored_features_are_made() -> None:
    hasher = VideoHasher(HashingConfig(mirrored=False))
    hasher.add_frame(window(frames=1)[0], 0, 0.0, np.array([[0.0, 0.0, 100.0, 100.0]]))
    assert hasher.hashes().mirrored_frames == hasher.hashes().mirrored_faces == ()


def test_a_full_hd_frames_mirrored_features_are_the_flipped_frames_probes_included() -> None:
    """The mirrored pictures are cut from the upright frame and flipped small; they must be
    the very pictures hashing the flipped frame would give."""
    frame = np.ascontiguousarray(cv2.resize(ASTRONAUT, (1920, 1080)))
    flipped = np.ascontiguousarray(frame[:, ::-1])
    crop = np.array([[737.0, 95.0, 1101.0, 459.0]])
    flipped_crop = np.array([[1920 - 1101.0, 95.0, 1920 - 737.0, 459.0]])
    config = HashingConfig(frame_stride=1)
    original, copy = VideoHasher(config), VideoHasher(config)
    original.add_frame(frame, 0, 0.0, crop)
    copy.add_frame(flipped, 0, 0.0, flipped_crop)
    mirrored, upright = original.hashes(), copy.hashes()
    assert mirrored.mirrored_face_probes[0]  # near a boundary: neighbouring tiles are probed
    assert mirrored.mirrored_frames == upright.frames
    assert mirrored.mirrored_faces == upright.faces
    assert mirrored.mirrored_face_probes == upright.face_probes
