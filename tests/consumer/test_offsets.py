from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from consumer.offsets import OffsetTracker, Partition

P0 = Partition("media.uploads", 0)
P1 = Partition("media.uploads", 1)


def test_nothing_is_committable_before_anything_starts() -> None:
    assert OffsetTracker().committable() == {}


def test_a_finished_offset_commits_the_position_after_it() -> None:
    tracker = OffsetTracker()
    tracker.started(P0, 5)
    assert tracker.committable() == {P0: 5}  # not yet done: the position stays at 5
    tracker.finished(P0, 5)
    assert tracker.committable() == {P0: 6}


def test_out_of_order_completion_commits_only_the_contiguous_prefix() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.started(P0, offset)
    tracker.finished(P0, 12)
    tracker.finished(P0, 11)
    assert tracker.committable() == {P0: 10}  # 10 is still being screened
    tracker.finished(P0, 10)
    assert tracker.committable() == {P0: 13}


def test_a_position_already_committed_is_not_offered_again() -> None:
    tracker = OffsetTracker()
    tracker.started(P0, 0)
    tracker.finished(P0, 0)
    tracker.committed(tracker.committable())
    assert tracker.committable() == {}


def test_partitions_are_independent() -> None:
    tracker = OffsetTracker()
    tracker.started(P0, 0)
    tracker.started(P1, 7)
    tracker.finished(P1, 7)
    assert tracker.committable() == {P0: 0, P1: 8}
    assert tracker.in_flight() == 1 and tracker.in_flight_of(P0) == 1


def test_a_revoked_partition_is_not_committed_and_forgotten_if_it_does_not_come_back() -> None:
    tracker = OffsetTracker()
    tracker.started(P0, 3)
    tracker.revoke([P0])
    tracker.finished(P0, 3)
    assert tracker.committable() == {}
    tracker.assign([P1])
    assert tracker.committable() == {}
    assert tracker.in_flight() == 0


def test_a_partition_handed_straight_back_keeps_its_finished_work() -> None:
    """Eager rebalances revoke everything, then reassign most of it."""
    tracker = OffsetTracker()
    for offset in (0, 1):
        tracker.started(P0, offset)
    tracker.finished(P0, 0)
    tracker.revoke([P0])
    tracker.finished(P0, 1)  # finishes during the rebalance
    tracker.assign([P0])
    assert tracker.committable() == {P0: 2}


@given(st.permutations(list(range(30))), st.integers(min_value=0, max_value=30))
def test_the_committed_position_never_passes_an_unfinished_offset(
    order: list[int], done: int
) -> None:
    tracker = OffsetTracker()
    for offset in range(30):
        tracker.started(P0, offset)
    finished = set(order[:done])
    for offset in order[:done]:
        tracker.finished(P0, offset)
    position = tracker.committable()[P0]
    assert all(offset in finished for offset in range(position))
    assert position == 30 or position not in finished


def test_a_partition_waiting_too_long_on_one_offset_is_stuck_until_it_finishes() -> None:
    tracker = OffsetTracker()
    p0, p1 = Partition("uploads", 0), Partition("uploads", 1)
    tracker.assign([p0, p1])
    tracker.started(p0, 5)
    time.sleep(0.05)
    tracker.started(p0, 6)
    tracker.started(p1, 1)
    assert tracker.stuck(older_than_s=10) == {}
    assert tracker.stuck(older_than_s=0.0) == {p0: 5, p1: 1}
    tracker.finished(p1, 1)
    tracker.finished(p0, 5)
    assert tracker.stuck(older_than_s=0.0) == {p0: 6}  # the next one is judged on its own start
    assert tracker.stuck(older_than_s=10) == {}
