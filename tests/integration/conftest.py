"""A real Kafka-compatible broker (Tansu) and a real redis-server, each on a free port."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from consumer.app import App, build_app
from consumer.embedded import embedded_kafka_settings
from consumer.settings import (
    DetectorSettings,
    HttpSettings,
    MediaSettings,
    RedisSettings,
    RetrySettings,
    Settings,
)
from tests.conftest import SyntheticVideos
from tests.support.broker import TansuBroker
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="session")
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as running:
        yield running


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    with RedisServer() as running:
        yield running


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory, synthetic: SyntheticVideos) -> Path:
    """The only directory the services may read uploads from."""
    root = tmp_path_factory.mktemp("media")
    for name in ("moving_face", "two_faces", "no_face", "truncated", "not_a_video"):
        source: Path = getattr(synthetic, name)
        shutil.copy(source, root / f"{name}{source.suffix}")
    return root


@dataclass
class Topics:
    uploads: str
    flags: str
    verdicts: str
    dlq: str
    group: str
    partitions: int = 2
    # Every service also reads a bank topic and takes rulings from a decisions topic.
    decisions: str = ""
    bank: str = ""

    @classmethod
    def fresh(cls, partitions: int = 2) -> Topics:
        tag = uuid.uuid4().hex[:8]
        return cls(
            uploads=f"uploads-{tag}",
            flags=f"flags-{tag}",
            verdicts=f"verdicts-{tag}",
            dlq=f"dlq-{tag}",
            group=f"deepscreen-{tag}",
            partitions=partitions,
            decisions=f"decisions-{tag}",
            bank=f"bank-{tag}",
        )

    def create(self, broker: TansuBroker) -> Topics:
        broker.create_topic(self.uploads, self.partitions)
        for topic in (self.flags, self.verdicts, self.dlq, self.decisions, self.bank):
            broker.create_topic(topic, 1)
        return self

    def env(self) -> dict[str, str]:
        return {
            "DEEPSCREEN_KAFKA__UPLOADS_TOPIC": self.uploads,
            "DEEPSCREEN_KAFKA__FLAGS_TOPIC": self.flags,
            "DEEPSCREEN_KAFKA__VERDICTS_TOPIC": self.verdicts,
            "DEEPSCREEN_KAFKA__DLQ_TOPIC": self.dlq,
            "DEEPSCREEN_KAFKA__GROUP_ID": self.group,
            "DEEPSCREEN_KAFKA__DECISIONS_TOPIC": self.decisions,
            "DEEPSCREEN_KAFKA__BANK_TOPIC": self.bank,
        }


def service_settings(
    broker: TansuBroker,
    topics: Topics,
    media: Path,
    model: Path,
    redis_url: str = "",
    **overrides: Any,
) -> Settings:
    return Settings(
        kafka=embedded_kafka_settings(
            broker,
            group_id=topics.group,
            uploads=topics.uploads,
            flags=topics.flags,
            verdicts=topics.verdicts,
            dlq=topics.dlq,
            commit_interval_s=0.2,
            max_in_flight=4,
            decisions_topic=topics.decisions,
            bank_topic=topics.bank,
        ),
        redis=RedisSettings(
            url=redis_url, key_prefix=f"test:{topics.group}", retry_after_s=0.5, claim_wait_s=5
        ),
        media=MediaSettings(file_roots=(media,)),
        detector=DetectorSettings(model_path=model, windows=2, extraction_workers=1),
        retry=RetrySettings(max_attempts=2, backoff_initial_s=0.05, backoff_max_s=0.1),
        http=HttpSettings(host="127.0.0.1", port=0),
        drain_seconds=20,
        **overrides,
    )


@dataclass
class RunningService:
    """A service on a thread of this process, with real Kafka and Redis adapters."""

    app: App
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self.app.service.run, daemon=True)
        self.thread.start()

    def stop(self, timeout_s: float = 60) -> None:
        self.app.service.stop()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the service did not stop"


@pytest.fixture
def start_service() -> Iterator[Any]:
    started: list[RunningService] = []

    def start(settings: Settings) -> RunningService:
        service = RunningService(build_app(settings, serve_http=True))
        started.append(service)
        return service

    yield start
    for service in started:
        if service.thread.is_alive():
            service.stop()
