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
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.record.util import calc_crc32c
from kafka.structs import OffsetAndMetadata

from consumer.broker import _LenientPartitionRecords, _NotUtf8, _Unreadable
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


# -- the reader alone, on batches built here (no broker) ------------------------------------

UPLOADS_0 = TopicPartition("uploads", 0)
Record = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]


def batch(
    records: Sequence[Record], base_offset: int = 0, *, compression: int = 0, codec: int = 0
) -> bytes:
    """A v2 record batch as a producer writes it (`codec`: compression bits claimed, not used)."""
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=compression, is_transactional=False, producer_id=-1,
        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20,
    )  # fmt: skip
    for delta, (key, value, headers) in enumerate(records):
        builder.append(delta, timestamp=None, key=key, value=value, headers=list(headers))
    data = builder.build()
    struct.pack_into(">q", data, 0, base_offset)  # the broker's part; not under the CRC
    if codec:
        offset = DefaultRecordBatch.ATTRIBUTES_OFFSET
        attributes = struct.unpack_from(">h", data, offset)[0]
        struct.pack_into(">h", data, offset, attributes | codec)
        crc = calc_crc32c(memoryview(data)[offset:])
        struct.pack_into(">I", data, DefaultRecordBatch.CRC_OFFSET, crc)
    return bytes(data)


def reader(data: bytes, fetch_offset: int = 0) -> Any:
    """What the source's consumer reads a fetched partition with."""
    return _LenientPartitionRecords(fetch_offset, UPLOADS_0, MemoryRecords(data))


@pytest.mark.parametrize("compression", [0, DefaultRecordBatch.CODEC_GZIP], ids=["plain", "gzip"])
def test_the_reader_reads_header_keys_that_are_not_utf8_with_escapes_anywhere_in_a_batch(
    compression: int,
) -> None:
    data = batch([
        (b"k0", b"first", [("origin", b"t")]),
        (b"k1", b"odd", [raw_header(NOT_UTF8, b"h"), ("origin", b"t"), raw_header(b"ok\xe9", b"")]),
        (b"k2", b"last", []),
    ], compression=compression)  # fmt: skip

    records = reader(data).take()

    assert [(r.offset, r.key, r.value) for r in records] == [
        (0, b"k0", b"first"), (1, b"k1", b"odd"), (2, b"k2", b"last")]  # fmt: skip
    assert records[1].headers == [(AS_READ, b"h"), ("origin", b"t"), ("ok\\xe9", b"")]
    assert [type(name) for name, _ in records[1].headers] == [_NotUtf8, str, _NotUtf8]
    # Fetched from the middle of the batch, the odd record is read (and dropped) first.
    assert [r.offset for r in reader(data, fetch_offset=2).take()] == [2]


def test_the_reader_says_which_partition_cannot_be_read_and_where_the_bad_batch_ends() -> None:
    good = batch([(b"k0", b"good", [])])
    corrupt = bytearray(batch([(b"k1", b"one", []), (b"k2", b"two", [])], base_offset=1))
    corrupt[-1] ^= 0xFF  # a flipped bit in the last record: the CRC no longer matches
    records = reader(good + bytes(corrupt))

    assert [r.value for r in records.take()] == [b"good"]
    with pytest.raises(_Unreadable) as raised:
        records.take()

    assert (raised.value.partition, raised.value.next_offset) == (UPLOADS_0, 3)
    assert raised.value.reason == "corrupt_record" and "crc" in raised.value.error


def test_the_reader_says_so_when_a_batch_is_compressed_with_a_codec_it_does_not_know() -> None:
    with pytest.raises(_Unreadable) as raised:
        reader(batch([(b"k0", b"packed", [])], base_offset=7, codec=0x07)).take()

    assert (raised.value.next_offset, raised.value.reason) == (8, "unsupported_codec")
