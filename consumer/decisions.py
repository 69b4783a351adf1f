"""Moderators' rulings → bank entries on the bank topic (or dead letters, with a reason).

A ruling (`moderation.decisions`, a `ModerationDecision`) is about content by
its sha256; the bank entry it makes needs that content's perceptual hashes.
They come from the verdict cache, where screening left them beside the
verdict; when they are no longer there (expired, never screened here), the
content is fetched again from the ruling's `uri` within the usual fetch limits
and hashed whole (`Detector.hash_whole`, in the isolated decoders). A ruling
for which neither works is dead-lettered with a reason, as is one that does
not parse: a ruling is never dropped silently and never stalls its partition.

Screening hashes only the windows it decodes, so an entry made from the cache
covers those moments alone, and a trimmed or re-timed copy samples others.
Such an entry is banked at once (every replica sees the ruling within
seconds), then, when the ruling has a `uri`, replaced by one hashed from the
whole video; when that fetch fails the window entry stays, and the log says so.

Rulings on one content are ordered by their time: one older than the entry
the bank already holds for that content is superseded and changes nothing
(the bank topic may be replayed, and a moderator's tool may resend). A
`retracted` ruling publishes a tombstone for the content's entry.

`DecisionHandler` is the logic, over small ports; `DecisionsLoop` runs it on
the decisions topic in a consumer group of its own (`{group_id}-decisions`),
one ruling at a time, committing each once its entry (or dead letter) is
on the broker. While a ruling is being fetched and hashed the loop keeps
polling with its partitions paused, so the group does not drop it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

import structlog

from consumer.bank_topic import BankPublishError, BankWriter
from consumer.broker import EventSink, Message, PublishError, Skipped, UploadSource
from consumer.cache import HashesKey, VerdictCache
from consumer.media import FetchError, MediaFetcher
from consumer.offsets import Partition
from consumer.settings import Settings
from detector.bank import Bank, BankEntry
from detector.hashing import VideoHashes
from detector.probe import Unreadable
from schemas.dead_letter import DeadLetter, bounded_original
from schemas.decision import Decision, ModerationDecision
from schemas.envelope import InvalidDecision, parse_decision

log = structlog.get_logger("deepscreen")

_POLL_S = 0.2
_T = TypeVar("_T")
_DEAD_LETTER_HEADROOM_BYTES = 16 * 1024

HashContent = Callable[[Path], VideoHashes]


@dataclass(frozen=True)
class DecisionOutcome:
    """What became of one ruling."""

    kind: Literal["banked", "retracted", "superseded", "dead_lettered"]
    content_sha256: str | None = None
    reason: str | None = None  # the dead letter's reason, or why it was superseded
    hashes_from: Literal["cache", "uri"] | None = None
    whole: bool = False  # the entry finally banked holds the whole video, not only its windows


class DecisionNotHandled(Exception):
    """Neither the ruling's entry nor its dead letter reached the broker: try it again later."""


class _DeadLetter(Exception):
    def __init__(self, error_class: str, reason: str, detail: str, attempts: int = 1) -> None:
        super().__init__(f"{reason}: {detail}")
        self.error_class = error_class
        self.reason = reason
        self.detail = detail
        self.attempts = attempts


class DecisionHandler:
    """One ruling → its bank entry on the bank topic (and in this replica's bank), or a dead letter.

    `hashing` is the fingerprint of the hashing configuration, as the cache keys
    hashes (`detector.hashing.hashing_fingerprint`). `wait(seconds)` sleeps
    between fetch retries and returns True when the service is stopping.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        bank: Bank,
        writer: BankWriter,
        cache: VerdictCache,
        hashing: str,
        fetcher: MediaFetcher,
        hash_content: HashContent,
        sink: EventSink,
        wait: Callable[[float], bool],
    ) -> None:
        self._settings = settings
        self._bank = bank
        self._writer = writer
        self._cache = cache
        self._hashing = hashing
        self._fetcher = fetcher
        self._hash_content = hash_content
        self._sink = sink
        self._wait = wait

    def handle(self, message: Message) -> DecisionOutcome:
        """The ruling's outcome, on the broker; `DecisionNotHandled` when it is not there."""
        try:
            return self._handle(message)
        except _DeadLetter as letter:
            self._dead_letter(message, letter)
            return DecisionOutcome("dead_lettered", reason=letter.reason)

    def _handle(self, message: Message) -> DecisionOutcome:
        try:
            ruling = parse_decision(message.value, message.headers)
        except InvalidDecision as invalid:
            raise _DeadLetter("InvalidDecision", invalid.reason, invalid.detail) from invalid
        sha = ruling.content_sha256
        current = self._bank.get(sha)
        if current is not None and current.decided_at > ruling.decided_at:
            log.info("decision_superseded", content_sha256=sha, decided_at=str(ruling.decided_at),
                     entry_decided_at=str(current.decided_at))  # fmt: skip
            return DecisionOutcome("superseded", sha, reason="an_entry_decided_later_exists")
        if ruling.decision is Decision.RETRACTED:
            self._publish(lambda: self._writer.retract(sha))
            self._bank.remove(sha)
            log.info("decision_retracted", content_sha256=sha, moderator=ruling.moderator)
            return DecisionOutcome("retracted", sha)
        hashes, source = self._hashes(ruling)
        self._bank_entry(ruling, hashes, source)
        if source == "cache" and not hashes.whole and ruling.uri is not None:
            hashes = self._whole(ruling, ruling.uri) or hashes
            if hashes.whole:
                self._bank_entry(ruling, hashes, "uri")
        return DecisionOutcome("banked", sha, hashes_from=source, whole=hashes.whole)

    def _bank_entry(self, ruling: ModerationDecision, hashes: VideoHashes, source: str) -> None:
        made = BankEntry.from_decision(ruling, hashes)
        entry = self._publish(lambda: self._writer.publish(made))
        self._bank.add(entry)  # as published: what the other replicas read from the topic
        log.info(
            "decision_banked", content_sha256=entry.content_sha256,
            decision=ruling.decision.value, moderator=ruling.moderator, frames=len(entry.frames),
            faces=len(entry.faces), hashes_from=source, whole=hashes.whole,
        )  # fmt: skip

    def _whole(self, ruling: ModerationDecision, uri: str) -> VideoHashes | None:
        """The whole video's hashes, kept in the cache; None (logged) when they cannot be had."""
        try:
            hashes = self._fetch_and_hash(uri, ruling.content_sha256)
        except (_DeadLetter, DecisionNotHandled) as failed:
            log.warning(
                "decision_whole_video_unavailable", content_sha256=ruling.content_sha256,
                error=str(failed)[:300], effect="the entry holds the screened windows only",
            )  # fmt: skip
            return None
        self._cache.put_hashes(HashesKey(self._hashing, ruling.content_sha256), hashes)
        return hashes

    def _hashes(self, ruling: ModerationDecision) -> tuple[VideoHashes, Literal["cache", "uri"]]:
        key = HashesKey(self._hashing, ruling.content_sha256)
        cached = self._cache.get_hashes(key)
        if cached is not None:
            return cached, "cache"
        if ruling.uri is None:
            raise _DeadLetter(
                "HashesUnavailable",
                "hashes_unavailable",
                "the content's hashes are not in the cache and the ruling has no uri to fetch it",
            )
        hashes = self._fetch_and_hash(ruling.uri, ruling.content_sha256)
        self._cache.put_hashes(key, hashes)
        return hashes, "uri"

    def _fetch_and_hash(self, uri: str, content_sha256: str) -> VideoHashes:
        retry = self._settings.retry
        for attempt in range(1, retry.max_attempts + 1):
            try:
                with self._fetcher.fetch(uri) as media:
                    if media.sha256 != content_sha256:
                        raise _DeadLetter(
                            "FetchError",
                            "sha256_mismatch",
                            f"the ruling is about {content_sha256}, {uri} hashes to {media.sha256}",
                            attempt,
                        )
                    try:
                        return self._hash_content(media.path)
                    except Unreadable as refused:
                        raise _DeadLetter(
                            "Unreadable",
                            "content_unreadable",
                            f"{refused.reason.value}: {refused.detail}",
                            attempt,
                        ) from refused
            except FetchError as failed:
                if not failed.retryable or attempt == retry.max_attempts:
                    letter = _DeadLetter("FetchError", failed.reason, failed.detail, attempt)
                    raise letter from failed
                delay = min(retry.backoff_max_s, retry.backoff_initial_s * 2 ** (attempt - 1))
                log.warning("decision_fetch_retry", reason=failed.reason, attempt=attempt,
                            delay_s=delay)  # fmt: skip
                if self._wait(delay):
                    raise DecisionNotHandled("stopping") from failed
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _publish(send: Callable[[], _T]) -> _T:
        try:
            return send()
        except BankPublishError as error:
            log.error("bank_publish_failed", error=str(error), effect="the ruling is tried again")
            raise DecisionNotHandled(str(error)) from error

    def _dead_letter(self, message: Message, letter: _DeadLetter) -> None:
        kafka = self._settings.kafka
        room = (
            kafka.producer_max_request_bytes - _DEAD_LETTER_HEADROOM_BYTES - len(message.key or b"")
        )
        original = bounded_original(message.value or b"", message.headers, room)
        record = DeadLetter(
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            error_class=letter.error_class,
            reason=letter.reason,
            detail=letter.detail[:2048],
            attempts=letter.attempts,
            failed_at=datetime.now(UTC),
            value_bytes=original.value_bytes,
            value_sha256=original.value_sha256,
            value_truncated=original.value_truncated,
            headers_dropped=original.headers_dropped,
        )
        try:
            self._sink.send(
                kafka.dlq_topic, message.key, original.value,
                [*original.headers, *record.to_headers()],
            )  # fmt: skip
        except PublishError as error:
            raise DecisionNotHandled(f"the dead letter was not published: {error}") from error
        log.warning("decision_dead_lettered", reason=letter.reason, detail=letter.detail[:300],
                    partition=message.partition, offset=message.offset)  # fmt: skip


def decisions_source_settings(settings: Settings) -> Settings:
    """The settings of the decisions consumer: the decisions topic, in a group of its own.

    Its own group, so that joining it never rebalances the uploads group.
    """
    kafka = settings.kafka
    return settings.model_copy(
        update={
            "kafka": kafka.model_copy(
                update={
                    "uploads_topic": kafka.decisions_topic,
                    "group_id": f"{kafka.group_id}-decisions",
                    "max_poll_records": 1,
                }
            )
        }
    )


class DecisionsLoop:
    """Rulings from the decisions topic, one at a time, each committed once it has an outcome.

    `source` is an `UploadSource` subscribed to the decisions topic (a
    `KafkaUploadSource` made with `decisions_source_settings`). `run()` blocks
    until `stop()`; `alive` is False once it has died.
    """

    def __init__(
        self,
        handler: DecisionHandler,
        source: UploadSource,
        *,
        stopping: threading.Event | None = None,
        retry_after_s: float = 1.0,
        on_outcome: Callable[[DecisionOutcome], None] | None = None,
    ) -> None:
        """`stopping` is shared with the handler's `wait` (its `wait` method will do)."""
        self._handler = handler
        self._source = source
        self._retry_after_s = retry_after_s
        self._on_outcome = on_outcome
        self._stop = stopping or threading.Event()
        self._pending: list[Message] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decision")
        self._thread: threading.Thread | None = None
        self._failed = False
        self.last_turn = time.monotonic()

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> DecisionsLoop:
        self._thread = threading.Thread(target=self.run, name="decisions", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to `timeout_s`; True at once when stopping (the handler's `wait`)."""
        return self._stop.wait(timeout_s)

    def close(self, timeout_s: float = 2.0) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._source.close()

    def alive(self, stale_after_s: float) -> bool:
        if self._failed:
            return False
        return self._stop.is_set() or time.monotonic() - self.last_turn <= stale_after_s

    def run(self) -> None:
        try:
            self._source.subscribe(self)
            while not self._stop.is_set():
                message = self._next()
                if message is not None:
                    self._settle(message)
                self.last_turn = time.monotonic()
        except Exception:
            self._failed = True
            log.exception("decisions_loop_failed")
            raise

    # -- rebalances -------------------------------------------------------------

    def on_partitions_revoked(self, revoked: set[Partition]) -> None:
        # Each ruling is committed as soon as it has an outcome: nothing to commit here;
        # rulings taken but not started belong to the partitions' next owner.
        self._pending = [m for m in self._pending if m.where not in revoked]

    def on_partitions_assigned(self, assigned: set[Partition]) -> None:
        log.info("decisions_partitions_assigned", partitions=sorted(p.partition for p in assigned))

    # -- one ruling -------------------------------------------------------------

    def _next(self) -> Message | None:
        if not self._pending:
            self._pending.extend(self._source.poll(_POLL_S, 1))
        return self._pending.pop(0) if self._pending else None

    def _settle(self, message: Message) -> None:
        """Handle `message` until it has an outcome (or the loop stops), then commit past it."""
        if not isinstance(message, Skipped):
            while True:
                try:
                    outcome = self._handled_while_polling(message)
                    break
                except DecisionNotHandled:
                    if self.wait(self._retry_after_s):
                        return  # not committed: the next owner handles it again
            if self._on_outcome is not None:
                self._on_outcome(outcome)
        try:
            self._source.commit({message.where: message.offset + 1})
        except Exception as error:  # a lost commit means the ruling is handled twice: harmless
            log.warning("decisions_commit_failed", error=f"{type(error).__name__}: {error}")

    def _handled_while_polling(self, message: Message) -> DecisionOutcome:
        """The handler's outcome; meanwhile the loop polls, paused, to stay in the group."""
        future: Future[DecisionOutcome] = self._pool.submit(self._handler.handle, message)
        paused = False
        while not future.done():
            assignment = self._source.assignment()
            self._source.pause(assignment)
            paused = True
            self._pending.extend(self._source.poll(_POLL_S, 1))  # newly assigned only
            self.last_turn = time.monotonic()
        if paused:
            self._source.resume(self._source.assignment())
        return future.result()
