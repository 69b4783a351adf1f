"""The bank topic: the source of truth for known fakes, written by rulings, read by every replica.

Each record is one bank entry keyed by its id (`BankEntryRecord` JSON); a
record with a null value (a tombstone) removes the entry with that key. No
second database: every replica reads the whole topic from the beginning at
start into its in-memory `Bank`, reports itself caught up (for `/readyz`)
once it has read what the topic held when it started, then tails it, so a
ruling taken on one replica reaches every replica within a poll.

Correct without compaction: records of one key sit in one partition, in the
order they were written, and applying them in that order (a later record
replaces an earlier one, a tombstone deletes) leaves the bank as the last
record of each key says. Compaction (`cleanup.policy=compact`, which the
operator sets on the topic) only bounds how much a new replica reads.

A record this code cannot read (not JSON, not an entry, an id that is not its
key) is skipped and logged: the topic is this service's own, so such a record
is a bug or a newer writer, and holding every replica's bank back for it
would be worse. `KafkaBankWriter`/`KafkaBankLog` are the real adapters;
`InMemoryBankTopic` is the twin for unit tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from pydantic import ValidationError

from consumer.broker import client_options, close_producer
from consumer.settings import KafkaSettings
from detector.bank import Bank, BankEntry
from detector.bank_file import InvalidBankFile, entry_to_record, record_to_entry
from schemas.bank import BankEntryRecord

log = structlog.get_logger("deepscreen")

_POLL_S = 0.2
_METADATA_RETRY_S = 1.0


class BankPublishError(Exception):
    """The broker did not take a bank record (the ruling is not in the bank)."""


@dataclass(frozen=True)
class BankRecord:
    """One record of the bank topic as read: where it is, its key and value (None: tombstone)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class InvalidBankRecord(Exception):
    """A record of the bank topic that is not an entry (or a tombstone) under its own key."""


def encode_entry(entry: BankEntry) -> tuple[bytes, bytes]:
    """The record (key, value) that stores `entry`."""
    return entry.entry_id.encode(), entry_to_record(entry).model_dump_json().encode()


# Room a bank record leaves in a producer request for its key, headers and framing.
_RECORD_HEADROOM_BYTES = 16 * 1024


def fit_entry(entry: BankEntry, max_request_bytes: int) -> BankEntry:
    """`entry`, or it with the features of every k-th frame only, so that its record fits
    in one producer request.

    One entry is one record (a tombstone must remove all of it); a record the
    broker refuses would hold its ruling back for ever. Thinning keeps the
    entry's span of the video: what it loses is frames between kept ones. (Thinned
    to nothing, an entry still applies to the very bytes it was made from.)
    """
    room = max_request_bytes - _RECORD_HEADROOM_BYTES
    size = len(encode_entry(entry)[1])
    step = 1
    fitted = entry
    while size > room and (fitted.frames or fitted.faces):
        step += 1
        frames = tuple(f for f in entry.frames if f.frame_number % step == 0)
        faces = tuple(f for f in entry.faces if f.frame_number % step == 0)
        fitted = replace(entry, frames=frames, faces=faces)
        size = len(encode_entry(fitted)[1])
    if step > 1:
        log.info("bank_entry_thinned", entry_id=entry.entry_id, every_kth_frame=step,
                 frames=len(fitted.frames), faces=len(fitted.faces), bytes=size)  # fmt: skip
    return fitted


def decode_record(key: bytes | None, value: bytes | None) -> BankEntry | None:
    """The entry a record stores, or None for a tombstone; `InvalidBankRecord`."""
    if not key:
        raise InvalidBankRecord("a bank record has a key (the entry id)")
    try:
        entry_id = key.decode()
    except UnicodeDecodeError as error:
        raise InvalidBankRecord(f"the key is not UTF-8: {error}") from error
    if value is None:
        return None
    try:
        entry = record_to_entry(BankEntryRecord.model_validate_json(value))
    except (ValidationError, InvalidBankFile, ValueError) as error:
        raise InvalidBankRecord(f"{type(error).__name__}: {str(error)[:300]}") from error
    if entry.entry_id != entry_id:
        raise InvalidBankRecord(f"entry {entry.entry_id!r} under key {entry_id!r}")
    return entry


class BankWriter(Protocol):
    """Puts rulings on the bank topic; `publish` and `retract` return once the broker has them."""

    def publish(self, entry: BankEntry) -> BankEntry:
        """The entry as it went on the topic (`fit_entry`: thinned when it must be)."""
        ...

    def retract(self, entry_id: str) -> None:
        """A tombstone for `entry_id`: every replica forgets the entry."""
        ...

    def close(self) -> None: ...


class BankLog(Protocol):
    """The bank topic as a reader sees it: every partition from its beginning."""

    def start(self) -> None:
        """Assign every partition from its first offset; note where each ends now."""
        ...

    def poll(self, timeout_s: float) -> list[BankRecord]: ...

    def reached_start_ends(self) -> bool:
        """Whether everything the topic held at `start` has been returned by `poll`."""
        ...

    def close(self) -> None: ...


class BankReader:
    """Reads the bank topic into a `Bank` on a thread of its own: from the beginning, then tails.

    `caught_up` (for `/readyz`) turns true once the topic as it was at start
    has been applied, and stays true.
    """

    def __init__(
        self,
        source: BankLog,
        bank: Bank,
        *,
        on_applied: Callable[[BankRecord, BankEntry | None], None] | None = None,
    ) -> None:
        self.bank = bank
        self._log = source
        self._on_applied = on_applied
        self._caught_up = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None
        self.applied = 0
        self.skipped = 0

    @property
    def caught_up(self) -> bool:
        return self._caught_up.is_set()

    @property
    def alive(self) -> bool:
        """The reader's thread is running (or was never started); False once it died."""
        return self._failed is None

    def wait_caught_up(self, timeout_s: float) -> bool:
        return self._caught_up.wait(timeout_s)

    def start(self) -> BankReader:
        self._thread = threading.Thread(target=self._run, name="bank-reader", daemon=True)
        self._thread.start()
        return self

    def run_until_caught_up(self, timeout_s: float) -> bool:
        """Read on the calling thread until caught up (the CLI); False when out of time."""
        self._log.start()
        deadline = time.monotonic() + timeout_s
        while not self._step() and time.monotonic() < deadline:
            pass
        return self.caught_up

    def close(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._log.close()

    def _run(self) -> None:
        try:
            self._log.start()
            while not self._stop.is_set():
                self._step()
        except BaseException as error:  # a dead reader is reported (alive), never hidden
            self._failed = error
            log.exception("bank_reader_failed")

    def _step(self) -> bool:
        """Apply one poll's records; True when caught up."""
        for record in self._log.poll(_POLL_S):
            self._apply(record)
        if not self._caught_up.is_set() and self._log.reached_start_ends():
            self._caught_up.set()
            log.info("bank_caught_up", entries=len(self.bank), records=self.applied)
        return self._caught_up.is_set()

    def _apply(self, record: BankRecord) -> None:
        try:
            entry = decode_record(record.key, record.value)
        except InvalidBankRecord as invalid:
            self.skipped += 1
            log.error(
                "bank_record_skipped", partition=record.partition, offset=record.offset,
                error=str(invalid), effect="the bank goes on without this record",
            )  # fmt: skip
            return
        if entry is None:
            self.bank.remove((record.key or b"").decode())
        else:
            self.bank.add(entry)
        self.applied += 1
        if self._on_applied is not None:
            self._on_applied(record, entry)


# -- Kafka ---------------------------------------------------------------------------


class KafkaBankWriter:
    """An idempotent producer with `acks=all` on the bank topic."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._topic = settings.bank_topic
        self._ack_timeout_s = settings.producer_ack_timeout_s
        self._max_request_bytes = settings.producer_max_request_bytes
        self._producer = KafkaProducer(
            bootstrap_servers=settings.bootstrap_servers.split(","),
            client_id=f"{settings.client_id}-bank-writer",
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            retries=settings.producer_retries,
            max_request_size=settings.producer_max_request_bytes,
            **client_options(settings),
        )

    def publish(self, entry: BankEntry) -> BankEntry:
        fitted = fit_entry(entry, self._max_request_bytes)
        self._send(*encode_entry(fitted))
        return fitted

    def retract(self, entry_id: str) -> None:
        self._send(entry_id.encode(), None)

    def _send(self, key: bytes, value: bytes | None) -> None:
        try:
            self._producer.send(self._topic, key=key, value=value).get(timeout=self._ack_timeout_s)
        except KafkaError as error:
            raise BankPublishError(f"{type(error).__name__}: {error}") from error

    def close(self) -> None:
        close_producer(self._producer, timeout_s=1.0)


class KafkaBankLog:
    """Every partition of the bank topic, read without a consumer group from offset 0.

    Where a partition ended at start is taken from the broker's end offsets
    and, once fetched, from the fetch high watermark (some brokers, Tansu
    among them, under-report the end offset when the last batch holds
    several records; the high watermark is right).
    """

    def __init__(self, settings: KafkaSettings, *, wait_for_topic_s: float = 60.0) -> None:
        self._topic = settings.bank_topic
        self._wait_for_topic_s = wait_for_topic_s
        self._consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers.split(","),
            client_id=f"{settings.client_id}-bank-reader",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            **client_options(settings),
        )
        self._partitions: list[TopicPartition] = []
        self._ends: dict[TopicPartition, int] = {}

    def start(self) -> None:
        deadline = time.monotonic() + self._wait_for_topic_s
        while True:
            found: Any = self._consumer.partitions_for_topic(self._topic)
            if found:
                break
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"the bank topic {self._topic!r} has no partitions after "
                    f"{self._wait_for_topic_s:.0f} s"
                )
            time.sleep(_METADATA_RETRY_S)
        self._partitions = [TopicPartition(self._topic, p) for p in sorted(found)]
        self._consumer.assign(self._partitions)
        self._consumer.seek_to_beginning(*self._partitions)
        self._ends = dict(self._consumer.end_offsets(self._partitions))

    def poll(self, timeout_s: float) -> list[BankRecord]:
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        return [
            BankRecord(record.partition, record.offset, record.key, record.value)
            for partition_records in batches.values()
            for record in partition_records
        ]

    def reached_start_ends(self) -> bool:
        """At or past each partition's end at start, and at its high watermark when known.

        (A topic written to all the time might keep a reader just behind its high
        watermark; rulings are seconds apart at most, and the reader latches.)
        """
        for tp in self._partitions:
            position = self._consumer.position(tp)
            highwater = self._consumer.highwater(tp)
            if position < self._ends.get(tp, 0) or (highwater is not None and position < highwater):
                return False
        return True

    def close(self) -> None:
        self._consumer.close()


# -- in memory -----------------------------------------------------------------------


class InMemoryBankTopic:
    """The bank topic in process, one partition, never compacted: the twin for unit tests.

    `writer()` appends records; `log()` is a reader's view from the beginning.
    `fail_next` sends fail as a broker outage would.
    """

    def __init__(self) -> None:
        self._records: list[BankRecord] = []
        self._changed = threading.Condition()
        self.fail_next = 0

    @property
    def records(self) -> list[BankRecord]:
        with self._changed:
            return list(self._records)

    def append(self, key: bytes | None, value: bytes | None) -> None:
        with self._changed:
            if self.fail_next > 0:
                self.fail_next -= 1
                raise BankPublishError("KafkaTimeoutError: broker unavailable")
            self._records.append(BankRecord(0, len(self._records), key, value))
            self._changed.notify_all()

    def writer(self) -> InMemoryBankWriter:
        return InMemoryBankWriter(self)

    def log(self) -> InMemoryBankLog:
        return InMemoryBankLog(self)

    def _wait_beyond(self, position: int, timeout_s: float) -> list[BankRecord]:
        with self._changed:
            if len(self._records) <= position:
                self._changed.wait(timeout_s)
            return self._records[position:]


class InMemoryBankWriter:
    def __init__(self, topic: InMemoryBankTopic) -> None:
        self._topic = topic

    def publish(self, entry: BankEntry) -> BankEntry:
        self._topic.append(*encode_entry(entry))
        return entry

    def retract(self, entry_id: str) -> None:
        self._topic.append(entry_id.encode(), None)

    def close(self) -> None:
        pass


class InMemoryBankLog:
    def __init__(self, topic: InMemoryBankTopic) -> None:
        self._topic = topic
        self._position = 0
        self._end_at_start = 0

    def start(self) -> None:
        self._position = 0
        self._end_at_start = len(self._topic.records)

    def poll(self, timeout_s: float) -> list[BankRecord]:
        records = self._topic._wait_beyond(self._position, timeout_s)
        self._position += len(records)
        return records

    def reached_start_ends(self) -> bool:
        return self._position >= self._end_at_start

    def close(self) -> None:
        pass
