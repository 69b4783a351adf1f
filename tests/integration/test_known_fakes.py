"""The bank topic and the decisions loop on a real broker (Tansu, which does not compact).

Two replicas' readers follow one bank topic; a ruling taken on one replica reaches the
other's bank within seconds; a tombstone removes an entry everywhere; a replica started
later rebuilds the same bank from the topic's whole history.

Then the whole service, two replicas (two apps on one broker and one Redis, one
consumer group): a ruling on content one replica screened catches a re-encoded copy
on the other within seconds; a `false_positive` ruling silences the model's next flag;
a re-upload of the very bytes ruled on is answered from the cache with the ruling.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
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
from schemas import Action, Outcome, Reason, Signal, VerdictEvent
from schemas.decision import Decision
from tests.conftest import SyntheticVideos
from tests.integration.conftest import RunningService, Topics, service_settings
from tests.integration.outcomes import file_upload
from tests.support.broker import TansuBroker, produce
from tests.support.redis_server import RedisServer
from tests.support.tiny_model import write_tiny_artifact
from tests.support.videos import moving_face_video

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


# ------------------------------------------------------------------ the service, two replicas


@dataclass(frozen=True)
class Models:
    real: Path  # scores every clip ~0.002: likely_real
    flagging: Path  # scores every clip ~0.998: the model blocks


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("known-fakes-models")
    write_tiny_artifact(root / "real.pt", logit=-6.0)
    write_tiny_artifact(root / "flagging.pt", logit=6.0)
    return Models(root / "real.pt", root / "flagging.pt")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The only directory the replicas read uploads from: a face video and copies of it."""
    import imageio_ffmpeg

    root = tmp_path_factory.mktemp("known-fakes-media")
    original = moving_face_video(root / "original.mp4", frames=60)
    for crf in (23, 35):
        subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(original), "-an",
             "-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p",
             str(root / f"crf{crf}.mp4")],
            check=True,
        )  # fmt: skip
    shutil.copy(original, root / "same-bytes.mp4")
    return root


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Verdicts:
    """Tails the verdicts topic from its beginning (no group): each video's verdict as it lands."""

    def __init__(self, broker: TansuBroker, topic: str) -> None:
        self._consumer = KafkaConsumer(
            bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=50,
        )  # fmt: skip
        self._consumer.assign([TopicPartition(topic, 0)])
        self.seen: dict[str, VerdictEvent] = {}

    def of(self, video_id: str, within_s: float = 30) -> VerdictEvent:
        deadline = time.monotonic() + within_s
        while video_id not in self.seen:
            assert time.monotonic() < deadline, f"no verdict for {video_id} in {within_s} s"
            for records in self._consumer.poll(timeout_ms=50).values():
                for record in records:
                    event = VerdictEvent.model_validate_json(record.value)
                    self.seen[event.data.video_id] = event
        return self.seen[video_id]

    def close(self) -> None:
        self._consumer.close()


@dataclass
class Replicas:
    """Two replicas of the service on fresh topics, one group, one Redis; each its own partition."""

    broker: TansuBroker
    topics: Topics
    settings: Settings
    a: RunningService
    b: RunningService
    verdicts: Verdicts

    def partition_of(self, replica: RunningService) -> int:
        [assigned] = replica.app.service._source.assignment()
        return int(assigned.partition)

    def upload(self, replica: RunningService, video_id: str, path: Path) -> None:
        """Published to the partition `replica` consumes: it screens the upload."""
        produce(self.broker.bootstrap, self.topics.uploads, [file_upload(video_id, path)],
                partition=self.partition_of(replica))  # fmt: skip

    def rule(self, content: Path, decision: Decision, video_id: str) -> None:
        """A moderator's ruling on the decisions topic (no uri: the hashes are in the cache)."""
        ruling = {
            "video_id": video_id, "content_sha256": sha256_of(content),
            "decision": decision.value, "moderator": "mod-3",
            "reason": "reviewed", "decided_at": datetime.now(UTC).isoformat(),
        }  # fmt: skip
        produce(self.broker.bootstrap, self.settings.kafka.decisions_topic,
                [(ruling["content_sha256"].encode(), json.dumps(ruling).encode(), [])])  # fmt: skip

    def banked(self, replica: RunningService, content: Path) -> bool:
        return sha256_of(content) in replica.app.known_fakes.bank


def readyz(replica: RunningService) -> dict[str, Any]:
    assert replica.app.health is not None
    url = f"http://127.0.0.1:{replica.app.health.port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            checks: dict[str, Any] = json.loads(answer.read())["checks"]
    except urllib.error.HTTPError as refused:  # 503 while a check fails
        checks = json.loads(refused.read())["checks"]
    return checks


@pytest.fixture
def replicas(
    broker: TansuBroker, redis_server: RedisServer, videos: Path, start_service: Any
) -> Iterator[Callable[[Path], Replicas]]:
    made: list[Verdicts] = []

    def start(model: Path) -> Replicas:
        topics = Topics.fresh(partitions=2).create(broker)  # with its bank and decisions
        base = service_settings(broker, topics, videos, model, redis_url=redis_server.url)
        settings = base.model_copy(
            update={"detector": base.detector.model_copy(update={"cpu_backend": "torchscript"})}
        )
        a, b = start_service(settings), start_service(settings)
        made.append(verdicts := Verdicts(broker, topics.verdicts))
        started = Replicas(broker, topics, settings, a, b, verdicts)

        def settled() -> bool:  # one uploads partition each; the decisions group joined
            uploads = [r.app.service._source.assignment() for r in (a, b)]
            decisions = [r.app.known_fakes.decisions._source.assignment() for r in (a, b)]
            return all(len(p) == 1 for p in uploads) and any(decisions)

        eventually(settled, 30)
        for replica in (a, b):
            assert replica.app.known_fakes.reader.wait_caught_up(10)
            checks = readyz(replica)
            assert checks["bank_caught_up"] is True and checks["bank_reader_alive"] is True
        return started

    yield start
    for verdicts in made:
        verdicts.close()


def test_a_ruling_on_content_one_replica_screened_catches_a_re_encoded_copy_on_the_other(
    replicas: Callable[[Path], Replicas], models: Models, videos: Path
) -> None:
    run = replicas(models.real)
    original, copy = videos / "original.mp4", videos / "crf35.mp4"
    run.upload(run.a, "original", original)
    run.upload(run.b, "warm-up", videos / "crf23.mp4")  # B's decoders and model are warm
    first = run.verdicts.of("original").data
    assert (first.outcome, first.known_fake) == (Outcome.LIKELY_REAL, None)
    run.verdicts.of("warm-up")

    decided = time.monotonic()
    run.rule(original, Decision.CONFIRMED_FAKE, "original")
    reached = eventually(lambda: run.banked(run.b, original), 5)  # from the bank topic
    run.upload(run.b, "re-encoded", copy)
    caught = run.verdicts.of("re-encoded", within_s=10).data
    elapsed = time.monotonic() - decided

    assert (caught.outcome, caught.reason, caught.action, caught.action_signal) == (
        Outcome.SUSPECTED_DEEPFAKE, Reason.MATCHES_CONFIRMED_FAKE, Action.BLOCK,
        Signal.KNOWN_FAKES,
    )  # fmt: skip
    assert caught.cache_hit is False and caught.content_sha256 == sha256_of(copy)
    found = caught.known_fake
    assert found is not None and not found.same_content
    assert (found.entry_content_sha256, found.entry_video_id, found.moderator) == (
        sha256_of(original), "original", "mod-3",
    )  # fmt: skip
    assert found.frame_share >= 0.5 and found.face_share >= 0.3
    assert elapsed < 5, f"ruling reached B in {reached:.2f} s, caught after {elapsed:.2f} s"


def test_a_false_positive_ruling_silences_the_models_next_flag_of_that_content(
    replicas: Callable[[Path], Replicas], models: Models, videos: Path
) -> None:
    run = replicas(models.flagging)
    original = videos / "original.mp4"
    run.upload(run.a, "flagged", original)
    flagged = run.verdicts.of("flagged").data
    assert (flagged.outcome, flagged.action, flagged.action_signal) == (
        Outcome.SUSPECTED_DEEPFAKE, Action.BLOCK, Signal.MODEL,
    )  # fmt: skip

    run.rule(original, Decision.FALSE_POSITIVE, "flagged")
    eventually(lambda: run.banked(run.a, original) and run.banked(run.b, original), 5)
    run.upload(run.b, "re-encoded", videos / "crf23.mp4")  # screened afresh: the model flags
    run.upload(run.a, "same-bytes", videos / "same-bytes.mp4")  # from the cache
    for video_id, cache_hit in (("re-encoded", False), ("same-bytes", True)):
        data = run.verdicts.of(video_id).data
        assert (data.outcome, data.reason, data.action, data.cache_hit) == (
            Outcome.LIKELY_REAL, Reason.ALLOW_LISTED, Action.NONE, cache_hit,
        )  # fmt: skip
        model = data.signal(Signal.MODEL)
        assert model is not None and model.suppressed and model.action is Action.BLOCK
    flags = consume_flags(run, expected=1)
    assert [f["data"]["video_id"] for f in flags] == ["flagged"]  # only the first


def consume_flags(run: Replicas, expected: int) -> list[dict[str, Any]]:
    from tests.support.broker import consume_all

    records = consume_all(run.broker.bootstrap, run.topics.flags, expected, 5, settle_s=1.0)
    return [json.loads(r.value) for r in records]


def test_a_ruling_is_answered_from_the_cache_path_never_with_the_stale_verdict(
    replicas: Callable[[Path], Replicas], models: Models, videos: Path
) -> None:
    run = replicas(models.real)
    original = videos / "original.mp4"
    run.upload(run.a, "original", original)
    assert run.verdicts.of("original").data.outcome is Outcome.LIKELY_REAL  # cached in Redis

    run.rule(original, Decision.CONFIRMED_FAKE, "original")
    eventually(lambda: run.banked(run.a, original) and run.banked(run.b, original), 5)
    run.upload(run.b, "again-on-b", videos / "same-bytes.mp4")  # B never screened these bytes
    run.upload(run.a, "again-on-a", original)
    for video_id in ("again-on-b", "again-on-a"):
        data = run.verdicts.of(video_id).data
        assert data.cache_hit is True, video_id
        assert (data.outcome, data.reason, data.action) == (
            Outcome.SUSPECTED_DEEPFAKE, Reason.MATCHES_CONFIRMED_FAKE, Action.BLOCK,
        )  # fmt: skip
        assert data.known_fake is not None and data.known_fake.same_content
        model = data.signal(Signal.MODEL)
        assert model is not None and model.outcome is Outcome.LIKELY_REAL  # the model's own
    assert run.a.app.metrics.registry.get_sample_value("deepscreen_cache_hits_total") == 1
    assert run.b.app.metrics.registry.get_sample_value("deepscreen_cache_hits_total") == 1
