"""A group join that finishes while no poll waits for it gives the member its partitions.

Against a real broker (Tansu holds every join ~3 s). The source is polled the
way a busy service polls it: 0.2 s at a time, with seconds of work in between,
so each join round ends between two polls. kafka-python 3.0.12 alone never
assigns anything here (see consumer/group_join.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from consumer.broker import KafkaUploadSource
from consumer.offsets import Partition
from consumer.settings import KafkaSettings
from tests.support.broker import TansuBroker

pytestmark = pytest.mark.timeout(180)

POLL_S = 0.2
WORK_BETWEEN_POLLS_S = 4.0  # longer than the broker holds a join


class HeardRebalances:
    def __init__(self) -> None:
        self.assigned: list[set[Partition]] = []
        self.revoked: list[set[Partition]] = []

    def on_partitions_revoked(self, revoked: set[Partition]) -> None:
        self.revoked.append(set(revoked))

    def on_partitions_assigned(self, assigned: set[Partition]) -> None:
        self.assigned.append(set(assigned))


@pytest.fixture
def own_broker() -> Iterator[TansuBroker]:
    """A broker of this test's own: it may be restarted."""
    with TansuBroker() as running:
        yield running


def source_on(broker: TansuBroker, topic: str) -> KafkaUploadSource:
    return KafkaUploadSource(
        KafkaSettings(
            bootstrap_servers=broker.bootstrap,
            uploads_topic=topic,
            group_id=f"group-{topic}",
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            max_poll_interval_ms=30000,
        )
    )


def poll_like_a_busy_service(
    source: KafkaUploadSource, until: set[Partition], timeout_s: float
) -> set[Partition]:
    deadline = time.monotonic() + timeout_s
    while source.assignment() != until and time.monotonic() < deadline:
        source.poll(POLL_S, 16)
        if source.assignment() != until:
            time.sleep(WORK_BETWEEN_POLLS_S)
    return source.assignment()


def partitions(topic: str, count: int) -> set[Partition]:
    return {Partition(topic, p) for p in range(count)}


def test_a_first_join_that_ends_between_polls_assigns_the_partitions(
    own_broker: TansuBroker,
) -> None:
    own_broker.create_topics({"uploads-first": 2})
    source = source_on(own_broker, "uploads-first")
    heard = HeardRebalances()
    source.subscribe(heard)
    try:
        expected = partitions("uploads-first", 2)
        assert poll_like_a_busy_service(source, until=expected, timeout_s=40) == expected
        assert heard.assigned == [expected]
    finally:
        source.close()


def test_after_the_topic_comes_back_with_more_partitions_the_leader_takes_them_all(
    own_broker: TansuBroker,
) -> None:
    """A memory-storage broker restarted: the topic is made again with 4 partitions, not 1.

    The member sees the metadata change and rejoins as the group's leader; its
    own assignment step clears kafka-python's "rejoin needed" before the round ends.
    """
    broker = own_broker
    broker.create_topics({"uploads-grown": 1})
    source = source_on(broker, "uploads-grown")
    heard = HeardRebalances()
    source.subscribe(heard)
    try:
        deadline = time.monotonic() + 30
        while not source.assignment() and time.monotonic() < deadline:
            source.poll(POLL_S, 16)  # the first join, polled throughout
        assert source.assignment() == partitions("uploads-grown", 1)

        port = broker.port
        broker.stop()
        broker.start(port)
        broker.create_topics({"uploads-grown": 4})  # (or the member's metadata request made it)

        expected = partitions("uploads-grown", 4)
        assert poll_like_a_busy_service(source, until=expected, timeout_s=60) == expected
        assert heard.assigned[-1] == expected
    finally:
        source.close()
