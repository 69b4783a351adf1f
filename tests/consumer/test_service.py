"""The polling loop with in-memory twins: bounded work, ordered commits, a clean stop."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.broker import InMemoryEventSink, InMemoryUploadSource, Message, PublishError
from consumer.cache import InMemoryVerdictCache
from consumer.media import InMemoryFetcher
from consumer.metrics import Metrics
from consumer.offsets import Partition
from consumer.processing import UploadProcessor
from consumer.service import SHUTDOWN_TEARDOWN_S, RunState, Service
from consumer.settings import KafkaSettings, Settings
from schemas import ScreeningVerdict
from tests.schemas.factories import unreadable

P0 = Partition("uploads", 0)
P1 = Partition("uploads", 1)


def uploads(count: int, partitions: int = 2) -> list[Message]:
    messages = []
    for i in range(count):
        event = {"video_id": f"v-{i}", "uri": f"file:///m/{i}.mp4",
                 "uploaded_at": "2026-11-20T10:00:00Z"}  # fmt: skip
        messages.append(
            Message("uploads", i % partitions, i // partitions, None, json.dumps(event).encode())
        )
    return messages


class SlowScreen:
    """Stands in for the detector: takes `seconds`, records how many ran at once.

    A video id in `held` is not finished until `release(video_id)`.
    """

    def __init__(self, seconds: float, held: tuple[str, ...] = ()) -> None:
        self.seconds = seconds
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()
        self.gates = {video_id: threading.Event() for video_id in held}

    def release(self, video_id: str) -> None:
        self.gates[video_id].set()

    def __call__(self, path: Path, **kwargs: Any) -> ScreeningVerdict:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        gate = self.gates.get(kwargs["video_id"])
        if gate is not None:
            assert gate.wait(10), "never released"
        with self.lock:
            self.running -= 1
        return unreadable(
            video_id=kwargs["video_id"], uri=kwargs["uri"], content_sha256=kwargs["content_sha256"]
        )


def service_for(
    messages: list[Message], screen: SlowScreen, source: InMemoryUploadSource | None = None,
    sink: InMemoryEventSink | None = None, drain_seconds: float = 10,
    closers: list[tuple[str, Callable[[], None]]] | None = None, **kafka: Any,
) -> tuple[Service, InMemoryUploadSource, InMemoryEventSink]:  # fmt: skip
    settings = Settings(
        kafka=KafkaSettings(verdicts_topic="verdicts", **{"commit_interval_s": 0.05, **kafka}),
        drain_seconds=drain_seconds,
    )
    source = source or InMemoryUploadSource(messages)
    sink = sink or InMemoryEventSink()
    state = RunState()
    fetcher = InMemoryFetcher({f"file:///m/{i}.mp4": f"video {i}".encode() for i in range(100)})
    processor = UploadProcessor(
        settings, screen=screen, model_sha256="a" * 64, fetcher=fetcher,
        cache=InMemoryVerdictCache(), sink=sink, metrics=Metrics(), stopping=state,
    )  # fmt: skip
    service = Service(
        settings, source=source, sink=sink, processor=processor, metrics=Metrics(), state=state,
        closers=closers,
    )  # fmt: skip
    return service, source, sink


def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def verdict_ids(sink: InMemoryEventSink) -> set[str]:
    return {json.loads(event.value)["data"]["video_id"] for event in sink.on("verdicts")}


def test_run_stops_after_n_outcomes_and_commits_every_partition_to_its_end() -> None:
    service, source, sink = service_for(uploads(6), SlowScreen(0.01))
    service.run(max_messages=6)
    assert len(sink.on("verdicts")) == 6
    assert source.committed() == {P0: 3, P1: 3}
    assert source.closed


def test_no_more_than_max_in_flight_videos_are_screened_at_once() -> None:
    screen = SlowScreen(0.1)
    service, _, sink = service_for(uploads(10), screen, max_in_flight=3)
    service.run(max_messages=10)
    assert screen.most == 3
    assert len(sink.on("verdicts")) == 10


def test_a_stop_finishes_in_flight_work_commits_it_and_takes_nothing_new() -> None:
    screen = SlowScreen(0.5)
    service, source, sink = service_for(uploads(8, partitions=1), screen, max_in_flight=2)
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    until(lambda: screen.running >= 2)
    stopped_at = time.monotonic()
    service.stop()
    runner.join(timeout=15)
    assert not runner.is_alive()
    assert time.monotonic() - stopped_at < 5
    assert len(sink.on("verdicts")) == 2  # the two in flight finished; no new ones started
    assert source.committed() == {Partition("uploads", 0): 2}


def test_a_revoked_partition_has_its_finished_prefix_committed_and_nothing_after() -> None:
    """The finished work of a partition given to another member is committed as it goes."""
    screen = SlowScreen(0.0, held=("v-4",))  # P0: v-0, v-2 finish; v-4 (offset 2) is held
    service, source, sink = service_for(uploads(6), screen, max_in_flight=6, commit_interval_s=3600)
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    until(lambda: service.state.outcomes == 5)
    source.rebalance([P1])  # P0 goes to another member
    until(lambda: source.commits != [])
    assert source.commits == [{P0: 2, P1: 3}]  # P0 up to its held offset; P1 complete
    screen.release("v-4")
    until(lambda: "v-4" in verdict_ids(sink))
    service.stop()
    runner.join(timeout=15)
    assert source.committed() == {P0: 2, P1: 3}  # P0 is not ours any more: v-4 is redone


def test_a_partition_an_eager_rebalance_hands_straight_back_keeps_its_finished_work() -> None:
    screen = SlowScreen(0.0, held=("v-0",))  # offset 0 is held, offset 1 finishes first
    service, source, sink = service_for(
        uploads(2, partitions=1), screen, max_in_flight=2, commit_interval_s=3600
    )
    runner = threading.Thread(target=service.run, kwargs={"max_messages": 2}, daemon=True)
    runner.start()
    until(lambda: service.state.outcomes == 1)
    assert verdict_ids(sink) == {"v-1"}
    source.rebalance([P0])  # revoked and assigned again at once
    until(lambda: source.commits != [])
    assert source.commits == [{P0: 0}]  # nothing contiguous was finished yet
    screen.release("v-0")
    runner.join(timeout=15)
    assert not runner.is_alive()
    assert source.committed() == {P0: 2}  # offset 1, finished before the rebalance, counts


def test_a_record_that_a_rebalance_lets_through_while_paused_is_screened_not_dropped() -> None:
    """A rebalance unpauses what it assigns, so the paused loop's keep-alive poll may
    return a record; it must get an outcome, or the commits behind it would skip it."""
    screen = SlowScreen(0.0, held=("v-0",))
    messages = uploads(3)  # P0: v-0, v-2; P1: v-1
    service, source, sink = service_for(messages, screen, max_in_flight=1)
    runner = threading.Thread(target=service.run, kwargs={"max_messages": 3}, daemon=True)
    runner.start()
    until(lambda: screen.running == 1 and source.paused() == {P0, P1})
    source.rebalance([P0, P1])
    until(lambda: source.lag() == {P0: 1})  # v-1 came through the keep-alive poll
    until(lambda: source.paused() == {P0, P1})  # and the loop, still full, paused again
    screen.release("v-0")
    runner.join(timeout=15)
    assert not runner.is_alive()
    assert verdict_ids(sink) == {"v-0", "v-1", "v-2"}
    assert source.committed() == {P0: 2, P1: 1}


def test_liveness_follows_the_polling_loop() -> None:
    class StuckSource(InMemoryUploadSource):
        def __init__(self) -> None:
            super().__init__([])
            self.unstuck = threading.Event()
            self.polls = 0

        def poll(self, timeout_s: float, max_records: int) -> list[Message]:
            self.polls += 1
            if self.polls == 5:
                assert self.unstuck.wait(10)
            return super().poll(timeout_s, max_records)

    source = StuckSource()
    service, _, _ = service_for([], SlowScreen(0.0), source=source)
    state = service.state
    assert state.alive(stale_after_s=0.3)  # not started is not dead
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    until(lambda: source.polls >= 5)
    until(lambda: not state.alive(stale_after_s=0.3), timeout_s=2)
    source.unstuck.set()
    until(lambda: state.alive(stale_after_s=0.3), timeout_s=2)
    service.stop()
    runner.join(timeout=15)
    assert state.alive(stale_after_s=0.3) and not state.ready  # stopped on purpose


def test_a_loop_that_raised_is_not_alive() -> None:
    class BrokenSource(InMemoryUploadSource):
        def poll(self, timeout_s: float, max_records: int) -> list[Message]:
            raise RuntimeError("the client is broken")

    service, source, _ = service_for([], SlowScreen(0.0), source=BrokenSource([]))
    with pytest.raises(RuntimeError):
        service.run()
    assert not service.state.alive(stale_after_s=60)
    assert source.closed


payloads = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=100).map(str.encode),
    st.fixed_dictionaries(
        {"video_id": st.text(max_size=30), "uri": st.sampled_from(
            ["file:///m/1.mp4", "file:///m/2.mp4", "file:///m/missing.mp4", "https://x/y", ""]),
         "uploaded_at": st.sampled_from(["2026-11-20T10:00:00Z", "yesterday", ""])},
        optional={"sha256": st.text(max_size=70), "size_bytes": st.integers(),
                  "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5))},
    ).map(lambda d: json.dumps(d).encode()),
    st.none(),
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(payloads, min_size=1, max_size=8))
def test_arbitrary_payloads_each_get_exactly_one_outcome_and_are_committed(
    batch: list[bytes | None],
) -> None:
    """The unit twin of the integration test of the same idea, with many more examples."""
    messages = [Message("uploads", 0, i, None, value) for i, value in enumerate(batch)]
    service, source, sink = service_for([], SlowScreen(0.0), source=InMemoryUploadSource(messages))
    service.run(max_messages=len(batch))
    outcomes = [*sink.on("verdicts"), *sink.on(service.settings.kafka.dlq_topic)]
    assert len(outcomes) == len(batch)
    assert source.committed() == {P0: len(batch)}


class RefusingSink(InMemoryEventSink):
    """A broker that can never take anything about one upload: not its verdict, not its letter."""

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Any) -> None:
        if b"v-poison" in value:
            raise PublishError("MessageSizeTooLargeError", "never fits", retriable=False)
        super().send(topic, key, value, headers)


def test_an_unpublishable_upload_holds_its_partitions_commits_but_not_a_worker() -> None:
    messages = uploads(4, partitions=1)
    messages[1] = Message("uploads", 0, 1, None, json.dumps(
        {"video_id": "v-poison", "uri": "file:///m/1.mp4", "uploaded_at": "2026-11-20T10:00:00Z"}
    ).encode())  # fmt: skip
    sink = RefusingSink()
    service, source, _ = service_for(messages, SlowScreen(0.01), sink=sink, max_in_flight=1)
    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        until(lambda: len(sink.on("verdicts")) == 3 and service.state.blocked_partitions == 1)
        read = service.metrics.registry.get_sample_value
        assert read("deepscreen_blocked_partitions") == 1
        until(lambda: source.committed().get(P0) == 1)
        time.sleep(0.2)  # more commit cycles: the position stays before the poisoned offset
        assert source.committed() == {P0: 1}
        assert verdict_ids(sink) == {"v-0", "v-2", "v-3"}
    finally:
        service.stop()
        runner.join(10)


def test_offsets_the_source_skipped_as_unreadable_are_counted_and_committed_past() -> None:
    from consumer.broker import Skipped  # (appended test; the import block is shared)

    first, later = uploads(2, partitions=1)
    messages = [
        first,  # offset 0
        Skipped("uploads", 0, 2, None, None, reason="corrupt_record", count=2),  # 1 and 2
        Message("uploads", 0, 3, None, later.value),
        Skipped("uploads", 0, 4, None, None, reason="unsupported_codec"),  # the last one
    ]
    service, source, sink = service_for(messages, SlowScreen(0.01))
    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        until(lambda: source.committed() == {P0: 5})
    finally:
        service.stop()
        runner.join(10)
    read = service.metrics.registry.get_sample_value
    assert read("deepscreen_records_skipped_total", {"reason": "corrupt_record"}) == 2
    assert read("deepscreen_records_skipped_total", {"reason": "unsupported_codec"}) == 1
    assert read("deepscreen_uploads_consumed_total") == 2
    assert verdict_ids(sink) == {"v-0", "v-1"}
    assert sink.on(service.settings.kafka.dlq_topic) == []


def test_readiness_says_when_a_partition_waits_too_long_on_one_upload() -> None:
    screen = SlowScreen(0.0, held=("v-0",))
    service, _, sink = service_for(uploads(3, partitions=1), screen, stuck_after_s=0.3)
    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        until(lambda: service.state.stuck_partitions == 1)
        assert service.metrics.registry.get_sample_value("deepscreen_stuck_partitions") == 1
        screen.release("v-0")
        until(lambda: service.state.stuck_partitions == 0)
        until(lambda: len(sink.on("verdicts")) == 3)
    finally:
        service.stop()
        runner.join(10)


# -- stopping: the drain, the final commit, a bounded teardown -----------------------


class GroupSource(InMemoryUploadSource):
    """A group member as the broker sees it: one that has not polled for
    `max_poll_interval_s` has been dropped, and its commits fail."""

    def __init__(self, messages: list[Message], max_poll_interval_s: float) -> None:
        super().__init__(messages)
        self.max_poll_interval_s = max_poll_interval_s
        self.last_poll = time.monotonic()

    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        self.last_poll = time.monotonic()
        return super().poll(timeout_s, max_records)

    def commit(self, positions: dict[Partition, int]) -> None:
        if time.monotonic() - self.last_poll > self.max_poll_interval_s:
            raise RuntimeError("CommitFailedError: not part of an active group")
        super().commit(positions)


def stopping_service(
    screen: SlowScreen, source: InMemoryUploadSource, sink: InMemoryEventSink,
    drain_seconds: float, closers: list[tuple[str, Callable[[], None]]] | None = None,
    **kafka: Any,
) -> Service:  # fmt: skip
    service, _, _ = service_for([], screen, source=source, sink=sink,
                                drain_seconds=drain_seconds, closers=closers, **kafka)  # fmt: skip
    return service


def test_work_finished_in_the_drain_is_committed_before_the_group_drops_the_member() -> None:
    """The drain ends early enough that the final commit still counts (30 s of drain
    against a 10 s poll interval would otherwise lose it), and it is committed at once."""

    screen = SlowScreen(0.0, held=("v-0", "v-1"))  # v-0 finishes in the drain, v-1 outlasts it
    source = GroupSource(uploads(2, partitions=1), max_poll_interval_s=10)
    sink = InMemoryEventSink()
    service = stopping_service(screen, source, sink, drain_seconds=30, max_in_flight=2,
                               max_poll_interval_ms=10_000)  # fmt: skip
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    try:
        until(lambda: screen.running == 2)
        asked = time.monotonic()
        service.stop()
        time.sleep(0.3)
        screen.release("v-0")
        runner.join(timeout=10 + SHUTDOWN_TEARDOWN_S)
        took = time.monotonic() - asked
        assert not runner.is_alive(), "the drain outlived the group membership"
        assert took < 10 + SHUTDOWN_TEARDOWN_S
        assert verdict_ids(sink) == {"v-0"}
        assert source.committed() == {P0: 1}  # v-0, finished in the drain; v-1 is redone
    finally:
        screen.release("v-1")


class StuckOnClose(InMemoryEventSink):
    def __init__(self) -> None:
        super().__init__()
        self.unstuck = threading.Event()

    def close(self) -> None:
        self.unstuck.wait(60)


def test_a_stop_ends_within_the_drain_plus_the_teardown_bound_even_if_closing_hangs() -> None:

    screen = SlowScreen(0.0, held=("v-0", "v-1"))  # v-0 finishes in the drain, v-1 outlasts it
    source, sink = InMemoryUploadSource(uploads(3, partitions=1)), StuckOnClose()
    stuck_closer = threading.Event()

    def stuck() -> None:
        stuck_closer.wait(60)

    service = stopping_service(
        screen, source, sink, drain_seconds=1, max_in_flight=2,
        closers=[("detector", stuck), ("cache", lambda: None)],
    )  # fmt: skip
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    try:
        until(lambda: screen.running == 2)
        asked = time.monotonic()
        service.stop()
        screen.release("v-0")
        runner.join(timeout=1 + SHUTDOWN_TEARDOWN_S + 5)
        took = time.monotonic() - asked
        assert not runner.is_alive(), "the shutdown hung on a close"
        assert took <= 1 + SHUTDOWN_TEARDOWN_S + 1.0, f"took {took:.2f} s"
        assert source.committed() == {P0: 1}
        assert source.closed
    finally:
        screen.release("v-1")
        sink.unstuck.set()
        stuck_closer.set()


class DeferredAckSink(InMemoryEventSink):
    """A broker whose acknowledgements arrive only when the test lets them (`acknowledge`).

    `fail_first` sends fail asynchronously (retriable, as in an outage) instead.
    """

    def __init__(self, fail_first: int = 0) -> None:
        super().__init__()
        self.waiting: list[Callable[[], None]] = []
        self.fail_first = fail_first
        self.flushes = 0

    def send_async(
        self, topic: str, key: bytes | None, value: bytes, headers: Any,
        acknowledged: Callable[[], None], failed: Callable[[PublishError], None],
    ) -> None:  # fmt: skip
        with self._lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                failed(PublishError("KafkaTimeoutError", "no answer", retriable=True))
                return
            self.waiting.append(acknowledged)
        self.send(topic, key, value, headers)  # recorded as sent, not yet acknowledged

    def acknowledge(self) -> None:
        with self._lock:
            waiting, self.waiting = self.waiting, []
        for ack in waiting:
            ack()

    def flush(self, timeout_s: float) -> None:
        self.flushes += 1


def test_a_worker_takes_the_next_upload_while_the_previous_outcome_awaits_its_ack() -> None:
    sink = DeferredAckSink()
    service, source, _ = service_for(uploads(4, partitions=1), SlowScreen(0.01), sink=sink,
                                     max_in_flight=1)  # fmt: skip
    runner = threading.Thread(target=service.run, kwargs={"max_messages": 4})
    runner.start()
    try:
        # one worker, no acknowledgement yet: all four were screened and queued regardless
        until(lambda: len(sink.on("verdicts")) == 4)
        time.sleep(0.2)  # commit cycles pass: nothing acknowledged, nothing committed past 0
        assert source.committed().get(P0, 0) == 0
        assert service._tracker.in_flight() == 4
        sink.acknowledge()
        runner.join(10)
        assert not runner.is_alive()
        assert source.committed() == {P0: 4}
    finally:
        service.stop()
        runner.join(10)


def test_an_outcome_whose_send_fails_is_sent_again_and_only_then_committed() -> None:
    sink = DeferredAckSink(fail_first=1)
    service, source, _ = service_for(uploads(2, partitions=1), SlowScreen(0.01), sink=sink,
                                     max_in_flight=1)  # fmt: skip
    runner = threading.Thread(target=service.run, kwargs={"max_messages": 2})
    runner.start()
    try:
        # the first verdict's queued send failed: the republish sends it (waiting for its
        # acknowledgement, so it is finished by then); the second awaits its ack
        until(lambda: verdict_ids(sink) == {"v-0", "v-1"})
        until(lambda: source.committed() == {P0: 1})
        sink.acknowledge()
        runner.join(10)
        assert source.committed() == {P0: 2}
        assert [json.loads(e.value)["data"]["video_id"] for e in sink.on("verdicts")].count(
            "v-0"
        ) == 1  # the failed send never reached the broker; the republish did, once
    finally:
        service.stop()
        runner.join(10)


def test_queued_outcomes_are_flushed_and_committed_before_a_stop_ends() -> None:
    sink = DeferredAckSink()
    sink.flush = lambda timeout_s: sink.acknowledge()  # type: ignore[method-assign]
    service, source, _ = service_for(uploads(3, partitions=1), SlowScreen(0.01), sink=sink,
                                     commit_interval_s=60)  # fmt: skip
    runner = threading.Thread(target=service.run)
    runner.start()
    until(lambda: len(sink.on("verdicts")) == 3)
    service.stop()
    runner.join(10)
    assert source.committed() == {P0: 3}
