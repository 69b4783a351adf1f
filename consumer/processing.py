"""One upload event → exactly one outcome: a verdict (and maybe a flag) or a dead letter.

This is what a worker thread does with a message. The rules:

- a message that is not a valid upload event is dead-lettered at once (retrying
  cannot fix it);
- a media fetch that fails in a way that may pass (timeout, 5xx, reset) is
  retried with exponential backoff up to `retry.max_attempts`, then
  dead-lettered; one that cannot pass (404, outside the roots) is dead-lettered
  at once; so no message blocks its partition for ever;
- a video that cannot be decoded, or shows no face, is a verdict, not a dead
  letter: the moderator and the audit trail need to know;
- the verdict is looked up by (model sha256, content sha256) first; a hit is
  republished for this upload with `cache_hit: true` and not decoded again,
  its known-fakes finding redone against the bank as it is now (from the
  content's hashes, cached beside the verdict), so a moderator's ruling made
  since the verdict was cached is never contradicted by it;
- nothing is screened or served before the bank has been read at start
  (bounded: after `known_fakes.catch_up_wait_s` it goes on with what it has);
- when the service is stopping, work that has not been published is handed
  back (not marked finished, so not committed) rather than rushed.

`process` publishes and waits for each acknowledgement. The service uses
`prepare` instead: the same outcome as records, not yet sent, so that it can
queue them on the producer without waiting (the producer batches them) and
mark the offset finished when the broker has acknowledged them all; when one
fails, `republish` sends them again by the rules above, waiting for each.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn, Protocol

import structlog

from consumer.broker import EventSink, Headers, Message, PublishError
from consumer.cache import CacheKey, HashesKey, VerdictCache
from consumer.media import FetchedMedia, FetchError, MediaFetcher
from consumer.metrics import Metrics
from consumer.settings import Settings
from detector.hashing import VideoHashes
from detector.pipeline import Screening
from schemas.cloudevents import flag_event, verdict_event
from schemas.dead_letter import DeadLetter, bounded_original
from schemas.envelope import InvalidUpload, parse_upload
from schemas.provenance import ProvenanceReason
from schemas.upload import VideoUploaded
from schemas.verdict import Action, Reason, ScreeningVerdict, Signal

log = structlog.get_logger("deepscreen")

# Verdicts that say more about this replica's state than about the video: not cached.
# Outcomes of a moment (a timeout, a crash) that another try may not repeat: not cached.
_TRANSIENT = frozenset({Reason.DECODE_TIMEOUT, Reason.DECODER_CRASHED})
_TRANSIENT_CREDENTIALS = frozenset({ProvenanceReason.READ_TIMEOUT, ProvenanceReason.READER_CRASHED})


def _was_hashed(verdict: ScreeningVerdict) -> bool:
    """Whether screening hashed the content: the bank was asked and frames were decoded."""
    return verdict.signal(Signal.KNOWN_FAKES) is not None and verdict.frames_analyzed > 0


def _cacheable(verdict: ScreeningVerdict) -> bool:
    model = verdict.signal(Signal.MODEL)
    if model is not None and model.reason in _TRANSIENT:
        return False
    return verdict.provenance is None or verdict.provenance.reason not in _TRANSIENT_CREDENTIALS


# Room a dead letter leaves in a producer request for our own headers and the record's
# framing (what `schemas.dead_letter.bounded_original` may not use).
DEAD_LETTER_HEADROOM_BYTES = 16 * 1024


class StopFlag(Protocol):
    """The service's run state as a worker sees it (a `threading.Event` will do in tests)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True (at once) when the service is stopping."""
        ...


@dataclass(frozen=True)
class OutboundRecord:
    """One record of an outcome, ready to send: a verdict, a flag or a dead letter."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    dead_letter: bool = False


class HandedBack(Exception):
    """The service is stopping; this message stays uncommitted and will be redelivered."""


# `Detector.screen` (a verdict) or `Detector.screen_timed` (with the content's hashes too).
ScreenFn = Callable[..., ScreeningVerdict | Screening]
RefreshFn = Callable[[ScreeningVerdict, VideoHashes | None], ScreeningVerdict]


def _always_caught_up(timeout_s: float) -> bool:
    return True


@dataclass(frozen=True)
class KnownFakesView:
    """What the processor needs of the known-fakes signal: keep cached verdicts true to the bank.

    `hashing` is `hashing_fingerprint` of the detector's hashing configuration
    (the cache keeps a content's hashes under it); `refresh` is
    `Detector.refresh`; `wait_caught_up(timeout_s)` is True once the bank has
    read its topic at start (`BankReader.wait_caught_up`); an upload waits for
    it at most `catch_up_wait_s`.
    """

    hashing: str
    refresh: RefreshFn
    wait_caught_up: Callable[[float], bool] = _always_caught_up
    catch_up_wait_s: float = 0.0


class UploadProcessor:
    def __init__(
        self,
        settings: Settings,
        *,
        screen: ScreenFn,
        model_sha256: str,
        fetcher: MediaFetcher,
        cache: VerdictCache,
        sink: EventSink,
        metrics: Metrics,
        stopping: StopFlag,
        policy: str = "",
        known_fakes: KnownFakesView | None = None,
    ) -> None:
        """`policy` is the detector's `policy_fingerprint()`, part of every cache key.

        Without `known_fakes` no hashes are cached and cached verdicts are served as
        they were screened.
        """
        self._settings = settings
        self._screen = screen
        self._model_sha256 = model_sha256
        self._policy = policy
        self._fetcher = fetcher
        self._cache = cache
        self._sink = sink
        self._metrics = metrics
        self._stopping = stopping
        self._known_fakes = known_fakes
        self._bank_read = known_fakes is None  # latches: caught up, or waited long enough
        self._made = time.monotonic()
        self._owner = f"deepscreen-{uuid.uuid4().hex[:12]}"
        self._outbox = threading.local()  # while `prepare` runs on a thread: its records

    def process(self, message: Message) -> None:
        """Publish this message's one outcome; raises `HandedBack` when stopping first.

        An unexpected error (a bug) is dead-lettered as `processing_failed` rather
        than left unfinished, which would hold back the partition's commits.
        """
        try:
            self._process(message)
        except (HandedBack, _DeadLettered, Unpublishable):
            raise
        except Exception as error:
            # While stopping, the engines are torn down under the work: not the upload's fault.
            if self._stopping.is_set():
                log.info("handed_back", reason=f"{type(error).__name__} while stopping",
                         partition=message.partition, offset=message.offset)  # fmt: skip
                raise HandedBack from error
            log.exception("processing_failed", partition=message.partition, offset=message.offset)
            self._dead_letter(
                message, type(error).__name__, "processing_failed", str(error) or repr(error), 1
            )

    def prepare(self, message: Message) -> list[OutboundRecord]:
        """This message's outcome as records to send, without sending them.

        Everything else is as in `process` (the verdict is screened or taken from the
        cache, logged and counted); raises `HandedBack` when stopping first. The
        caller sends the records and calls `republish` when one of them fails.
        """
        self._outbox.records = []
        try:
            self.process(message)
            records: list[OutboundRecord] = self._outbox.records
            return records
        finally:
            self._outbox.records = None

    def republish(self, message: Message, records: list[OutboundRecord]) -> None:
        """Send `records` again, each waiting for its acknowledgement, as `process` would.

        For an outcome of `prepare` that did not reach the broker: retried with
        backoff; a verdict or flag that can never be published is replaced by the
        message's dead letter; a dead letter that cannot be raises `Unpublishable`.
        Records the broker already had are sent again with the same event ids.
        """
        for record in records:
            try:
                self._send(record.topic, record.key, record.value, record.headers)
            except _PublishFailed as failed:
                if record.dead_letter:
                    self._unpublishable(message, "dead_letter_unpublishable", failed)
                detail = f"the verdict could not be published: {failed.error}"
                self._dead_letter(message, failed.error.error_class, "publish_failed", detail,
                                  failed.attempts)  # fmt: skip
                return

    def _process(self, message: Message) -> None:
        started = time.monotonic()
        try:
            upload = parse_upload(message.value, message.headers)
        except InvalidUpload as invalid:
            self._dead_letter(message, "InvalidUpload", invalid.reason, invalid.detail, 1)
            return
        try:
            verdict = self._verdict_for(upload, message, started)
        except _DeadLettered:
            return
        try:
            self._publish(verdict)
        except _PublishFailed as failed:
            detail = f"the verdict could not be published: {failed.error}"
            self._dead_letter(message, failed.error.error_class, "publish_failed", detail,
                              failed.attempts)  # fmt: skip
            return
        self._metrics.processing.observe(time.monotonic() - started)
        log.info(
            "screened",
            video_id=verdict.video_id,
            outcome=verdict.outcome.value,
            reason=verdict.reason.value if verdict.reason else None,
            score=verdict.score,
            action=verdict.action.value,
            action_signal=verdict.action_signal.value if verdict.action_signal else None,
            media=verdict.media,
            provenance=verdict.provenance.state.value if verdict.provenance else None,
            cache_hit=verdict.cache_hit,
            ms=verdict.processing_ms,
            partition=message.partition,
            offset=message.offset,
        )

    def _verdict_for(
        self, upload: VideoUploaded, message: Message, started: float
    ) -> ScreeningVerdict:
        retry = self._settings.retry
        for attempt in range(1, retry.max_attempts + 1):
            try:
                with self._fetcher.fetch(upload.uri) as media:
                    if upload.sha256 and upload.sha256 != media.sha256:
                        raise FetchError(
                            "sha256_mismatch",
                            f"the event says {upload.sha256}, the bytes hash to {media.sha256}",
                            retryable=False,  # the same bytes give the same hash
                        )
                    return self._screened(upload, media, started)
            except FetchError as failed:
                if not failed.retryable or attempt == retry.max_attempts:
                    self._dead_letter(message, "FetchError", failed.reason, failed.detail, attempt)
                    raise _DeadLettered from failed
                self._metrics.retries.labels(failed.reason).inc()
                delay = min(retry.backoff_max_s, retry.backoff_initial_s * 2 ** (attempt - 1))
                log.warning(
                    "fetch_retry",
                    video_id=upload.video_id,
                    reason=failed.reason,
                    attempt=attempt,
                    delay_s=delay,
                )
                if self._stopping.wait(delay):
                    raise HandedBack from failed
        raise AssertionError("unreachable")  # pragma: no cover

    def _screened(
        self, upload: VideoUploaded, media: FetchedMedia, started: float
    ) -> ScreeningVerdict:
        """The verdict for the fetched bytes: from the cache, or screened (only then is the
        media's file made, for a local file)."""
        content_sha256 = media.sha256
        self._await_bank()
        key = CacheKey(self._model_sha256, content_sha256, policy=self._policy)
        cached = self._cached(upload, key, started)
        if cached:
            return cached
        claimed = self._cache.claim(key, self._owner)
        if not claimed:
            cached = self._wait_for_other_replica(upload, key, started)
            if cached:
                return cached
        try:
            screened = self._screen(
                media.path, video_id=upload.video_id, uri=upload.uri, content_sha256=content_sha256
            )
            verdict, hashes = (
                (screened.verdict, screened.hashes)
                if isinstance(screened, Screening)
                else (screened, None)
            )
            verdict = verdict.model_copy(
                update={"processing_ms": round((time.monotonic() - started) * 1000)}
            )
            self._metrics.observe_provenance(verdict.provenance)
            if hashes is not None and self._known_fakes is not None:
                # Before the verdict: whoever sees the verdict may rule on it, from these.
                self._cache.put_hashes(self._hashes_key(content_sha256), hashes)
            if _cacheable(verdict):
                self._cache.put(key, verdict)
            return verdict
        finally:
            if claimed:
                self._cache.release(key, self._owner)

    def _await_bank(self) -> None:
        """Wait until the bank has read its topic (it may hold this upload's ruling).

        Bounded: `catch_up_wait_s` after the processor was made, uploads go on against
        the entries read so far (logged once; `/readyz` says the bank is behind).
        """
        if self._bank_read or self._known_fakes is None:
            return
        view = self._known_fakes
        deadline = self._made + view.catch_up_wait_s
        while not view.wait_caught_up(min(0.2, max(0.0, deadline - time.monotonic()))):
            if self._stopping.is_set():
                raise HandedBack
            if time.monotonic() >= deadline:
                if not self._bank_read:
                    log.warning("bank_not_caught_up", waited_s=view.catch_up_wait_s,
                                effect="screening against the entries read so far")  # fmt: skip
                break
        self._bank_read = True

    def _hashes_key(self, content_sha256: str) -> HashesKey:
        assert self._known_fakes is not None
        return HashesKey(self._known_fakes.hashing, content_sha256)

    def _cached(
        self, upload: VideoUploaded, key: CacheKey, started: float
    ) -> ScreeningVerdict | None:
        hit = self._lookup(key)
        if hit is None:
            self._metrics.cache_misses.inc()
            return None
        return self._as_cache_hit(hit, upload, started)

    def _wait_for_other_replica(
        self, upload: VideoUploaded, key: CacheKey, started: float
    ) -> ScreeningVerdict | None:
        """Another replica is screening these bytes: take its verdict when it lands."""
        deadline = time.monotonic() + self._settings.redis.claim_wait_s
        while time.monotonic() < deadline:
            if self._stopping.wait(self._settings.redis.claim_poll_s):
                raise HandedBack
            hit = self._lookup(key)
            if hit is not None:
                return self._as_cache_hit(hit, upload, started)
        return None  # the other replica died or is slow: screen it ourselves

    def _lookup(self, key: CacheKey) -> ScreeningVerdict | None:
        """The cached verdict with its known-fakes finding redone against the bank as it is now.

        None (a miss: screened again) when there is none, or when that cannot be
        done in full: the content was hashed when screened but its hashes have left
        the cache (they are evicted apart from the verdict), or the entry is broken.
        """
        if self._known_fakes is None:
            return self._cache.get(key)
        hit, hashes = self._cache.get_with_hashes(key, self._hashes_key(key.content_sha256))
        if hit is None:
            return None
        if hashes is None and _was_hashed(hit):
            log.info("cached_hashes_missing", content_sha256=hit.content_sha256,
                     effect="screened again")  # fmt: skip
            return None
        try:
            return self._known_fakes.refresh(hit, hashes)
        except ValueError as broken:
            log.warning("cached_verdict_unusable", content_sha256=hit.content_sha256,
                        error=str(broken), effect="screened again")  # fmt: skip
            return None

    def _as_cache_hit(
        self, hit: ScreeningVerdict, upload: VideoUploaded, started: float
    ) -> ScreeningVerdict:
        """The cached verdict, re-addressed to this upload."""
        self._metrics.cache_hits.inc()
        return hit.model_copy(
            update={
                "video_id": upload.video_id,
                "uri": upload.uri,
                "cache_hit": True,
                "screened_at": datetime.now(UTC),
                "processing_ms": round((time.monotonic() - started) * 1000),
            }
        )

    def _publish(self, verdict: ScreeningVerdict) -> None:
        kafka = self._settings.kafka
        key = verdict.video_id.encode()
        if kafka.verdicts_topic:
            event = verdict_event(verdict, source=kafka.event_source)
            self._send(kafka.verdicts_topic, key, event.model_dump_json().encode())
        if verdict.action is not Action.NONE:
            flag = flag_event(verdict, source=kafka.event_source)
            self._send(kafka.flags_topic, key, flag.model_dump_json().encode())
            signal = verdict.action_signal
            self._metrics.flags.labels(signal.value if signal else "none").inc()
        self._metrics.verdicts.labels(verdict.outcome.value).inc()
        self._metrics.clips.inc(len(verdict.timeline) if not verdict.cache_hit else 0)

    def _dead_letter(
        self, message: Message, error_class: str, reason: str, detail: str, attempts: int
    ) -> None:
        letter = DeadLetter(
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            error_class=error_class,
            reason=reason,
            detail=detail[:2048],
            attempts=attempts,
            failed_at=datetime.now(UTC),
        )
        kafka = self._settings.kafka
        room = (
            kafka.producer_max_request_bytes - DEAD_LETTER_HEADROOM_BYTES - len(message.key or b"")
        )
        original = bounded_original(message.value or b"", message.headers, room)
        letter = letter.model_copy(
            update={
                "value_bytes": original.value_bytes,
                "value_sha256": original.value_sha256,
                "value_truncated": original.value_truncated,
                "headers_dropped": original.headers_dropped,
            }
        )
        try:
            self._send(kafka.dlq_topic, message.key, original.value,
                       [*original.headers, *letter.to_headers()], dead_letter=True)  # fmt: skip
        except _PublishFailed as failed:
            self._unpublishable(message, reason, failed)
        self._metrics.dead_letters.labels(reason).inc()
        log.warning(
            "dead_lettered",
            reason=reason,
            detail=detail[:300],
            attempts=attempts,
            partition=message.partition,
            offset=message.offset,
        )

    def _unpublishable(self, message: Message, reason: str, failed: _PublishFailed) -> NoReturn:
        self._metrics.unpublishable.inc()
        log.error(
            "outcome_unpublishable",
            reason=reason,
            error=str(failed.error),
            partition=message.partition,
            offset=message.offset,
            effect="commits of this partition stop before this offset",
        )
        raise Unpublishable(str(failed.error)) from failed

    def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers | None = None,
        *,
        dead_letter: bool = False,
    ) -> None:
        """Publish, retrying with backoff until the broker takes it.

        A send that can never succeed (not `retriable`) is tried
        `kafka.publish_max_attempts` times, then raises `_PublishFailed`; others
        are retried until the service stops (then `HandedBack`). Within `prepare`
        the record is only added to the outcome's records.
        """
        outbox: list[OutboundRecord] | None = getattr(self._outbox, "records", None)
        if outbox is not None:
            outbox.append(OutboundRecord(topic, key, value, headers or [], dead_letter))
            return
        kafka = self._settings.kafka
        delay = kafka.publish_backoff_initial_s
        refused = 0
        while True:
            try:
                self._sink.send(topic, key, value, headers or [])
                return
            except PublishError as error:
                log.error("publish_failed", topic=topic, error=str(error),
                          retriable=error.retriable)  # fmt: skip
                if not error.retriable:
                    refused += 1
                    if refused >= kafka.publish_max_attempts:
                        raise _PublishFailed(error, refused) from error
                if self._stopping.wait(delay):
                    raise HandedBack from error
                delay = min(delay * 2, kafka.publish_backoff_max_s)


class Unpublishable(Exception):
    """Neither the outcome nor its dead letter can be published: the offset stays uncommitted."""


class _DeadLettered(Exception):
    pass


class _PublishFailed(Exception):
    def __init__(self, error: PublishError, attempts: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.attempts = attempts
