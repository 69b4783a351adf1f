"""Records the Kafka client cannot read as they are: the service goes on, and commits too.

kafka-python refuses a record whose header key is not UTF-8 (any producer may
write one; the Java client reads it) and a batch that fails its CRC, and it
refuses them out of `poll`, on every restart: a crash loop. Here both are
written to the real broker between good uploads: the odd header key becomes a
normal message (its outcome follows the usual rules), the corrupt batch is
skipped, logged and counted, and the group's commits reach the end of the
partition (counted from where the records were written: Tansu under-reports end
offsets for batches).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from tests.integration.conftest import RunningService, Topics, service_settings
from tests.integration.outcomes import Published, file_upload, read
from tests.support.broker import (
    TansuBroker,
    committed_offsets,
    consume_all,
    produce,
    raw_header,
)

pytestmark = pytest.mark.timeout(300)

NOT_UTF8 = b"\xff\xfe-trace"  # what a producer wrote as a header key
AS_READ = "\\xff\\xfe-trace"  # the key as the service reads it (and dead-letters it)


def wait_outcomes(
    broker: TansuBroker, topics: Topics, service: RunningService, expected: int,
    timeout_s: float = 120,
) -> Published:  # fmt: skip
    """What was published once `expected` outcomes are; fails at once if the service died."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert service.thread.is_alive(), "the service died"
        published = read(broker, topics, expected)
        if published.count >= expected:
            return published
        assert time.monotonic() < deadline, f"{published.count} outcomes of {expected}"
        time.sleep(0.5)


def wait_committed_to(broker: TansuBroker, topics: Topics, end: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while (committed := committed_offsets(broker.bootstrap, topics.group, topics.uploads)) != {
        0: end
    }:
        assert time.monotonic() < deadline, f"commits stuck at {committed}, expected {{0: {end}}}"
        time.sleep(0.3)


def rewind_group(broker: TansuBroker, topics: Topics, offset: int) -> None:
    """Commit `offset` for the group on partition 0, as if a crash had come before the rest."""
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=topics.group, enable_auto_commit=False
    )
    try:
        partition = TopicPartition(topics.uploads, 0)
        consumer.assign([partition])
        consumer.commit({partition: OffsetAndMetadata(offset, "", -1)})
    finally:
        consumer.close(autocommit=False)


def test_a_header_key_that_is_not_utf8_gets_its_record_an_outcome_and_the_consumer_goes_on(
    broker: TansuBroker, media: Path, reference_model: Path, start_service: Any
) -> None:
    topics = Topics.fresh(partitions=1).create(broker)
    _, odd_upload, _ = file_upload("odd-header", media / "not_a_video.mp4")
    placed = produce(broker.bootstrap, topics.uploads, [  # one batch: the odd ones mid-batch
        file_upload("before", media / "no_face.mp4"),
        (b"odd-garbage", b"{not json", [raw_header(NOT_UTF8, b"h"), ("origin", b"test")]),
        (b"odd-header", odd_upload, [raw_header(NOT_UTF8, b"h")]),
        file_upload("after", media / "no_face.mp4"),
    ])  # fmt: skip
    assert placed == [(0, 0), (0, 1), (0, 2), (0, 3)]
    settings = service_settings(broker, topics, media, reference_model)
    first = start_service(settings)

    published = wait_outcomes(broker, topics, first, expected=4)

    assert sorted(v.data.video_id for v in published.verdicts) == ["after", "before", "odd-header"]
    [(letter, value)] = published.dead_letters
    assert (letter.reason, letter.offset, value) == ("not_json", 1, b"{not json")
    [dead] = consume_all(broker.bootstrap, topics.dlq, 1)
    assert (AS_READ, b"h") in dead.headers and ("origin", b"test") in dead.headers
    wait_committed_to(broker, topics, 4)
    assert first.thread.is_alive()
    first.stop()

    # A restart that has to read the odd records again (from the middle of their
    # batch) does not die on them either, and commits past them again.
    rewind_group(broker, topics, 1)
    second = start_service(settings)
    published = wait_outcomes(broker, topics, second, expected=4 + 3)
    assert sorted(v.data.video_id for v in published.verdicts) == [
        "after", "after", "before", "odd-header", "odd-header"]  # fmt: skip
    assert [letter.offset for letter, _ in published.dead_letters] == [1, 1]
    wait_committed_to(broker, topics, 4)
    assert second.thread.is_alive()


def test_a_batch_that_fails_its_crc_is_skipped_logged_counted_and_committed_past(
    broker: TansuBroker, media: Path, reference_model: Path, start_service: Any
) -> None:
    topics = Topics.fresh(partitions=1).create(broker)
    produce(broker.bootstrap, topics.uploads, [file_upload("before", media / "no_face.mp4")])
    # The broker keeps what it is given: a batch whose CRC is wrong is stored as it is.
    with mock.patch("kafka.record.default_records.calc_crc32c", lambda data: 12345):
        corrupt = produce(broker.bootstrap, topics.uploads, [
            file_upload("corrupt-1", media / "no_face.mp4"),
            (b"corrupt-2", json.dumps({"not": "read"}).encode(), []),
        ])  # fmt: skip
    produce(broker.bootstrap, topics.uploads, [file_upload("after", media / "no_face.mp4")])
    assert corrupt == [(0, 1), (0, 2)]
    service = start_service(service_settings(broker, topics, media, reference_model))

    published = wait_outcomes(broker, topics, service, expected=2)

    assert sorted(v.data.video_id for v in published.verdicts) == ["after", "before"]
    assert published.dead_letters == []
    wait_committed_to(broker, topics, 4)
    skipped = service.app.metrics.registry.get_sample_value(
        "deepscreen_records_skipped_total", {"reason": "corrupt_record"}
    )
    assert skipped == 2
    assert service.thread.is_alive()
