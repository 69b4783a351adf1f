"""Which offsets may be committed: at-least-once with out-of-order completion.

Videos of one partition are screened concurrently and finish in any order,
but Kafka commits a single position per partition, meaning "everything before
this is done". So the committable position is the lowest offset still in
flight, or one past the highest started offset when none is. An offset is
marked finished only after its verdict or dead letter has been published and
flushed; a crash therefore redelivers at most the unfinished tail.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import NamedTuple


class Partition(NamedTuple):
    topic: str
    partition: int


class _PartitionState:
    __slots__ = ("blocked", "committed", "in_flight", "next_offset")

    def __init__(self) -> None:
        self.in_flight: dict[int, float] = {}  # offset → when it started (monotonic)
        self.blocked: set[int] = set()  # no outcome could be published: never committed past
        self.next_offset: int | None = None  # one past the highest offset started
        self.committed: int | None = None  # position last committed

    def position(self) -> int | None:
        held = self.in_flight.keys() | self.blocked
        if held:
            return min(held)
        return self.next_offset


class OffsetTracker:
    """Thread-safe: workers finish offsets, the polling loop starts and commits them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partitions: dict[Partition, _PartitionState] = {}
        self._parked: dict[Partition, _PartitionState] = {}  # revoked, maybe coming back

    def started(self, partition: Partition, offset: int) -> None:
        with self._lock:
            state = self._partitions.setdefault(partition, _PartitionState())
            state.in_flight[offset] = time.monotonic()
            if state.next_offset is None or offset >= state.next_offset:
                state.next_offset = offset + 1

    def finished(self, partition: Partition, offset: int) -> None:
        """Marks `offset` done; unknown partitions (revoked meanwhile) are ignored."""
        with self._lock:
            state = self._partitions.get(partition) or self._parked.get(partition)
            if state is not None:
                state.in_flight.pop(offset, None)

    def block(self, partition: Partition, offset: int) -> None:
        """`offset` will never have a published outcome: commits stop before it, for good.

        It no longer counts as in flight (it holds no worker), but the
        partition's position stays on it while this member has the partition;
        the member it moves to (or this one, restarted) tries it again.
        """
        with self._lock:
            state = self._partitions.get(partition) or self._parked.get(partition)
            if state is not None:
                state.in_flight.pop(offset, None)
                state.blocked.add(offset)

    def blocked(self) -> dict[Partition, int]:
        """The lowest blocked offset of every assigned partition that has one."""
        with self._lock:
            return {p: min(s.blocked) for p, s in self._partitions.items() if s.blocked}

    def stuck(self, older_than_s: float) -> dict[Partition, int]:
        """Assigned partitions whose commits wait on one offset in flight for over `older_than_s`.

        (Every step of screening is bounded, so an offset held that long means a
        bug or an outage; readiness says so.)
        """
        now = time.monotonic()
        with self._lock:
            stuck = {}
            for partition, state in self._partitions.items():
                if state.in_flight:
                    lowest = min(state.in_flight)
                    if now - state.in_flight[lowest] > older_than_s:
                        stuck[partition] = lowest
            return stuck

    def committable(self) -> dict[Partition, int]:
        """Positions that moved past the last commit, per partition still assigned."""
        with self._lock:
            positions = {}
            for partition, state in self._partitions.items():
                position = state.position()
                if position is not None and position != state.committed:
                    positions[partition] = position
            return positions

    def committed(self, positions: dict[Partition, int]) -> None:
        with self._lock:
            for partition, position in positions.items():
                state = self._partitions.get(partition)
                if state is not None:
                    state.committed = position

    def revoke(self, partitions: Iterable[Partition]) -> None:
        """Partitions taken away by a rebalance: no longer committed, kept until `assign`.

        An eager rebalance revokes every partition and usually hands most of them
        straight back; their finished-but-uncommitted work must not be forgotten.
        """
        with self._lock:
            for partition in partitions:
                state = self._partitions.pop(partition, None)
                if state is not None:
                    self._parked[partition] = state

    def assign(self, partitions: Iterable[Partition]) -> None:
        """The new assignment: partitions that came back resume, the others are forgotten."""
        with self._lock:
            for partition in partitions:
                state = self._parked.pop(partition, None)
                if state is not None:
                    self._partitions[partition] = state
            self._parked.clear()

    def in_flight(self) -> int:
        with self._lock:
            states = [*self._partitions.values(), *self._parked.values()]
            return sum(len(state.in_flight) for state in states)

    def in_flight_of(self, partition: Partition) -> int:
        with self._lock:
            state = self._partitions.get(partition)
            return len(state.in_flight) if state else 0
