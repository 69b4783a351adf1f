"""The polling loop: take uploads, keep a bounded number in flight, commit what is done.

`run()` is unbounded in production and stops after `max_messages` outcomes in
tests. Work runs on a thread pool of `kafka.max_in_flight` workers; while the
pool is full, every assigned partition is paused, the loop waits for a worker
to finish, and it still polls (which returns nothing) about once a second so
rebalances are seen.

Commits: after a flush of the producer, the lowest unfinished offset of each
partition still assigned (see `offsets`). On a rebalance, the finished prefix
of the partitions being taken away is committed before they go.

Stopping (SIGTERM, SIGINT): the signal handler only sets a flag. The loop then
stops polling, gives in-flight work `drain_seconds` to finish, commits what
finished, and closes everything in the order of `_teardown`. Work that did not
finish is not committed, so another member screens it again.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from types import FrameType

import structlog

from consumer.broker import EventSink, Message, UploadSource
from consumer.metrics import Metrics
from consumer.offsets import OffsetTracker, Partition
from consumer.processing import HandedBack, UploadProcessor
from consumer.settings import Settings

log = structlog.get_logger("deepscreen")

_POLL_S = 0.2
_PAUSED_POLL_EVERY_S = 1.0  # while paused, poll this often so rebalances are still seen
_LAG_EVERY_S = 10.0


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        source_factory: Callable[[Service], UploadSource],
        sink: EventSink,
        processor: UploadProcessor,
        metrics: Metrics,
        stopping: threading.Event,
        closers: list[tuple[str, Callable[[], None]]] | None = None,
    ) -> None:
        """`source_factory` gets the service so its rebalance callbacks can reach it."""
        self.settings = settings
        self.metrics = metrics
        self.stopping = stopping
        self._sink = sink
        self._processor = processor
        self._tracker = OffsetTracker()
        self._pool = ThreadPoolExecutor(
            max_workers=settings.kafka.max_in_flight, thread_name_prefix="screen"
        )
        self._futures: set[Future[None]] = set()
        self._lock = threading.Lock()
        self._outcomes = 0
        self._slot_freed = threading.Event()
        self._closers = closers or []
        self._source = source_factory(self)
        self.ready = threading.Event()
        self._broker_reachable = False  # sampled on the polling thread (the consumer is not
        # thread-safe), read by the health endpoint

    # -- lifecycle -------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT set the stop flag; nothing else happens in the handler."""

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            self.stopping.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def run(self, max_messages: int | None = None) -> None:
        """Screen uploads until stopped, or until `max_messages` have an outcome."""
        last_commit = last_lag = last_poll = time.monotonic()
        paused = False
        consumed = 0
        self.ready.set()
        try:
            while not self.stopping.is_set():
                if max_messages is not None and self._finished_count() >= max_messages:
                    break
                room = self.settings.kafka.max_in_flight - self._tracker.in_flight()
                if max_messages is not None:
                    room = min(room, max_messages - consumed)
                if room <= 0 and not paused:
                    self._source.pause(self._source.assignment())
                    paused = True
                elif room > 0 and paused:
                    self._source.resume(self._source.assignment())
                    paused = False
                if room > 0:
                    for message in self._source.poll(_POLL_S, room):
                        self._start(message)
                        consumed += 1
                    last_poll = time.monotonic()
                else:
                    # Full: wake as soon as a video finishes, not at the next poll timeout.
                    self._slot_freed.wait(_POLL_S)
                    self._slot_freed.clear()
                    if time.monotonic() - last_poll > _PAUSED_POLL_EVERY_S:
                        self._source.poll(_POLL_S / 2, 1)  # paused: stays in the group
                        last_poll = time.monotonic()
                self._broker_reachable = self._source.reachable()
                now = time.monotonic()
                if now - last_commit >= self.settings.kafka.commit_interval_s:
                    self._commit()
                    last_commit = now
                if now - last_lag >= _LAG_EVERY_S:
                    self._report_lag()
                    last_lag = now
        finally:
            self.ready.clear()
            self._drain()
            self._teardown()

    # -- work ------------------------------------------------------------------

    def _start(self, message: Message) -> None:
        self._tracker.started(message.where, message.offset)
        self.metrics.uploads.inc()
        self.metrics.in_flight.inc()
        future = self._pool.submit(self._work, message)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def _work(self, message: Message) -> None:
        try:
            self._processor.process(message)
        except HandedBack:
            log.info("handed_back", partition=message.partition, offset=message.offset)
            return
        finally:
            self.metrics.in_flight.dec()
            self._slot_freed.set()
        self._tracker.finished(message.where, message.offset)
        with self._lock:
            self._outcomes += 1
        self._slot_freed.set()

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _finished_count(self) -> int:
        with self._lock:
            return self._outcomes

    # -- commits ---------------------------------------------------------------

    def _commit(self) -> None:
        positions = self._tracker.committable()
        if not positions:
            return
        try:
            self._sink.flush(timeout_s=self.settings.kafka.flush_timeout_s)
            self._source.commit(positions)
        except Exception as error:  # the next cycle retries; nothing is lost, maybe redone
            log.warning("commit_failed", error=f"{type(error).__name__}: {error}")
            return
        self._tracker.committed(positions)

    def on_partitions_revoked(self, revoked: set[Partition]) -> None:
        """Commit what is finished on the partitions leaving us, and stop committing them.

        Runs on the Kafka client's IO thread, so the commit must not block. No
        producer flush is needed first: a worker marks an offset finished only
        after the broker acknowledged its events.
        """
        positions = {p: o for p, o in self._tracker.committable().items() if p in revoked}
        try:
            self._source.commit_nowait(positions)
        except Exception as error:  # a lost commit only means duplicates, not loss
            log.warning("commit_failed", error=f"{type(error).__name__}: {error}")
        self._tracker.revoke(revoked)
        log.info("partitions_revoked", partitions=sorted(p.partition for p in revoked))

    def on_partitions_assigned(self, assigned: set[Partition]) -> None:
        self._tracker.assign(assigned)
        log.info("partitions_assigned", partitions=sorted(p.partition for p in assigned))

    def _report_lag(self) -> None:
        try:
            for partition, lag in self._source.lag().items():
                self.metrics.lag.labels(str(partition.partition)).set(lag)
        except Exception as error:  # lag is a metric, not a reason to stop
            log.debug("lag_unavailable", error=str(error))

    # -- shutdown --------------------------------------------------------------

    def _drain(self) -> None:
        with self._lock:
            pending = set(self._futures)
        if pending:
            log.info("draining", in_flight=len(pending), limit_s=self.settings.drain_seconds)
            _, not_done = wait(pending, timeout=self.settings.drain_seconds)
            if not_done:
                # Past the limit: tell workers to hand back (their offsets stay uncommitted).
                self.stopping.set()
                wait(not_done, timeout=5)
                log.warning("drain_timeout", handed_back=len(not_done))
        self._commit()

    def _teardown(self) -> None:
        """Close in dependency order: stop consuming, then producing, then the engines."""
        self.stopping.set()
        steps: list[tuple[str, Callable[[], None]]] = [
            ("consumer", self._source.close),
            ("workers", lambda: self._pool.shutdown(wait=False, cancel_futures=True)),
            ("producer", self._sink.close),
            *self._closers,
        ]
        for name, close in steps:
            try:
                close()
            except Exception as error:  # keep closing the rest
                log.warning("close_failed", component=name, error=str(error))
        log.info("stopped")

    def reachable(self) -> bool:
        return self._broker_reachable
