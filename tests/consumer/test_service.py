"""The polling loop with in-memory twins: bounded work, ordered commits, a clean stop."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from consumer.broker import InMemoryEventSink, InMemoryUploadSource, Message
from consumer.cache import InMemoryVerdictCache
from consumer.media import InMemoryFetcher
from consumer.metrics import Metrics
from consumer.offsets import Partition
from consumer.processing import UploadProcessor
from consumer.service import Service
from consumer.settings import KafkaSettings, Settings
from schemas import ScreeningVerdict
from tests.schemas.factories import unreadable


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
    """Stands in for the detector: takes `seconds`, records how many ran at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def __call__(self, path: Path, **kwargs: Any) -> ScreeningVerdict:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return unreadable(
            video_id=kwargs["video_id"], uri=kwargs["uri"], content_sha256=kwargs["content_sha256"]
        )


def service_for(
    messages: list[Message], screen: SlowScreen, **kafka: Any
) -> tuple[Service, InMemoryUploadSource, InMemoryEventSink]:
    settings = Settings(
        kafka=KafkaSettings(verdicts_topic="verdicts", commit_interval_s=0.05, **kafka),
        drain_seconds=10,
    )
    source = InMemoryUploadSource(messages)
    sink = InMemoryEventSink()
    stopping = threading.Event()
    fetcher = InMemoryFetcher({f"file:///m/{i}.mp4": f"video {i}".encode() for i in range(100)})
    processor = UploadProcessor(
        settings, screen=screen, model_sha256="a" * 64, fetcher=fetcher,
        cache=InMemoryVerdictCache(), sink=sink, metrics=Metrics(), stopping=stopping,
    )  # fmt: skip
    service = Service(
        settings, source_factory=lambda _: source, sink=sink, processor=processor,
        metrics=Metrics(), stopping=stopping,
    )  # fmt: skip
    return service, source, sink


def test_run_stops_after_n_outcomes_and_commits_every_partition_to_its_end() -> None:
    service, source, sink = service_for(uploads(6), SlowScreen(0.01))
    service.run(max_messages=6)
    assert len(sink.on("verdicts")) == 6
    assert source.committed() == {Partition("uploads", 0): 3, Partition("uploads", 1): 3}
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
    runner = threading.Thread(target=service.run)
    runner.start()
    while screen.running < 2:
        time.sleep(0.01)
    stopped_at = time.monotonic()
    service.stopping.set()
    runner.join(timeout=15)
    assert not runner.is_alive()
    assert time.monotonic() - stopped_at < 5
    assert len(sink.on("verdicts")) == 2  # the two in flight finished; no new ones started
    assert source.committed() == {Partition("uploads", 0): 2}
