"""A consumer-group join that finishes while no poll waits for it still takes effect.

Why this exists: kafka-python 3 runs a JoinGroup+SyncGroup round as a task on
its IO thread, and a `poll` whose timeout ends first leaves the round in flight
(brokers hold a join for seconds: Tansu ~3 s, Kafka until every member has
rejoined). When the round finishes between two polls, kafka-python 3.0.12
drops its assignment:

* if the rejoin was asked for by an error, the next poll sees a finished task
  and starts another round, which can end between polls again, and so on;
* if it was asked for by a metadata change (the uploads topic recreated, or
  given more partitions), the group leader's own assignment step has already
  cleared `need_rejoin()`, so no poll ever looks at the task again: the member
  holds nothing, with heartbeats off, until it is restarted.

A service that polls every 0.2 s and screens in between meets both. The Java
client keeps a finished join and applies it on the next poll; so does this.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer
from kafka.coordinator.base import MemberState
from kafka.coordinator.consumer import ConsumerCoordinator


class _FinishedJoinKeepingCoordinator(ConsumerCoordinator):  # type: ignore[misc]
    _join_task: Any  # kafka-python's: the Future of the round in flight, or None

    def need_rejoin(self) -> bool:
        # A round in flight, or finished and not yet applied, still has to be taken.
        return self._join_task is not None or bool(super().need_rejoin())

    async def join_group_async(self, timeout_ms: float | None = None) -> bool:
        finished = self._join_task
        if finished is not None and finished.succeeded():
            self._join_task = None
            # What kafka-python does with a round it waited for to the end.
            with self._lock:
                self.rejoining = False
                self.rejoin_needed = False
                self.state = MemberState.STABLE
                self._enable_heartbeat()
            generation = self._generation
            await self._on_join_complete_async(
                generation.generation_id, generation.member_id, generation.protocol,
                finished.value,
            )  # fmt: skip
        # A failed round's error was applied by kafka-python's response handlers
        # (a new member id, a coordinator to find); a new round starts here.
        return bool(await super().join_group_async(timeout_ms))


def keep_finished_joins(consumer: KafkaConsumer) -> None:
    """Make `consumer` (not yet subscribed) apply a group join that finished between polls."""
    coordinator: Any = consumer._coordinator
    if type(coordinator) is not ConsumerCoordinator:
        raise TypeError(f"an unexpected group coordinator: {type(coordinator).__name__}")
    for name in ("_join_task", "rejoining", "_generation", "_on_join_complete_async"):
        if not hasattr(coordinator, name):  # kafka-python changed what this relies on
            raise TypeError(f"kafka-python's ConsumerCoordinator has no {name}")
    coordinator.__class__ = _FinishedJoinKeepingCoordinator
