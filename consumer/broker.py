"""Kafka at the edge: the upload source and the event sink, real and in memory.

The service talks to two small ports: `UploadSource` (poll, pause, commit)
and `EventSink` (send and wait for the broker's acknowledgement). The Kafka
adapters are thin; the in-memory twins let the service's logic be specified
without a broker, and the integration tests use the real ones.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kafka_errors
from kafka.consumer.fetcher import ConsumerRecord, Fetcher
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CorruptRecordError, KafkaError, KafkaTimeoutError, UnsupportedCodecError
from kafka.record.default_records import DefaultRecord, DefaultRecordBatch
from kafka.record.legacy_records import LegacyRecordBatch
from kafka.record.util import decode_varint
from kafka.structs import OffsetAndMetadata

from consumer.group_join import keep_finished_joins
from consumer.offsets import Partition
from consumer.settings import KafkaSettings

Headers = list[tuple[str, bytes]]
log = structlog.get_logger("deepscreen")

# How long closing the producer may take to send what it still holds; by then every
# outcome has been acknowledged (`send` waits) or handed back, so little is left.
# kafka-python's `close(timeout)` flushes, then joins its sender, each up to `timeout`:
# twice this at most, within the producer's share of `service.SHUTDOWN_TEARDOWN_S`.
PRODUCER_CLOSE_TIMEOUT_S = 0.5
# How long closing the consumer may take to leave the group (its share likewise).
CONSUMER_CLOSE_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)

    @property
    def where(self) -> Partition:
        return Partition(self.topic, self.partition)


@dataclass(frozen=True)
class Skipped(Message):
    """Not a record: `count` offsets the client could not read, the last one `offset`.

    The source has sought past them and logged where they were; there is nothing
    to screen or dead-letter, but their offsets are done, so commits move on.
    """

    reason: str = "corrupt_record"
    count: int = 1


class RebalanceListener(Protocol):
    """Told when the group moves partitions; called from within `poll`."""

    def on_partitions_revoked(self, revoked: set[Partition]) -> None: ...

    def on_partitions_assigned(self, assigned: set[Partition]) -> None: ...


class UploadSource(Protocol):
    def subscribe(self, listener: RebalanceListener) -> None:
        """Join the group on the uploads topic; `listener` hears of every rebalance."""
        ...

    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        """Up to `max_records` records; a `Skipped` among them stands for unreadable ones."""
        ...

    def commit(self, positions: dict[Partition, int]) -> None: ...

    def commit_nowait(self, positions: dict[Partition, int]) -> None:
        """Commit without waiting (safe inside a rebalance callback); errors are logged."""
        ...

    def assignment(self) -> set[Partition]: ...

    def pause(self, partitions: Iterable[Partition]) -> None: ...

    def resume(self, partitions: Iterable[Partition]) -> None: ...

    def lag(self) -> dict[Partition, int]: ...

    def reachable(self) -> bool: ...

    def close(self) -> None: ...


class PublishError(Exception):
    """A send the broker did not take; `retriable` False: the same send can never succeed.

    (An oversized record, a topic we may not write, a serialisation error:
    kafka-python marks its errors so; anything else is treated alike.)
    """

    def __init__(self, error_class: str, detail: str, *, retriable: bool) -> None:
        super().__init__(f"{error_class}: {detail}")
        self.error_class = error_class
        self.detail = detail
        self.retriable = retriable


class EventSink(Protocol):
    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> None:
        """Publish and wait for the broker's acknowledgement (raises when it fails)."""
        ...

    def send_async(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers,
        acknowledged: Callable[[], None],
        failed: Callable[[PublishError], None],
    ) -> None:
        """Publish without waiting: exactly one of `acknowledged` and `failed` is called
        later, on the client's thread (or now, on this one, when the client refuses the
        record at once). Callbacks must be quick; the producer batches what is queued."""
        ...

    def flush(self, timeout_s: float) -> None: ...

    def publishing(self) -> bool:
        """False from a failed send until one succeeds again (for readiness)."""
        ...

    def close(self) -> None: ...


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """What every kafka-python client of the service is made with: the security options, and
    no client metrics (nothing reads them: the service's own are in `consumer.metrics`;
    recording them took about 5 % of the service's CPU on the cache-hit path, profiled)."""
    return {**security_options(settings), "metrics_enabled": False}


def security_options(settings: KafkaSettings) -> dict[str, Any]:
    """kafka-python's SASL/SSL options from the settings (none for PLAINTEXT)."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password is not None:
            options["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    if settings.security_protocol.endswith("SSL"):
        options["ssl_cafile"] = str(settings.ssl_cafile) if settings.ssl_cafile else None
        options["ssl_certfile"] = str(settings.ssl_certfile) if settings.ssl_certfile else None
        options["ssl_keyfile"] = str(settings.ssl_keyfile) if settings.ssl_keyfile else None
        if settings.ssl_password is not None:
            options["ssl_password"] = settings.ssl_password.get_secret_value()
    return options


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, listener: RebalanceListener) -> None:
        self._listener = listener

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self._listener.on_partitions_revoked({Partition(tp.topic, tp.partition) for tp in revoked})

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._listener.on_partitions_assigned(
            {Partition(tp.topic, tp.partition) for tp in assigned}
        )


# -- records kafka-python will not read ------------------------------------------------
#
# kafka-python parses each fetched partition lazily, inside `poll`, and one record
# it cannot parse makes every `poll` raise (a bare `CorruptRecordError`, with no
# partition or offset) without moving past it: a crash loop any producer can cause.
# Its fetcher builds each partition's reader as `self.PartitionRecords`; the source
# puts `_LenientPartitionRecords` there, which
#
# - reads a header key that is not UTF-8 (Kafka does not check them; the Java
#   client decodes them leniently) with backslash escapes, so the record is a
#   normal message and gets its outcome by the usual rules;
# - turns any other failure to read a batch (a CRC mismatch, a broken structure, a
#   codec this build lacks) into `_Unreadable`, naming the partition and where the
#   batch ends, so that `poll` can seek past it.


class _NotUtf8(str):
    """A header key that was not UTF-8, read with backslash escapes (b"\\xff" as "\\\\xff")."""

    __slots__ = ()


class _LenientBatch(DefaultRecordBatch):  # type: ignore[misc]
    """A v2 record batch whose header keys need not be UTF-8.

    kafka-python reads each record as usual; only one it refuses for a header key
    is read again here, its keys decoded with backslash escapes.
    """

    __slots__ = ()  # none of its own: a `DefaultRecordBatch` can become one

    def __next__(self) -> DefaultRecord:
        try:
            return super().__next__()
        except CorruptRecordError as error:
            if self.is_control_batch or not isinstance(error.__context__, UnicodeDecodeError):
                raise
            try:
                return _read_leniently(self)
            except (ValueError, IndexError) as again:
                raise CorruptRecordError(f"Found invalid record structure: {again!r}") from again


def _read_leniently(batch: Any) -> DefaultRecord:
    """The record at `batch`'s read position, read as kafka-python's `_read_msg` does."""
    buffer, pos = batch._buffer, batch._pos
    length, pos = decode_varint(buffer, pos)
    end = pos + length
    _attributes, pos = decode_varint(buffer, pos)
    timestamp_delta, pos = decode_varint(buffer, pos)
    offset_delta, pos = decode_varint(buffer, pos)
    key, pos = _read_bytes(buffer, pos)
    value, pos = _read_bytes(buffer, pos)
    count, pos = decode_varint(buffer, pos)
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(count):
        name, pos = _read_bytes(buffer, pos)
        header_value, pos = _read_bytes(buffer, pos)
        if name is None:
            raise ValueError("a header key is null")
        try:
            headers.append((name.decode("utf-8"), header_value))
        except UnicodeDecodeError:
            headers.append((_NotUtf8(name.decode("utf-8", "backslashreplace")), header_value))
    if pos != end:
        raise ValueError(f"record of {length} bytes, {pos - end + length} read")
    batch._pos = pos
    batch._next_record_index += 1
    if batch.timestamp_type == batch.LOG_APPEND_TIME:
        timestamp = batch.max_timestamp
    else:
        timestamp = batch.first_timestamp + timestamp_delta
    return DefaultRecord(
        length, batch.base_offset + offset_delta, timestamp, batch.timestamp_type,
        key, value, headers,
    )  # fmt: skip


def _read_bytes(buffer: bytearray, pos: int) -> tuple[bytes | None, int]:
    """A varint-length-prefixed field of a v2 record (-1: null)."""
    size, pos = decode_varint(buffer, pos)
    if size < 0:
        return None, pos
    if pos + size > len(buffer):
        raise IndexError(f"a field of {size} bytes runs past the batch")
    return bytes(buffer[pos : pos + size]), pos + size


class _LenientRecords:
    """The batches of one fetched partition, v2 ones read by `_LenientBatch`."""

    def __init__(self, records: Any) -> None:
        self._records = records
        self.current: Any = None  # the batch being read

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        if type(batch) is DefaultRecordBatch:
            batch.__class__ = _LenientBatch  # the same batch (same slots), read leniently
        self.current = batch
        return batch


class _Unreadable(Exception):
    """Records of `partition` the client cannot read, up to `next_offset` (None: unknown)."""

    def __init__(self, partition: TopicPartition, batch: Any, error: Exception) -> None:
        super().__init__(f"{partition}: {type(error).__name__}: {error}")
        self.partition = partition
        self.next_offset: int | None = None
        if isinstance(batch, DefaultRecordBatch):
            self.next_offset = batch.next_offset
        elif isinstance(batch, LegacyRecordBatch):  # its offset is its last record's
            self.next_offset = batch.base_offset + 1
        self.reason = (
            "unsupported_codec" if isinstance(error, UnsupportedCodecError) else "corrupt_record"
        )
        self.error = f"{type(error).__name__}: {error}"


class _LenientPartitionRecords(Fetcher.PartitionRecords):  # type: ignore[misc]
    """kafka-python's reader of a fetched partition, with `_LenientRecords` under it."""

    def _unpack_records(
        self, tp: TopicPartition, records: Any, key_deserializer: Any, value_deserializer: Any
    ) -> Iterator[ConsumerRecord]:
        batches = _LenientRecords(records)
        try:
            yield from super()._unpack_records(tp, batches, key_deserializer, value_deserializer)
        except (CorruptRecordError, UnsupportedCodecError) as error:
            raise _Unreadable(tp, batches.current, error) from error


def _message(record: ConsumerRecord) -> Message:
    headers = record.headers or []
    odd = [name for name, _ in headers if isinstance(name, _NotUtf8)]
    if odd:
        log.warning(
            "header_key_not_utf8", topic=record.topic, partition=record.partition,
            offset=record.offset, keys=odd,
        )  # fmt: skip
    return Message(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=[(str(name), value or b"") for name, value in headers],
    )


class KafkaUploadSource:
    """A consumer-group member on the uploads topic; auto-commit off, commits explicit.

    Made without a subscription; `subscribe` joins the group (at the first `poll`).
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self._topic = settings.uploads_topic
        self._consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers.split(","),
            group_id=settings.group_id,
            client_id=settings.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.max_poll_records,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            **client_options(settings),
        )
        # kafka-python has no option for this; its fetcher reads through this class.
        self._consumer._fetcher.PartitionRecords = _LenientPartitionRecords
        keep_finished_joins(self._consumer)
        self._poll_failing = False  # the last poll raised (logged once per outage)

    def subscribe(self, listener: RebalanceListener) -> None:
        self._consumer.subscribe([self._topic], listener=_Rebalance(listener))

    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        try:
            batches = self._consumer.poll(
                timeout_ms=int(timeout_s * 1000), max_records=max(1, max_records)
            )
        except _Unreadable as unreadable:
            return self._skip(unreadable)
        except KafkaError as error:
            if not error.retriable:
                raise
            # The broker is away (kafka-python raises its connection errors out of poll
            # while it looks for the group coordinator): nothing to take this time.
            if not self._poll_failing:
                log.warning("poll_failed", error=f"{type(error).__name__}: {error}",
                            effect="polling goes on until the broker answers")  # fmt: skip
            self._poll_failing = True
            return []
        if self._poll_failing:
            log.info("poll_recovered")
            self._poll_failing = False
        return [_message(record) for records in batches.values() for record in records]

    def _skip(self, unreadable: _Unreadable) -> list[Message]:
        """Seek past what cannot be read (to the end of its batch), logged; a `Skipped` says so.

        The records before it were delivered by earlier polls, so the partition's
        position is the first offset skipped.
        """
        tp = unreadable.partition
        if tp not in self._consumer.assignment():
            return []  # taken away meanwhile: its next owner meets it
        first = self._consumer.position(tp)
        resume = unreadable.next_offset
        if resume is None or resume <= first:
            resume = first + 1
        self._consumer.seek(tp, resume)
        log.error(
            "record_skipped", topic=tp.topic, partition=tp.partition, offset=first,
            next_offset=resume, reason=unreadable.reason, error=unreadable.error,
        )  # fmt: skip
        return [
            Skipped(
                tp.topic, tp.partition, resume - 1, None, None,
                reason=unreadable.reason, count=resume - first,
            )
        ]  # fmt: skip

    def commit(self, positions: dict[Partition, int]) -> None:
        if positions:
            self._consumer.commit(
                {
                    TopicPartition(p.topic, p.partition): OffsetAndMetadata(offset, "", -1)
                    for p, offset in positions.items()
                }
            )

    def commit_nowait(self, positions: dict[Partition, int]) -> None:
        # kafka-python 3 runs rebalance callbacks on its IO thread, where a blocking
        # commit raises; the asynchronous one is sent before the partitions move.
        if positions:
            self._consumer.commit_async(
                {
                    TopicPartition(p.topic, p.partition): OffsetAndMetadata(offset, "", -1)
                    for p, offset in positions.items()
                },
                callback=_log_commit_failure,
            )

    def assignment(self) -> set[Partition]:
        return {Partition(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def pause(self, partitions: Iterable[Partition]) -> None:
        self._consumer.pause(*(TopicPartition(p.topic, p.partition) for p in partitions))

    def resume(self, partitions: Iterable[Partition]) -> None:
        self._consumer.resume(*(TopicPartition(p.topic, p.partition) for p in partitions))

    def lag(self) -> dict[Partition, int]:
        assigned = list(self._consumer.assignment())
        if not assigned:
            return {}
        ends = self._consumer.end_offsets(assigned)
        return {
            Partition(tp.topic, tp.partition): max(0, ends[tp] - self._consumer.position(tp))
            for tp in assigned
            if tp in ends
        }

    def reachable(self) -> bool:
        """Connected to at least one broker of the cluster.

        `bootstrap_connected()` goes false once kafka-python drops the bootstrap
        connection, so look at the cluster's brokers instead (kafka-python has no
        public call for this).
        """
        client = self._consumer._client
        return any(client.connected(broker.node_id) for broker in client.cluster.brokers())

    def close(self) -> None:
        self._consumer.close(autocommit=False, timeout_ms=int(CONSUMER_CLOSE_TIMEOUT_S * 1000))


def _log_commit_failure(offsets: object, response: object) -> None:
    if isinstance(response, Exception):
        log.warning("commit_failed", error=f"{type(response).__name__}: {response}")


# Errors about the record itself: the same record fails the same way on any producer.
_RECORD_ERRORS: tuple[type[KafkaError], ...] = tuple(
    found
    for name in ("MessageSizeTooLargeError", "RecordListTooLargeError", "InvalidTopicError",
                 "TopicAuthorizationFailedError", "InvalidRecordError", "CorruptRecordError")
    if isinstance(found := getattr(kafka_errors, name, None), type)
    and issubclass(found, KafkaError)
)  # fmt: skip
# What a send may raise: the broker's answer, or the client refusing the record outright.
_SEND_ERRORS = (KafkaError, TypeError, ValueError, AssertionError)


class KafkaEventSink:
    """An idempotent producer with `acks=all`; `send` returns once the broker has the event,
    `send_async` at once (the producer batches, the callbacks say how it went).

    kafka-python's idempotent producer can end in a fatal state it never leaves
    (after an outage, the broker answers its producer-id request with an error
    and it aborts every batch from then on). Such a producer is replaced by a
    new one, and the send is reported as retriable, so the caller sends it again
    (with the same event id) through the new producer. An error about the
    record itself (too large, a topic we may not write) is not retriable: a new
    producer would fail it the same way. `publishing()` is False from a failed
    send until the next one succeeds.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._ack_timeout_s = settings.producer_ack_timeout_s
        self._lock = threading.Lock()
        self._producer = self._new_producer()
        self._publishing = True
        self._closed = False
        self.rebuilds = 0

    def _new_producer(self) -> KafkaProducer:
        settings = self._settings
        return KafkaProducer(
            bootstrap_servers=settings.bootstrap_servers.split(","),
            client_id=f"{settings.client_id}-producer",
            acks="all",
            enable_idempotence=True,
            linger_ms=settings.producer_linger_ms,
            batch_size=settings.producer_batch_bytes,
            retries=settings.producer_retries,
            max_request_size=settings.producer_max_request_bytes,
            **client_options(settings),
        )

    def publishing(self) -> bool:
        return self._publishing

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> None:
        producer = self._producer
        try:
            future = producer.send(topic, key=key, value=value, headers=headers)
            future.get(timeout=self._ack_timeout_s)
        except _SEND_ERRORS as error:
            raise self._publish_error(producer, error) from error
        self._publishing = True

    def send_async(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers,
        acknowledged: Callable[[], None],
        failed: Callable[[PublishError], None],
    ) -> None:
        producer = self._producer
        try:
            future = producer.send(topic, key=key, value=value, headers=headers)
        except _SEND_ERRORS as error:
            failed(self._publish_error(producer, error))
            return

        def on_ack(_metadata: object) -> None:
            self._publishing = True
            acknowledged()

        def on_error(error: Exception) -> None:
            failed(self._publish_error(producer, error))

        future.add_callback(on_ack)
        future.add_errback(on_error)

    def _publish_error(self, producer: KafkaProducer, error: Exception) -> PublishError:
        """What a failed send means for the caller; a producer that has given up is replaced."""
        name = type(error).__name__
        if isinstance(error, _RECORD_ERRORS):
            return PublishError(name, str(error), retriable=False)
        if isinstance(error, KafkaError):
            self._publishing = False
            retriable = bool(error.retriable)
            if not retriable or _in_fatal_state(producer):
                self._replace(producer, error)
                retriable = True  # the new producer may well take it
            return PublishError(name, str(error), retriable=retriable)
        return PublishError(name, str(error), retriable=False)  # the client refused the record

    def _replace(self, failed: KafkaProducer, error: Exception) -> None:
        """A new producer in place of `failed` (once, however many workers saw it fail)."""
        with self._lock:
            if self._producer is not failed or self._closed:
                return
            self._producer = self._new_producer()
            self.rebuilds += 1
        log.warning("producer_rebuilt", error=f"{type(error).__name__}: {error}",
                    rebuilds=self.rebuilds)  # fmt: skip
        # Off the caller's thread: closing waits for the failed producer's sender to stop.
        threading.Thread(
            target=close_producer, args=(failed, PRODUCER_CLOSE_TIMEOUT_S), daemon=True
        ).start()

    def flush(self, timeout_s: float) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self) -> None:
        with self._lock:
            self._closed = True  # a send failing after this is not a reason for a new producer
        close_producer(self._producer, PRODUCER_CLOSE_TIMEOUT_S)


def close_producer(producer: KafkaProducer, timeout_s: float) -> None:
    """Close `producer`, stopping its sender thread even when records are still undelivered.

    kafka-python's `close` flushes first and raises `KafkaTimeoutError` when the flush
    times out, before it stops the sender: a producer closed during an outage would
    keep a thread retrying its records for as long as the process lives. Here the sender
    is then stopped without sending, which fails whatever it still held.
    """
    try:
        producer.close(timeout=timeout_s)
    except KafkaTimeoutError:
        sender = producer._sender
        sender.force_close()
        sender.join(timeout_s)
        with contextlib.suppress(KafkaTimeoutError):
            producer.close(timeout=0)


def _in_fatal_state(producer: KafkaProducer) -> bool:
    """Whether kafka-python's producer has given up for good (its idempotence state failed)."""
    manager = getattr(producer, "_transaction_manager", None)
    return bool(manager is not None and manager.has_fatal_error())


class InMemoryUploadSource:
    """`UploadSource` over a list of messages: one consumer, assigned every partition.

    `rebalance(assigned)` stands for an eager rebalance, as kafka-python does them:
    at the next `poll` the listener hears that every partition is revoked, then
    that `assigned` is; pauses are forgotten, and only `assigned` is delivered
    from then on.
    """

    def __init__(self, messages: Iterable[Message]) -> None:
        self._pending = list(messages)
        self._lock = threading.Lock()
        self._assigned = {m.where for m in self._pending}
        self._paused: set[Partition] = set()
        self._listener: RebalanceListener | None = None
        self._rebalances: list[set[Partition]] = []
        self._joined = False
        self.commits: list[dict[Partition, int]] = []
        self.closed = False

    def subscribe(self, listener: RebalanceListener) -> None:
        self._listener = listener

    def rebalance(self, assigned: Iterable[Partition]) -> None:
        with self._lock:
            self._rebalances.append(set(assigned))

    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        self._apply_rebalances()
        with self._lock:
            ready = [
                m
                for m in self._pending
                if m.where in self._assigned and m.where not in self._paused
            ][:max_records]
            for message in ready:
                self._pending.remove(message)
        if not ready:
            threading.Event().wait(min(timeout_s, 0.01))
        return ready

    def _apply_rebalances(self) -> None:
        """The first join, then each eager rebalance asked for (callbacks outside the lock)."""
        listener = self._listener
        if listener is None:
            return
        if not self._joined:
            self._joined = True
            listener.on_partitions_assigned(self.assignment())
        while True:
            with self._lock:
                if not self._rebalances:
                    return
                assigned = self._rebalances.pop(0)
                revoked = set(self._assigned)
            listener.on_partitions_revoked(revoked)
            with self._lock:
                self._assigned, self._paused = set(assigned), set()
            listener.on_partitions_assigned(assigned)

    def commit(self, positions: dict[Partition, int]) -> None:
        if positions:
            self.commits.append(dict(positions))

    def commit_nowait(self, positions: dict[Partition, int]) -> None:
        self.commit(positions)

    def committed(self) -> dict[Partition, int]:
        merged: dict[Partition, int] = {}
        for commit in self.commits:
            merged.update(commit)
        return merged

    def assignment(self) -> set[Partition]:
        with self._lock:
            return set(self._assigned)

    def paused(self) -> set[Partition]:
        with self._lock:
            return set(self._paused)

    def pause(self, partitions: Iterable[Partition]) -> None:
        with self._lock:
            self._paused |= set(partitions) & self._assigned

    def resume(self, partitions: Iterable[Partition]) -> None:
        with self._lock:
            self._paused -= set(partitions)

    def lag(self) -> dict[Partition, int]:
        with self._lock:
            counts: dict[Partition, int] = {}
            for message in self._pending:
                counts[message.where] = counts.get(message.where, 0) + 1
            return counts

    def reachable(self) -> bool:
        return not self.closed

    def close(self) -> None:
        self.closed = True


@dataclass(frozen=True)
class SentEvent:
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers


class InMemoryEventSink:
    """`EventSink` that records what was sent (tests).

    Like a broker it can refuse: `fail_next` sends fail as an outage does
    (retriable), a record over `max_request_bytes` or one for a topic in
    `refused_topics` fails as it always would (not retriable).
    """

    def __init__(self, max_request_bytes: int | None = None) -> None:
        self._lock = threading.Lock()
        self.sent: list[SentEvent] = []
        self.fail_next = 0
        self.max_request_bytes = max_request_bytes
        self.refused_topics: set[str] = set()

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> None:
        size = len(key or b"") + len(value) + sum(len(n.encode()) + len(v) for n, v in headers)
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                raise PublishError("KafkaTimeoutError", "broker unavailable", retriable=True)
            if self.max_request_bytes is not None and size > self.max_request_bytes:
                raise PublishError(
                    "MessageSizeTooLargeError", f"{size} bytes > {self.max_request_bytes}",
                    retriable=False,
                )  # fmt: skip
            if topic in self.refused_topics:
                raise PublishError("TopicAuthorizationFailedError", topic, retriable=False)
            self.sent.append(SentEvent(topic, key, value, list(headers)))

    def send_async(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers,
        acknowledged: Callable[[], None],
        failed: Callable[[PublishError], None],
    ) -> None:
        """`send`, its outcome reported to the callbacks at once (a broker that answers at once)."""
        try:
            self.send(topic, key, value, headers)
        except PublishError as error:
            failed(error)
            return
        acknowledged()

    def publishing(self) -> bool:
        with self._lock:
            return self.fail_next == 0

    def on(self, topic: str) -> list[SentEvent]:
        with self._lock:
            return [event for event in self.sent if event.topic == topic]

    def flush(self, timeout_s: float) -> None:
        pass

    def close(self) -> None:
        pass
