from __future__ import annotations

import numpy as np

from detector.config import FaceConfig
from detector.faces import Detection
from detector.tracking import TrackRegistry, greedy_match, iou, link_window

CONFIG = FaceConfig(link_iou=0.3, max_gap=5, min_coverage=0.5)


def face(x: float, y: float = 50.0, side: float = 40.0) -> Detection:
    return Detection(x, y, x + side, y + side, 0.9)


def test_iou_of_identical_disjoint_and_half_overlapping_boxes() -> None:
    a = np.array([0, 0, 10, 10])
    assert iou(a, a) == 1.0
    assert iou(a, np.array([20, 20, 30, 30])) == 0.0
    assert abs(iou(a, np.array([5, 0, 15, 10])) - 50 / 150) < 1e-9


def test_a_face_moving_slowly_is_one_track() -> None:
    tracks = link_window([[face(10 + 2 * t)] for t in range(20)], CONFIG)
    assert len(tracks) == 1
    assert tracks[0].coverage == 1.0
    assert tracks[0].boxes.shape == (20, 4)


def test_two_faces_apart_are_two_tracks_ordered_left_to_right() -> None:
    tracks = link_window([[face(200), face(10)] for _ in range(20)], CONFIG)
    assert [round(float(t.boxes[0, 0])) for t in tracks] == [10, 200]


def test_a_face_lost_mid_window_is_interpolated_across_the_gap() -> None:
    frames: list[list[Detection]] = [[face(10 + 2 * t)] for t in range(20)]
    for t in (8, 9, 10, 11):  # the detector misses it for four frames
        frames[t] = []
    [track] = link_window(frames, CONFIG)
    assert track.coverage == 16 / 20
    assert not track.detected[8:12].any()
    assert np.allclose(track.boxes[8:12, 0], [26, 28, 30, 32])  # on the line between 7 and 12


def test_boxes_are_held_before_the_first_and_after_the_last_detection() -> None:
    frames: list[list[Detection]] = [[] for _ in range(20)]
    for t in range(3, 17):
        frames[t] = [face(100)]
    [track] = link_window(frames, CONFIG)
    assert np.allclose(track.boxes[:3, 0], 100) and np.allclose(track.boxes[17:, 0], 100)


def test_a_gap_longer_than_max_gap_splits_the_face_into_two_tracks() -> None:
    frames: list[list[Detection]] = [[face(100)] for _ in range(20)]
    for t in range(5, 12):  # 7 missed frames > max_gap
        frames[t] = []
    tracks = link_window(frames, FaceConfig(min_coverage=0.2, max_gap=5))
    assert len(tracks) == 2


def test_a_face_seen_in_too_few_frames_is_dropped() -> None:
    frames: list[list[Detection]] = [[face(100)] if t < 6 else [] for t in range(20)]
    assert link_window(frames, CONFIG) == []


def test_track_ids_carry_over_between_adjacent_windows() -> None:
    registry = TrackRegistry(FaceConfig())
    first = link_window([[face(10 + t), face(300)] for t in range(20)], CONFIG)
    second = link_window([[face(30 + t), face(300)] for t in range(20)], CONFIG)
    assert registry.assign(first) == [0, 1]
    assert registry.assign(second) == [0, 1]
    elsewhere = link_window([[face(600)] for _ in range(20)], CONFIG)
    assert registry.assign(elsewhere) == [2]
    assert registry.count == 3


def test_greedy_matching_takes_the_best_overlap_first_and_each_box_once() -> None:
    known = [np.array([0.0, 0, 10, 10]), np.array([20.0, 0, 30, 10])]
    new = [np.array([1.0, 0, 11, 10]), np.array([0.0, 0, 10, 10]), np.array([50.0, 0, 60, 10])]
    # new[1] is known[0] exactly and wins it; new[0] then has nothing above the bar
    assert greedy_match(known, new, min_iou=0.3) == {1: 0}
    assert greedy_match(known, [np.array([21.0, 0, 31, 10])], min_iou=0.3) == {0: 1}
    assert greedy_match(known, new, min_iou=1.01) == {}
    assert greedy_match([], new, min_iou=0.0) == {}


def test_frames_detection_skipped_are_interpolated_and_do_not_lower_coverage() -> None:
    # detection on every 3rd frame and the last, as `FaceConfig.detect_every=3` runs it
    frames: list[list[Detection] | None] = [
        [face(10 + 2 * t)] if t % 3 == 0 or t == 19 else None for t in range(20)
    ]
    [track] = link_window(frames, CONFIG)
    assert track.coverage == 1.0  # found every time it was looked for
    assert int(track.detected.sum()) == 8
    np.testing.assert_allclose(track.boxes[:, 0], [10 + 2 * t for t in range(20)])


def test_a_frame_looked_at_without_a_face_still_counts_against_coverage() -> None:
    frames: list[list[Detection] | None] = [
        ([face(10)] if t in (0, 9, 18) else []) if t % 3 == 0 else None for t in range(20)
    ]
    # looked at 7 frames (0, 3, ..., 18), found in 3: coverage 3/7 < min_coverage 0.5
    assert link_window(frames, CONFIG) == []


def test_the_gap_that_ends_a_track_is_counted_in_frames_looked_at() -> None:
    every_third = [[face(10)] if t in (0, 18) else ([] if t % 3 == 0 else None) for t in range(19)]
    # 5 looked-at frames without the face between t=0 and t=18 (3, 6, 9, 12, 15): max_gap=5 holds
    tracks = link_window(every_third, FaceConfig(link_iou=0.3, max_gap=5, min_coverage=0.0))
    assert len(tracks) == 1
    tracks = link_window(every_third, FaceConfig(link_iou=0.3, max_gap=4, min_coverage=0.0))
    assert len(tracks) == 2
