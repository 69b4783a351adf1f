"""Producer and publish timings come from the settings, not from literals in the code."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from consumer import broker
from consumer.broker import InMemoryEventSink, InMemoryUploadSource, KafkaEventSink, Message
from consumer.cache import CacheKey, InMemoryVerdictCache
from consumer.media import InMemoryFetcher
from consumer.metrics import Metrics
from consumer.processing import HandedBack, UploadProcessor
from consumer.service import RunState, Service
from consumer.settings import KafkaSettings, RedisSettings, Settings
from schemas import ScreeningVerdict
from tests.schemas.factories import unreadable

MODEL_SHA256 = "a" * 64
VIDEO = b"some video bytes"


class RecordedStop(threading.Event):
    """A stop flag that records each wait and does not sleep; set after `stop_after` waits."""

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__()
        self.waits: list[float] = []
        self._stop_after = stop_after

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        return self._stop_after is not None and len(self.waits) >= self._stop_after


def processor(
    settings: Settings, stopping: threading.Event, sink: InMemoryEventSink, cache: Any = None
) -> UploadProcessor:
    def screen(path: Path, **kwargs: Any) -> ScreeningVerdict:
        return unreadable(
            video_id=kwargs["video_id"], uri=kwargs["uri"], content_sha256=kwargs["content_sha256"]
        )

    return UploadProcessor(
        settings,
        screen=screen,
        model_sha256=MODEL_SHA256,
        fetcher=InMemoryFetcher({"file:///m/v.mp4": VIDEO}),
        cache=cache or InMemoryVerdictCache(),
        sink=sink,
        metrics=Metrics(),
        stopping=stopping,
    )


def upload(video_id: str = "v-1", offset: int = 0) -> Message:
    event = {"video_id": video_id, "uri": "file:///m/v.mp4", "uploaded_at": "2026-11-20T10:00:00Z"}
    return Message("uploads", 0, offset, video_id.encode(), json.dumps(event).encode(), [])


class FakeProducer:
    """Stands in for `kafka.KafkaProducer`: records its options and the timeouts it is given."""

    made: ClassVar[list[FakeProducer]] = []

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.timeouts: dict[str, float] = {}
        FakeProducer.made.append(self)

    def send(self, topic: str, **_: Any) -> FakeProducer:
        return self

    def get(self, timeout: float) -> None:
        self.timeouts["ack"] = timeout

    def flush(self, timeout: float) -> None:
        self.timeouts["flush"] = timeout

    def close(self, timeout: float) -> None:
        self.timeouts["close"] = timeout


def test_the_producer_takes_its_linger_batch_retries_and_ack_timeout_from_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(broker, "KafkaProducer", FakeProducer)
    settings = KafkaSettings(
        producer_ack_timeout_s=7.5, producer_linger_ms=20, producer_batch_bytes=65536,
        producer_retries=9,
    )  # fmt: skip
    sink = KafkaEventSink(settings)
    sink.send("flags", b"k", b"v", [])
    sink.close()
    [producer] = FakeProducer.made[-1:]
    assert (producer.options["linger_ms"], producer.options["retries"]) == (20, 9)
    assert producer.options["batch_size"] == 65536
    assert producer.options["acks"] == "all" and producer.options["enable_idempotence"] is True
    assert producer.timeouts["ack"] == 7.5
    assert producer.timeouts["close"] == broker.PRODUCER_CLOSE_TIMEOUT_S


def test_a_refused_publish_backs_off_from_the_initial_delay_doubling_up_to_the_max() -> None:
    settings = Settings(
        kafka=KafkaSettings(publish_backoff_initial_s=0.1, publish_backoff_max_s=0.5)
    )
    stopping = RecordedStop()
    sink = InMemoryEventSink()
    sink.fail_next = 5
    bad = Message("uploads", 0, 3, b"v-9", b"not an upload event", [])
    processor(settings, stopping, sink).process(bad)  # dead-lettered at once, once published
    assert stopping.waits == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    assert len(sink.on(settings.kafka.dlq_topic)) == 1


def test_a_replica_waiting_for_another_ones_verdict_polls_every_claim_poll() -> None:
    settings = Settings(redis=RedisSettings(claim_poll_s=0.05, claim_wait_s=60))
    cache = InMemoryVerdictCache()
    assert cache.claim(CacheKey(MODEL_SHA256, hashlib.sha256(VIDEO).hexdigest()), "other")
    stopping = RecordedStop(stop_after=3)
    with pytest.raises(HandedBack):
        processor(settings, stopping, InMemoryEventSink(), cache).process(upload())
    assert stopping.waits == [0.05, 0.05, 0.05]


class FlushRecordingSink(InMemoryEventSink):
    def __init__(self) -> None:
        super().__init__()
        self.flush_timeouts: list[float] = []

    def flush(self, timeout_s: float) -> None:
        self.flush_timeouts.append(timeout_s)


def test_the_producer_is_flushed_before_a_commit_within_the_flush_timeout() -> None:
    settings = Settings(
        kafka=KafkaSettings(verdicts_topic="verdicts", commit_interval_s=0.01, flush_timeout_s=12.5)
    )
    sink = FlushRecordingSink()
    stopping = threading.Event()
    source = InMemoryUploadSource([upload("v-1", 0), upload("v-2", 1)])
    service = Service(
        settings,
        source=source,
        sink=sink,
        processor=processor(settings, stopping, sink),
        metrics=Metrics(),
        state=RunState(),
    )
    service.run(max_messages=2)
    assert source.committed() and sink.flush_timeouts
    assert set(sink.flush_timeouts) == {12.5}
