"""One message → exactly one outcome, specified with in-memory twins of every port."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.broker import InMemoryEventSink, Message
from consumer.cache import CacheKey, InMemoryVerdictCache
from consumer.media import FetchError, InMemoryFetcher
from consumer.metrics import Metrics
from consumer.processing import HandedBack, UploadProcessor
from consumer.settings import KafkaSettings, RetrySettings, Settings
from detector.pipeline import Detector
from detector.scoring import InMemoryScorer
from schemas import DeadLetter, DeepfakeFlag, Outcome, Reason, VerdictEvent
from tests.conftest import SyntheticVideos

SETTINGS = Settings(
    kafka=KafkaSettings(verdicts_topic="verdicts", flags_topic="flags", dlq_topic="dlq"),
    retry=RetrySettings(max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.02),
)


def upload(video_id: str, uri: str, **extra: Any) -> Message:
    event = {"video_id": video_id, "uri": uri, "uploaded_at": "2026-11-20T10:00:00Z", **extra}
    return Message("uploads", 0, 7, video_id.encode(), json.dumps(event).encode(), [])


class Harness:
    def __init__(self, synthetic: SyntheticVideos, fake: bool = False) -> None:
        self.scorer = InMemoryScorer(rule=lambda clip: 0.97 if fake else 0.05)
        self.detector = Detector(self.scorer)
        self.screened: list[str] = []
        self.fetcher = InMemoryFetcher(
            {
                "file:///m/face.mp4": synthetic.moving_face.read_bytes(),
                "file:///m/same-bytes.mp4": synthetic.moving_face.read_bytes(),
                "file:///m/broken.mp4": synthetic.truncated.read_bytes(),
                "file:///m/gone.mp4": FetchError("not_found", "no such file"),
                "https://cdn/slow.mp4": FetchError("timeout", "read timed out", retryable=True),
            }
        )
        self.metrics = Metrics()
        self.cache = InMemoryVerdictCache(metrics=self.metrics)
        self.sink = InMemoryEventSink()
        self.stopping = threading.Event()
        self.processor = UploadProcessor(
            SETTINGS,
            screen=self._screen,
            model_sha256=self.scorer.info.sha256,
            fetcher=self.fetcher,
            cache=self.cache,
            sink=self.sink,
            metrics=self.metrics,
            stopping=self.stopping,
        )

    def _screen(self, path: Path, **kwargs: Any) -> Any:
        self.screened.append(kwargs["video_id"])
        return self.detector.screen(path, **kwargs)

    def verdicts(self) -> list[VerdictEvent]:
        return [VerdictEvent.model_validate_json(e.value) for e in self.sink.on("verdicts")]

    def flags(self) -> list[DeepfakeFlag]:
        return [DeepfakeFlag.model_validate_json(e.value) for e in self.sink.on("flags")]

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter.from_headers(e.headers) for e in self.sink.on("dlq")]


@pytest.fixture
def harness(synthetic: SyntheticVideos) -> Iterator[Harness]:
    yield (made := Harness(synthetic))
    made.detector.close()


@pytest.fixture
def fake_harness(synthetic: SyntheticVideos) -> Iterator[Harness]:
    yield (made := Harness(synthetic, fake=True))
    made.detector.close()


def test_a_real_face_gives_a_verdict_and_no_flag(harness: Harness) -> None:
    harness.processor.process(upload("v-1", "file:///m/face.mp4"))
    [event] = harness.verdicts()
    assert event.data.outcome is Outcome.LIKELY_REAL
    assert event.subject == "v-1"
    assert harness.sink.on("verdicts")[0].key == b"v-1"
    assert harness.flags() == [] and harness.dead_letters() == []


def test_a_suspected_deepfake_is_flagged_with_its_evidence(fake_harness: Harness) -> None:
    fake_harness.processor.process(upload("v-2", "file:///m/face.mp4"))
    [flag] = fake_harness.flags()
    assert flag.type == "deepscreen.flag.v1"
    assert flag.data.score == pytest.approx(0.97)
    assert flag.data.model == fake_harness.scorer.info
    assert len(flag.data.timeline) == 3 and flag.data.faces_tracked == 1
    assert fake_harness.sink.on("flags")[0].key == b"v-2"


def test_the_same_upload_twice_gets_the_same_flag_id(fake_harness: Harness) -> None:
    message = upload("v-2", "file:///m/face.mp4")
    fake_harness.processor.process(message)
    fake_harness.processor.process(message)
    first, second = fake_harness.flags()
    assert first.id == second.id


def test_a_re_upload_of_the_same_bytes_is_a_cache_hit_and_not_decoded_again(
    fake_harness: Harness,
) -> None:
    fake_harness.processor.process(upload("v-1", "file:///m/face.mp4"))
    fake_harness.processor.process(upload("v-9", "file:///m/same-bytes.mp4"))
    assert fake_harness.screened == ["v-1"]
    first, again = fake_harness.flags()
    assert (again.data.video_id, again.data.uri) == ("v-9", "file:///m/same-bytes.mp4")
    assert again.data.cache_hit is True and first.data.cache_hit is False
    assert again.data.timeline == first.data.timeline
    assert again.id != first.id  # another video id, so another event


def test_a_cached_verdict_that_no_longer_parses_is_screened_again_and_replaced(
    fake_harness: Harness, synthetic: SyntheticVideos
) -> None:
    """Not a dead letter for every re-upload of those bytes until the entry expires."""
    key = CacheKey(
        fake_harness.scorer.info.sha256,
        hashlib.sha256(synthetic.moving_face.read_bytes()).hexdigest(),
    )
    fake_harness.cache.put_raw(key, b'{"outcome": "from another version"}')
    fake_harness.processor.process(upload("v-1", "file:///m/face.mp4"))
    fake_harness.processor.process(upload("v-9", "file:///m/same-bytes.mp4"))
    assert fake_harness.dead_letters() == []
    assert fake_harness.screened == ["v-1"]  # screened once, then served from the new entry
    first, again = fake_harness.flags()
    assert (first.data.cache_hit, again.data.cache_hit) == (False, True)
    read = fake_harness.metrics.registry.get_sample_value
    assert read("deepscreen_cache_corrupt_entries_total") == 1
    assert read("deepscreen_cache_misses_total") == 1
    assert read("deepscreen_cache_hits_total") == 1


def test_a_video_that_cannot_be_decoded_is_an_unreadable_verdict_not_a_dead_letter(
    harness: Harness,
) -> None:
    harness.processor.process(upload("v-3", "file:///m/broken.mp4"))
    [event] = harness.verdicts()
    assert (event.data.outcome, event.data.reason) == (Outcome.UNREADABLE, Reason.CORRUPT_CONTAINER)
    assert harness.dead_letters() == []


@pytest.mark.parametrize(
    ("value", "reason"),
    [(b"{not json", "not_json"), (b'{"video_id": "x"}', "invalid_event"), (None, "empty_payload")],
)
def test_an_unusable_message_is_dead_lettered_at_once_with_its_bytes(
    harness: Harness, value: bytes | None, reason: str
) -> None:
    message = Message("uploads", 2, 41, b"k", value, [("trace", b"t-1")])
    harness.processor.process(message)
    [letter] = harness.dead_letters()
    assert (letter.reason, letter.attempts, letter.error_class) == (reason, 1, "InvalidUpload")
    assert (letter.source_topic, letter.partition, letter.offset) == ("uploads", 2, 41)
    [sent] = harness.sink.on("dlq")
    assert sent.value == (value or b"") and sent.key == b"k"
    assert ("trace", b"t-1") in sent.headers  # the original headers travel along
    assert harness.verdicts() == []


def test_a_fetch_that_cannot_succeed_is_dead_lettered_without_retrying(harness: Harness) -> None:
    harness.processor.process(upload("v-4", "file:///m/gone.mp4"))
    [letter] = harness.dead_letters()
    assert (letter.reason, letter.attempts) == ("not_found", 1)
    assert harness.fetcher.fetched == ["file:///m/gone.mp4"]


def test_a_fetch_that_may_pass_is_retried_with_backoff_then_dead_lettered(
    harness: Harness,
) -> None:
    harness.processor.process(upload("v-5", "https://cdn/slow.mp4"))
    [letter] = harness.dead_letters()
    assert (letter.reason, letter.attempts, letter.error_class) == ("timeout", 3, "FetchError")
    assert harness.fetcher.fetched == ["https://cdn/slow.mp4"] * 3


def test_a_flaky_fetch_that_recovers_gets_its_verdict(
    harness: Harness, synthetic: SyntheticVideos
) -> None:
    attempts: list[int] = []
    real_fetch = harness.fetcher.fetch

    def flaky(uri: str) -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise FetchError("http_503", "busy", retryable=True)
        return real_fetch("file:///m/face.mp4")

    harness.fetcher.fetch = flaky  # type: ignore[method-assign]
    harness.processor.process(upload("v-6", "https://cdn/flaky.mp4"))
    assert len(attempts) == 2
    assert [e.data.video_id for e in harness.verdicts()] == ["v-6"]


def test_a_content_hash_that_does_not_match_the_event_is_not_screened(harness: Harness) -> None:
    harness.processor.process(upload("v-7", "file:///m/face.mp4", sha256="0" * 64))
    [letter] = harness.dead_letters()
    assert letter.reason == "sha256_mismatch"
    assert harness.screened == []


def test_a_stop_during_backoff_hands_the_message_back_uncommitted(harness: Harness) -> None:
    harness.stopping.set()
    with pytest.raises(HandedBack):
        harness.processor.process(upload("v-8", "https://cdn/slow.mp4"))
    assert harness.sink.sent == []


def test_publishing_is_retried_until_the_broker_takes_it(fake_harness: Harness) -> None:
    fake_harness.sink.fail_next = 2
    fake_harness.processor.process(upload("v-2", "file:///m/face.mp4"))
    assert len(fake_harness.flags()) == 1


def test_a_bug_while_screening_is_dead_lettered_not_left_to_stall_the_partition(
    harness: Harness,
) -> None:
    def broken(path: Path, **kwargs: Any) -> Any:
        raise ZeroDivisionError("oops")

    harness.processor._screen = broken  # type: ignore[assignment]
    harness.processor.process(upload("v-1", "file:///m/face.mp4"))
    [letter] = harness.dead_letters()
    assert (letter.reason, letter.error_class) == ("processing_failed", "ZeroDivisionError")


def test_content_another_replica_is_screening_waits_for_its_verdict(
    fake_harness: Harness, synthetic: SyntheticVideos
) -> None:
    # Another replica screens the same bytes first and holds the claim.
    other = Harness(synthetic, fake=True)
    other.processor.process(upload("v-1", "file:///m/face.mp4"))
    verdict = other.flags()[0].data
    other.detector.close()
    key = CacheKey(fake_harness.scorer.info.sha256, hashlib.sha256(
        synthetic.moving_face.read_bytes()).hexdigest())  # fmt: skip
    assert fake_harness.cache.claim(key, "other-replica")
    threading.Timer(0.3, lambda: fake_harness.cache.put(key, verdict)).start()
    started = time.monotonic()
    fake_harness.processor.process(upload("v-2", "file:///m/face.mp4"))
    assert 0.2 < time.monotonic() - started < 5
    assert fake_harness.screened == []
    assert fake_harness.flags()[0].data.cache_hit is True


# --------------------------------------------------------------------------- publishing limits

MiB = 1024 * 1024


def test_a_dead_letter_always_fits_the_producers_request_limit(harness: Harness) -> None:
    """An event the consumer refuses as too large still gets its dead letter, cut to fit."""
    harness.sink.max_request_bytes = SETTINGS.kafka.producer_max_request_bytes
    value = b'{"video_id": "' + b"x" * (2 * MiB) + b'"}'
    harness.processor.process(Message("uploads", 0, 9, b"big", value, [("origin", b"cdn")]))
    [sent] = harness.sink.on("dlq")
    letter = DeadLetter.from_headers(sent.headers)
    assert letter.reason == "payload_too_large"
    assert (letter.value_bytes, letter.value_truncated) == (len(value), True)
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest()
    assert value.startswith(sent.value) and len(sent.value) > MiB // 2
    assert ("origin", b"cdn") in sent.headers


def test_a_verdict_the_broker_can_never_take_becomes_a_publish_failed_dead_letter(
    harness: Harness,
) -> None:
    harness.sink.refused_topics = {"verdicts"}
    harness.processor.process(upload("v-1", "file:///m/face.mp4"))
    [letter] = harness.dead_letters()
    assert (letter.reason, letter.error_class) == (
        "publish_failed",
        "TopicAuthorizationFailedError",
    )
    assert letter.attempts == SETTINGS.kafka.publish_max_attempts
    assert harness.verdicts() == []


def test_when_not_even_the_dead_letter_can_be_published_the_upload_is_unpublishable(
    harness: Harness,
) -> None:
    from consumer.processing import Unpublishable

    harness.sink.refused_topics = {"verdicts", "dlq"}
    with pytest.raises(Unpublishable):
        harness.processor.process(upload("v-1", "file:///m/face.mp4"))
    assert harness.metrics.registry.get_sample_value("deepscreen_unpublishable_outcomes_total") == 1


def test_our_header_names_on_an_upload_are_kept_under_a_prefix_in_its_dead_letter(
    harness: Harness,
) -> None:
    forged = [("deepscreen-reason", b"fine"), ("deepscreen-offset", b"1"), ("trace", b"t")]
    harness.processor.process(Message("uploads", 0, 5, b"k", b"not json", forged))
    [sent] = harness.sink.on("dlq")
    assert ("original-deepscreen-reason", b"fine") in sent.headers
    assert ("trace", b"t") in sent.headers
    assert [v for n, v in sent.headers if n == "deepscreen-reason"] == [b"not_json"]
    assert DeadLetter.from_headers(sent.headers).offset == 5


def test_a_sha256_mismatch_is_final_at_once(harness: Harness) -> None:
    harness.processor.process(upload("v-1", "file:///m/face.mp4", sha256="0" * 64))
    [letter] = harness.dead_letters()
    assert (letter.reason, letter.attempts) == ("sha256_mismatch", 1)
    assert harness.screened == []
