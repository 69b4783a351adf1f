"""The bank topic and the decisions loop on a real broker (Tansu, which does not compact).

Two replicas' readers follow one bank topic; a ruling taken on one replica reaches the
other's bank within seconds; a tombstone removes an entry everywhere; a replica started
later rebuilds the same bank from the topic's whole history.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consumer.bank_topic import BankReader, KafkaBankLog, KafkaBankWriter
from consumer.broker import InMemoryEventSink, KafkaUploadSource
from consumer.cache import HashesKey, InMemoryVerdictCache
from consumer.cli import app
from consumer.decisions import DecisionHandler, DecisionsLoop, decisions_source_settings
from consumer.embedded import embedded_kafka_settings
from consumer.media import InMemoryFetcher
from consumer.settings import KafkaSettings, Settings
from detector.bank import Bank, BankEntry
from detector.hashing import PdqFeature, VideoHashes
from schemas.decision import Decision
from tests.conftest import SyntheticVideos
from tests.support.broker import TansuBroker, produce

HASHES = VideoHashes(
    frames=(PdqFeature(0, 0.0, 90, "f0" * 32),), faces=(PdqFeature(0, 0.0, 60, "0f" * 32),)
)


def kafka(broker: TansuBroker) -> KafkaSettings:
    tag = uuid.uuid4().hex[:8]
    settings = embedded_kafka_settings(
        broker, group_id=f"g-{tag}", uploads=f"uploads-{tag}", flags=f"flags-{tag}",
        verdicts="", dlq=f"dlq-{tag}",
    )  # fmt: skip
    return settings.model_copy(
        update={"bank_topic": f"bank-{tag}", "decisions_topic": f"decisions-{tag}"}
    )


def entry(entry_id: str, decision: Decision = Decision.CONFIRMED_FAKE) -> BankEntry:
    return BankEntry.from_hashes(
        entry_id, decision, "mod-1", HASHES, decided_at=datetime(2026, 12, 1, tzinfo=UTC)
    )


def eventually(condition: Callable[[], bool], within_s: float) -> float:
    """Seconds until `condition` held; fails after `within_s`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within_s, f"not within {within_s} s"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
def readers() -> Iterator[Callable[[KafkaSettings], BankReader]]:
    started: list[BankReader] = []

    def start(settings: KafkaSettings) -> BankReader:
        reader = BankReader(KafkaBankLog(settings), Bank()).start()
        started.append(reader)
        return reader

    yield start
    for reader in started:
        reader.close()


def test_replicas_follow_the_bank_topic_and_a_late_one_rebuilds_the_same_bank(
    broker: TansuBroker, readers: Callable[[KafkaSettings], BankReader]
) -> None:
    settings = kafka(broker)
    broker.create_topic(settings.bank_topic, 2)
    writer = KafkaBankWriter(settings)
    writer.publish(entry("a"))
    writer.publish(entry("b"))
    first = readers(settings)
    assert first.wait_caught_up(15)
    assert {e.entry_id for e in first.bank.entries()} == {"a", "b"}

    second = readers(settings)
    assert second.wait_caught_up(15)
    writer.publish(entry("a", Decision.FALSE_POSITIVE))  # replaces: no compaction needed
    writer.retract("b")
    writer.publish(entry("c"))

    def converged(reader: BankReader) -> bool:
        banked = {e.entry_id: e.decision for e in reader.bank.entries()}
        return banked == {"a": Decision.FALSE_POSITIVE, "c": Decision.CONFIRMED_FAKE}

    assert eventually(lambda: converged(first) and converged(second), 5) < 5
    late = readers(settings)  # reads six records, in order, into the same two entries
    assert late.wait_caught_up(15)
    assert converged(late)
    writer.close()


def test_a_ruling_on_one_replica_reaches_another_replicas_bank_within_seconds(
    broker: TansuBroker, readers: Callable[[KafkaSettings], BankReader]
) -> None:
    kafka_settings = kafka(broker)
    broker.create_topic(kafka_settings.bank_topic, 1)
    broker.create_topic(kafka_settings.decisions_topic, 1)
    settings = Settings(kafka=kafka_settings)
    content = b"a confirmed deepfake"
    sha = hashlib.sha256(content).hexdigest()
    cache = InMemoryVerdictCache()
    cache.put_hashes(HashesKey("fp", sha), HASHES)  # left there when the video was screened
    deciding_bank = Bank()
    handler = DecisionHandler(
        settings, bank=deciding_bank, writer=KafkaBankWriter(kafka_settings), cache=cache,
        hashing="fp", fetcher=InMemoryFetcher({}), hash_content=lambda path: HASHES,
        sink=InMemoryEventSink(), wait=lambda seconds: False,
    )  # fmt: skip
    outcomes: list[str] = []
    source = KafkaUploadSource(decisions_source_settings(settings).kafka)
    loop = DecisionsLoop(handler, source, on_outcome=lambda o: outcomes.append(o.kind)).start()
    other = readers(kafka_settings)
    assert other.wait_caught_up(15)
    ruling = {
        "video_id": "v-1", "content_sha256": sha, "decision": "confirmed_fake",
        "moderator": "mod-9", "decided_at": datetime.now(UTC).isoformat(),
    }  # fmt: skip
    try:
        produce(broker.bootstrap, kafka_settings.decisions_topic,
                [(sha.encode(), json.dumps(ruling).encode(), [])])  # fmt: skip
        eventually(lambda: outcomes == ["banked"], 20)  # the group join takes ~3 s on Tansu
        assert eventually(lambda: sha in other.bank, 5) < 5
        banked = other.bank.get(sha)
        assert banked is not None and banked.moderator == "mod-9"
    finally:
        loop.close()


def test_the_bank_commands_work_on_the_topic(
    broker: TansuBroker,
    synthetic: SyntheticVideos,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    settings = kafka(broker)
    broker.create_topic(settings.bank_topic, 1)
    monkeypatch.setenv("DEEPSCREEN_KAFKA__BANK_TOPIC", settings.bank_topic)
    monkeypatch.setenv("DEEPSCREEN_SECRETS_DIR", str(tmp_path / "none"))
    runner = CliRunner()
    servers = ["--bootstrap-servers", broker.bootstrap]
    added = runner.invoke(app, ["bank", "add", *servers, str(synthetic.moving_face)])
    assert added.exit_code == 0, added.output
    sha = hashlib.sha256(synthetic.moving_face.read_bytes()).hexdigest()
    listed = runner.invoke(app, ["bank", "list", *servers])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.startswith(f"{sha} confirmed_fake ")
    assert runner.invoke(app, ["bank", "remove", *servers, sha]).exit_code == 0
    assert runner.invoke(app, ["bank", "list", *servers]).stdout == ""
