"""The polling loop: take uploads, keep a bounded number in flight, commit what is done.

`run()` is unbounded in production and stops after `max_messages` outcomes in
tests. Each turn of the loop is five named steps around one `RunState`:

    while state.running:
        room = self._throttle()      # pause every assigned partition while full
        self._poll(room)             # take up to `room` uploads, or wait for a slot
        self._sample_health()        # for /readyz (the consumer is not thread-safe)
        self._commit_if_due()        # every `kafka.commit_interval_s`
        self._report_lag_if_due()    # every `_LAG_EVERY_S`

Work runs on a thread pool of `kafka.max_in_flight` workers; while the pool is
full, every assigned partition is paused, the loop waits for a worker to
finish, and it still polls about once a second so rebalances are seen (a
rebalance unpauses what it assigns, so whatever such a poll returns is taken,
never dropped).

Publishing: a worker works out an upload's outcome (`UploadProcessor.prepare`)
and queues its records on the producer without waiting; the producer batches
them. The offset is finished when the broker has acknowledged every record of
its outcome; if one fails, a worker sends them again by the processor's rules
(`republish`: retries, then a dead letter). So a worker is free for the next
upload as soon as the outcome is queued, while at-least-once holds: nothing is
committed before its outcome is acknowledged. Queued, unacknowledged outcomes
count against `_MAX_UNACKED` (the loop pauses beyond it).

Commits: the lowest unfinished offset of each partition still assigned (see
`offsets`); the final commit flushes the producer first. On a rebalance, the finished prefix
of the partitions being taken away is committed before they go.

Stopping (SIGTERM, SIGINT): the signal handler only sets the run state's stop
flag. The loop then stops polling, gives in-flight work `drain_seconds` to
finish (less if the group would drop this member first), commits what finished
at once (synchronously; a failure is logged), and closes everything in the
order of `_shut_down`, each step within its share of `SHUTDOWN_TEARDOWN_S`.
Work that did not finish is not committed, so another member screens it again.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from types import FrameType
from typing import TypeVar

import structlog

from consumer.broker import EventSink, Message, Skipped, UploadSource
from consumer.metrics import Metrics
from consumer.offsets import OffsetTracker, Partition
from consumer.processing import HandedBack, OutboundRecord, Unpublishable, UploadProcessor
from consumer.settings import Settings

log = structlog.get_logger("deepscreen")
_T = TypeVar("_T")

_POLL_S = 0.2
_PAUSED_POLL_EVERY_S = 1.0  # while paused, poll this often so rebalances are still seen
_LAG_EVERY_S = 10.0
# Outcomes queued on the producer and not yet acknowledged, at most (beyond: pause). The
# producer's own buffer bounds their bytes; this bounds what a crash makes us redo.
_MAX_UNACKED = 1000

# The shutdown after the drain takes at most this long: SIGTERM → exit is at most
# `drain_seconds` + this (plus the loop's last turn, a fraction of a second). Each step
# runs on a thread of its own within its share; one that overruns it is left behind
# (logged), and `deepscreen serve` exits regardless. The chart's grace period is built on
# it (helm/deepscreen/templates/_helpers.tpl, `deepscreen.shutdownTeardownSeconds`).
SHUTDOWN_TEARDOWN_S = 5.0
_COMMIT_SHARE_S = 1.5  # the final commit (retried within it)
_PRODUCER_SHARE_S = 1.0  # see `broker.PRODUCER_CLOSE_TIMEOUT_S`
_CONSUMER_SHARE_S = 1.0  # leaving the group; see `broker.CONSUMER_CLOSE_TIMEOUT_S`
# The closers (the detector: scorer, then decoder processes; the cache; HTTP) share what
# is left, at least SHUTDOWN_TEARDOWN_S minus the shares above, each taking what it needs.
_COMMIT_RETRY_S = 0.1
# The group drops a member that has not polled for `max_poll_interval_ms`, and a commit
# from a dropped member fails: the drain ends this long before that, so the final
# commit still counts.
_MEMBERSHIP_MARGIN_S = _COMMIT_SHARE_S + 0.5


class _Overran(Exception):
    """A shutdown step still running when its share ran out (its thread is left behind)."""


class RunState:
    """One run of the polling loop, shared by the loop, its workers and the health checks.

    Modelled on quixstreams' `RunTracker`. Anything may `stop()` the run (the
    signal handler does nothing else); the loop goes round while `running`;
    workers sleep on it between retries: `wait(timeout)` returns True as soon as
    a stop is requested, as `threading.Event.wait` does, so the processor needs
    nothing more. The health endpoint reads `ready`, `broker_reachable` and
    `alive()`.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._limit: int | None = None
        self._outcomes = 0  # messages with a published outcome (workers count them)
        self._failed = False
        self.consumed = 0  # messages taken from the source (the loop counts them)
        self.ready = False
        self.broker_reachable = False
        self.blocked_partitions = 0  # assigned partitions held behind an unpublishable offset
        self.stuck_partitions = 0  # assigned partitions waiting on one offset for too long
        self.paused = False
        now = time.monotonic()
        self.last_turn = self.last_poll = self.last_commit = self.last_lag = now

    # -- the stop flag ---------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def is_set(self) -> bool:
        """True once a stop was requested."""
        return self._stop.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True (at once) when a stop is requested."""
        return self._stop.wait(timeout)

    # -- the loop's view -------------------------------------------------------

    def begin(self, max_messages: int | None) -> None:
        now = time.monotonic()
        self._limit = max_messages
        self.last_turn = self.last_poll = self.last_commit = self.last_lag = now
        self.ready = True

    @property
    def running(self) -> bool:
        """No stop requested, and `max_messages` (when given) not yet reached."""
        if self._stop.is_set():
            return False
        with self._lock:
            return self._limit is None or self._outcomes < self._limit

    def room(self, free_workers: int) -> int:
        """How many more messages to take now."""
        if self._limit is None:
            return free_workers
        return min(free_workers, self._limit - self.consumed)

    def turned(self) -> None:
        self.last_turn = time.monotonic()

    def outcome(self) -> None:
        with self._lock:
            self._outcomes += 1

    @property
    def outcomes(self) -> int:
        """Messages of this run whose outcome is published (and so may be committed)."""
        with self._lock:
            return self._outcomes

    def end(self, *, failed: bool) -> None:
        self.ready = False
        self._failed = failed

    # -- liveness --------------------------------------------------------------

    def alive(self, stale_after_s: float) -> bool:
        """The loop has not died: it went round within `stale_after_s`, or is stopping.

        Before `begin` and while stopping (the drain may take `drain_seconds`)
        it is alive; a loop that raised is not.
        """
        if self._failed:
            return False
        if self._stop.is_set() or not self.ready:
            return True
        return time.monotonic() - self.last_turn <= stale_after_s


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        source: UploadSource,
        sink: EventSink,
        processor: UploadProcessor,
        metrics: Metrics,
        state: RunState,
        closers: list[tuple[str, Callable[[], None]]] | None = None,
    ) -> None:
        """`state` is shared with `processor` (its stop flag) and the health checks.

        The service subscribes `source` with itself as the rebalance listener
        when it starts running.
        """
        self.settings = settings
        self.metrics = metrics
        self.state = state
        self._source = source
        self._sink = sink
        self._processor = processor
        self._tracker = OffsetTracker()
        self._pool = ThreadPoolExecutor(
            max_workers=settings.kafka.max_in_flight, thread_name_prefix="screen"
        )
        self._futures: set[Future[None]] = set()
        self._lock = threading.Lock()
        self._working = 0  # messages a worker is preparing (not those awaiting acks)
        self._slot_freed = threading.Event()
        self._closers = closers or []

    def stop(self) -> None:
        self.state.stop()

    def reachable(self) -> bool:
        return self.state.broker_reachable

    # -- lifecycle -------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT set the stop flag; nothing else happens in the handler."""

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            self.state.stop()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def run(self, max_messages: int | None = None) -> None:
        """Screen uploads until stopped, or until `max_messages` have an outcome."""
        state = self.state
        state.begin(max_messages)
        failed = False
        try:
            self._source.subscribe(self)
            while state.running:
                room = self._throttle()
                self._poll(room)
                self._sample_health()
                self._commit_if_due()
                self._report_lag_if_due()
                state.turned()
        except Exception:
            failed = True
            raise
        finally:
            state.end(failed=failed)
            self._shut_down()

    # -- the loop's steps ------------------------------------------------------

    def _throttle(self) -> int:
        """Room for more work; while there is none, every assigned partition is paused.

        Pausing is repeated on each turn while full: a rebalance unpauses the
        partitions it assigns.
        """
        state = self.state
        with self._lock:
            working = self._working
        unacked = self._tracker.in_flight() - working
        room = state.room(self.settings.kafka.max_in_flight - working)
        room = min(room, _MAX_UNACKED - unacked)
        if room <= 0:
            self._source.pause(self._source.assignment())
            state.paused = True
        elif state.paused:
            self._source.resume(self._source.assignment())
            state.paused = False
        return room

    def _poll(self, room: int) -> None:
        state = self.state
        if room > 0:
            self._take(self._source.poll(_POLL_S, room))
            state.last_poll = time.monotonic()
            return
        # Full: wake as soon as a video finishes, not at the next poll timeout.
        self._slot_freed.wait(_POLL_S)
        self._slot_freed.clear()
        if time.monotonic() - state.last_poll > _PAUSED_POLL_EVERY_S:
            # Paused: this poll keeps us in the group. It returns records only from
            # partitions a rebalance has just assigned (unpaused); they are taken.
            self._take(self._source.poll(_POLL_S / 2, 1))
            state.last_poll = time.monotonic()

    def _sample_health(self) -> None:
        """What /readyz reports: the broker answers; no partition is held behind an offset.

        (Held for good: an unpublishable upload; held too long: `kafka.stuck_after_s`.)
        """
        state = self.state
        state.broker_reachable = self._source.reachable()
        blocked = self._tracker.blocked()
        if len(blocked) != state.blocked_partitions:
            log.warning(
                "partitions_blocked" if blocked else "partitions_unblocked",
                partitions={p.partition: offset for p, offset in blocked.items()},
            )
            state.blocked_partitions = len(blocked)
            self.metrics.blocked_partitions.set(len(blocked))
        stuck = self._tracker.stuck(self.settings.kafka.stuck_after_s)
        if len(stuck) != state.stuck_partitions:
            log.warning(
                "partitions_stuck" if stuck else "partitions_unstuck",
                partitions={p.partition: offset for p, offset in stuck.items()},
                limit_s=self.settings.kafka.stuck_after_s,
            )
            state.stuck_partitions = len(stuck)
            self.metrics.stuck_partitions.set(len(stuck))

    def _commit_if_due(self) -> None:
        now = time.monotonic()
        if now - self.state.last_commit >= self.settings.kafka.commit_interval_s:
            self._commit()
            self.state.last_commit = now

    def _report_lag_if_due(self) -> None:
        now = time.monotonic()
        if now - self.state.last_lag >= _LAG_EVERY_S:
            self._report_lag()
            self.state.last_lag = now

    # -- work ------------------------------------------------------------------

    def _take(self, messages: list[Message]) -> None:
        for message in messages:
            if isinstance(message, Skipped):  # unreadable, sought past: nothing to do, but done
                self._tracker.started(message.where, message.offset)
                self._tracker.finished(message.where, message.offset)
                self.metrics.records_skipped.labels(message.reason).inc(message.count)
                continue
            self._start(message)
            self.state.consumed += 1

    def _start(self, message: Message) -> None:
        self._tracker.started(message.where, message.offset)
        self.metrics.uploads.inc()
        self.metrics.in_flight.inc()
        with self._lock:
            self._working += 1
        self._submit(self._work, message)

    def _submit(self, work: Callable[..., None], *args: object) -> None:
        future = self._pool.submit(work, *args)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def _work(self, message: Message) -> None:
        try:
            records = self._settled(message, lambda: self._processor.prepare(message))
        finally:
            with self._lock:
                self._working -= 1
            self.metrics.in_flight.dec()
            self._slot_freed.set()
        if records is not None:
            self._send_outcome(message, records)

    def _settled(self, message: Message, step: Callable[[], _T]) -> _T | None:
        """`step`'s result; None when it handed the message back or found it unpublishable
        (then its partition's commits stop before it)."""
        try:
            return step()
        except HandedBack:
            log.info("handed_back", partition=message.partition, offset=message.offset)
        except Unpublishable:
            self._tracker.block(message.where, message.offset)
        return None

    def _send_outcome(self, message: Message, records: list[OutboundRecord]) -> None:
        """Queue the records; the offset is finished once the broker has them all."""
        if not records:
            self._finished(message)
            return
        pending = _PendingOutcome(len(records))

        def acknowledged() -> None:
            if pending.acknowledged():
                self._finished(message)

        def failed(error: Exception) -> None:
            if pending.failed():
                log.warning("publish_retry", error=str(error), partition=message.partition,
                            offset=message.offset)  # fmt: skip
                self._republish_later(message, records)

        for record in records:
            self._sink.send_async(
                record.topic, record.key, record.value, record.headers, acknowledged, failed
            )

    def _republish_later(self, message: Message, records: list[OutboundRecord]) -> None:
        """On a worker: called from the producer's thread, which must not wait."""
        try:
            self._submit(self._republish, message, records)
        except RuntimeError:  # the pool is shut down: stopping; the offset stays uncommitted
            log.info("handed_back", partition=message.partition, offset=message.offset)

    def _republish(self, message: Message, records: list[OutboundRecord]) -> None:
        def sent() -> bool:
            self._processor.republish(message, records)
            return True

        if self._settled(message, sent):
            self._finished(message)

    def _finished(self, message: Message) -> None:
        self._tracker.finished(message.where, message.offset)
        self.state.outcome()
        self._slot_freed.set()

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    # -- commits ---------------------------------------------------------------

    def _commit(self) -> None:
        """Commit what is finished. No flush: an offset is finished only once the broker has
        acknowledged its outcome, and a flush here would hold the loop (and so the group's
        heartbeats and rejoins) for as long as the broker does not answer."""
        try:
            positions = self._tracker.committable()
            if positions:
                self._source.commit(positions)
                self._tracker.committed(positions)
        except Exception as error:  # the next cycle retries; nothing is lost, maybe redone
            log.warning("commit_failed", error=f"{type(error).__name__}: {error}")

    def _flush_and_commit(self) -> dict[Partition, int]:
        """Flush the producer (queued outcomes are acknowledged, so their offsets finish),
        then commit what is finished; what was committed."""
        self._sink.flush(timeout_s=self.settings.kafka.flush_timeout_s)
        positions = self._tracker.committable()
        if positions:
            self._source.commit(positions)
            self._tracker.committed(positions)
        return positions

    def on_partitions_revoked(self, revoked: set[Partition]) -> None:
        """Commit what is finished on the partitions leaving us, and stop committing them.

        Runs on the Kafka client's IO thread, so nothing here may block: not the
        commit, and not a producer flush either (with the broker restarting, a
        flush there held the group's rejoin for minutes). An offset is finished
        only once the broker acknowledged its events, so outcomes still queued are
        screened again by the next owner (same event ids).
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

    def _shut_down(self) -> None:
        """Drain, commit what finished, then close within `SHUTDOWN_TEARDOWN_S`.

        Order: the final commit (right after the drain), the producer (it flushes),
        the consumer (it leaves the group; its revoke callback commits anything
        finished since), the worker pool (not waited for), then the closers in the
        order given (the detector: batching scorer, then decoder processes; the
        cache; HTTP), which share what is left of the budget.
        """
        self._drain()
        self.state.stop()  # whatever still runs hands back at its next wait
        began = time.monotonic()
        deadline = began + SHUTDOWN_TEARDOWN_S
        self._final_commit(_COMMIT_SHARE_S)
        steps: list[tuple[str, Callable[[], None], float]] = [
            ("producer", self._sink.close, _PRODUCER_SHARE_S),
            ("consumer", self._source.close, _CONSUMER_SHARE_S),
            ("workers", lambda: self._pool.shutdown(wait=False, cancel_futures=True), 0.5),
            *((name, close, SHUTDOWN_TEARDOWN_S) for name, close in self._closers),
        ]
        for name, close, share in steps:
            left = min(share, deadline - time.monotonic())
            if left <= 0:
                log.warning("close_skipped", component=name, reason="the teardown budget is spent")
                continue
            error = self._within(name, close, left)
            if error is not None:  # keep closing the rest
                log.warning(
                    "close_failed", component=name, error=str(error), limit_s=round(left, 2)
                )
        log.info("stopped", teardown_s=round(time.monotonic() - began, 2),
                 limit_s=SHUTDOWN_TEARDOWN_S)  # fmt: skip

    def _drain(self) -> None:
        """Give in-flight work `drain_seconds` (or less, see `_drain_limit`) to finish.

        What is still running then hands back: the stop flag is set, and its offset
        stays uncommitted (whatever it publishes later is redone by the next owner,
        with the same event ids).
        """
        with self._lock:
            pending = set(self._futures)
        if not pending:
            return
        limit = self._drain_limit()
        log.info("draining", in_flight=len(pending), limit_s=round(limit, 2))
        _, not_done = wait(pending, timeout=limit)
        if not_done:
            log.warning("drain_timeout", handed_back=len(not_done), limit_s=round(limit, 2))

    def _drain_limit(self) -> float:
        """`drain_seconds`, cut short where the group would drop this member before the
        final commit (it has not polled since the stop)."""
        limit = self.settings.drain_seconds
        since_poll = time.monotonic() - self.state.last_poll
        member_left = (
            self.settings.kafka.max_poll_interval_ms / 1000 - since_poll - _MEMBERSHIP_MARGIN_S
        )
        if member_left < limit:
            log.warning(
                "drain_shortened", drain_seconds=limit, limit_s=round(max(0.0, member_left), 2),
                reason="the group drops a member that has not polled within "
                "kafka.max_poll_interval_ms, and its commits fail",
            )  # fmt: skip
            return max(0.0, member_left)
        return limit

    def _final_commit(self, timeout_s: float) -> None:
        """Flush and commit what finished, synchronously, within `timeout_s`: retried
        while there is time, logged either way (`final_commit`, `final_commit_failed`)."""
        if self._tracker.in_flight() == 0 and not self._tracker.committable():
            return
        committed: list[dict[Partition, int]] = []
        deadline = time.monotonic() + timeout_s
        while True:
            error = self._within(
                "commit",
                lambda: committed.append(self._flush_and_commit()),
                deadline - time.monotonic(),
            )
            if error is None:
                positions = committed[-1] if committed else {}
                where = {f"{p.topic}/{p.partition}": offset for p, offset in positions.items()}
                log.info("final_commit", positions=where)
                return
            if isinstance(error, _Overran) or time.monotonic() + _COMMIT_RETRY_S >= deadline:
                break
            time.sleep(_COMMIT_RETRY_S)
        where = {f"{p.topic}/{p.partition}": o for p, o in self._tracker.committable().items()}
        log.error(
            "final_commit_failed", positions=where, error=f"{type(error).__name__}: {error}",
            effect="work finished since the last commit is screened again (same event ids)",
        )  # fmt: skip

    @staticmethod
    def _within(name: str, step: Callable[[], None], timeout_s: float) -> Exception | None:
        """Run `step` on a thread of its own for at most `timeout_s`: None, or what went wrong."""
        failed: list[Exception] = []

        def run() -> None:
            try:
                step()
            except Exception as error:
                failed.append(error)

        thread = threading.Thread(target=run, name=f"shutdown-{name}", daemon=True)
        thread.start()
        thread.join(max(0.0, timeout_s))
        if thread.is_alive():
            return _Overran(f"still running after {timeout_s:.2f} s; left behind")
        return failed[0] if failed else None


class _PendingOutcome:
    """The acknowledgements one outcome still waits for; its first failure is reported once."""

    def __init__(self, records: int) -> None:
        self._lock = threading.Lock()
        self._left = records
        self._failed = False

    def acknowledged(self) -> bool:
        """True when this acknowledgement completes the outcome (and none failed)."""
        with self._lock:
            self._left -= 1
            return self._left == 0 and not self._failed

    def failed(self) -> bool:
        """True for the first failure: the outcome must be sent again."""
        with self._lock:
            first = not self._failed
            self._failed = True
            return first
