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
from structlog.testing import capture_logs

from consumer.broker import InMemoryEventSink, Message
from consumer.cache import CacheKey, HashesKey, InMemoryVerdictCache
from consumer.media import FetchError, InMemoryFetcher
from consumer.metrics import Metrics
from consumer.processing import HandedBack, KnownFakesView, UploadProcessor
from consumer.settings import KafkaSettings, RetrySettings, Settings
from detector.bank import Bank, BankEntry
from detector.config import HashingConfig
from detector.credentials import StaticCredentialsReader
from detector.hashing import hashing_fingerprint
from detector.pipeline import Detector
from detector.scoring import InMemoryScorer
from schemas import (
    Action,
    DeadLetter,
    Declaration,
    DeepfakeFlag,
    Outcome,
    ProvenanceReason,
    ProvenanceState,
    Reason,
    ScreeningVerdict,
    Signal,
    VerdictEvent,
)
from schemas.cloudevents import FLAG_DATASCHEMA
from schemas.decision import Decision
from tests.conftest import SyntheticVideos
from tests.schemas.factories import (
    MODEL,
    absent_provenance,
    declared_synthetic,
    likely_real,
    provenance,
    unreadable,
    unreadable_provenance,
    verdict,
)

SETTINGS = Settings(
    kafka=KafkaSettings(verdicts_topic="verdicts", flags_topic="flags", dlq_topic="dlq"),
    retry=RetrySettings(max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.02),
)


def upload(video_id: str, uri: str, **extra: Any) -> Message:
    event = {"video_id": video_id, "uri": uri, "uploaded_at": "2026-11-20T10:00:00Z", **extra}
    return Message("uploads", 0, 7, video_id.encode(), json.dumps(event).encode(), [])


HASHING = hashing_fingerprint(HashingConfig())


class Harness:
    """The processor wired as the service wires it: the detector's bank, hashes cached."""

    def __init__(
        self, synthetic: SyntheticVideos, fake: bool = False, catch_up_wait_s: float = 30
    ) -> None:
        self.scorer = InMemoryScorer(rule=lambda clip: 0.97 if fake else 0.05)
        self.bank = Bank()  # the service fills it from the bank topic
        self.bank_caught_up = threading.Event()
        self.bank_caught_up.set()
        self.detector = Detector(self.scorer, known_fakes=self.bank)
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
            known_fakes=KnownFakesView(
                hashing=HASHING,
                refresh=self.detector.refresh,
                wait_caught_up=self.bank_caught_up.wait,
                catch_up_wait_s=catch_up_wait_s,
            ),
        )

    def _screen(self, path: Path, **kwargs: Any) -> Any:
        self.screened.append(kwargs["video_id"])
        return self.detector.screen_timed(path, **kwargs)

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

    harness.processor._screen = broken
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
    sha = hashlib.sha256(synthetic.moving_face.read_bytes()).hexdigest()
    key = CacheKey(fake_harness.scorer.info.sha256, sha)
    hashes = other.cache.get_hashes(HashesKey(HASHING, sha))
    assert hashes is not None and fake_harness.cache.claim(key, "other-replica")

    def lands() -> None:  # as a replica leaves them: the hashes, then the verdict
        fake_harness.cache.put_hashes(HashesKey(HASHING, sha), hashes)
        fake_harness.cache.put(key, verdict)

    threading.Timer(0.3, lands).start()
    started = time.monotonic()
    fake_harness.processor.process(upload("v-2", "file:///m/face.mp4"))
    assert 0.2 < time.monotonic() - started < 5
    assert fake_harness.screened == []
    assert fake_harness.flags()[0].data.cache_hit is True


# --------------------------------------------------------------------------- known fakes
# A moderator's ruling reaches this replica's bank (from the bank topic); the cache must
# never serve a verdict that contradicts it, and nothing is screened before the bank is read.

FACE, FACE_AGAIN = "file:///m/face.mp4", "file:///m/same-bytes.mp4"


def face_sha(synthetic: SyntheticVideos) -> str:
    return hashlib.sha256(synthetic.moving_face.read_bytes()).hexdigest()


def rule(harness: Harness, sha: str, decision: Decision, *, entry_id: str | None = None) -> None:
    """A ruling made from the hashes screening left in the cache, as `DecisionHandler` makes it."""
    hashes = harness.cache.get_hashes(HashesKey(HASHING, sha))
    assert hashes is not None
    content = sha if entry_id is None else "f" * 64  # another copy's bytes
    harness.bank.add(
        BankEntry.from_hashes(entry_id or sha, decision, "mod-7", hashes, content_sha256=content)
    )


def test_a_screening_leaves_the_contents_hashes_beside_its_verdict(
    harness: Harness, synthetic: SyntheticVideos
) -> None:
    harness.processor.process(upload("v-1", FACE))
    hashes = harness.cache.get_hashes(HashesKey(HASHING, face_sha(synthetic)))
    assert hashes is not None and hashes.frames and hashes.faces
    known = harness.verdicts()[0].data.signal(Signal.KNOWN_FAKES)
    assert known is not None and known.outcome is None  # asked; the bank is empty


def test_a_confirmed_fake_ruling_is_served_from_the_cache_path_and_a_retraction_undoes_it(
    harness: Harness, synthetic: SyntheticVideos
) -> None:
    harness.processor.process(upload("v-1", FACE))  # likely_real, cached
    rule(harness, face_sha(synthetic), Decision.CONFIRMED_FAKE)
    harness.processor.process(upload("v-2", FACE_AGAIN))
    [flag] = harness.flags()
    data = flag.data
    assert data.cache_hit is True and harness.screened == ["v-1"]
    assert (data.outcome, data.reason, data.action, data.action_signal) == (
        Outcome.SUSPECTED_DEEPFAKE, Reason.MATCHES_CONFIRMED_FAKE, Action.BLOCK, Signal.KNOWN_FAKES
    )  # fmt: skip
    assert data.known_fake is not None and data.known_fake.same_content
    assert data.known_fake.moderator == "mod-7"
    model = data.signal(Signal.MODEL)
    assert model is not None and model.outcome is Outcome.LIKELY_REAL  # still reported

    harness.bank.remove(face_sha(synthetic))  # `retracted`
    harness.processor.process(upload("v-3", FACE_AGAIN))
    again = harness.verdicts()[-1].data
    assert (again.video_id, again.cache_hit, again.outcome) == ("v-3", True, Outcome.LIKELY_REAL)
    assert again.known_fake is None and len(harness.flags()) == 1


def test_a_ruling_on_another_copy_reaches_cached_verdicts_through_their_hashes(
    harness: Harness, synthetic: SyntheticVideos
) -> None:
    """Not the same bytes: the entry matches the cached content's perceptual hashes."""
    harness.processor.process(upload("v-1", FACE))
    rule(harness, face_sha(synthetic), Decision.CONFIRMED_FAKE, entry_id="another-copy")
    harness.processor.process(upload("v-2", FACE_AGAIN))
    [flag] = harness.flags()
    found = flag.data.known_fake
    assert flag.data.cache_hit and flag.data.reason is Reason.MATCHES_CONFIRMED_FAKE
    assert found is not None and (found.entry_id, found.same_content) == ("another-copy", False)
    assert found.frame_share == 1.0 and found.face_share == 1.0


def test_a_false_positive_ruling_silences_the_models_flag_on_the_cache_path(
    fake_harness: Harness, synthetic: SyntheticVideos
) -> None:
    fake_harness.processor.process(upload("v-1", FACE))
    assert len(fake_harness.flags()) == 1  # the model's false alarm
    rule(fake_harness, face_sha(synthetic), Decision.FALSE_POSITIVE)
    fake_harness.processor.process(upload("v-2", FACE_AGAIN))
    assert len(fake_harness.flags()) == 1  # not raised again
    data = fake_harness.verdicts()[-1].data
    assert (data.cache_hit, data.outcome, data.reason, data.action) == (
        True, Outcome.LIKELY_REAL, Reason.ALLOW_LISTED, Action.NONE
    )  # fmt: skip
    model = data.signal(Signal.MODEL)
    assert model is not None and model.suppressed and model.action is Action.BLOCK
    assert data.score == pytest.approx(0.97)  # the evidence stays


def test_a_fresh_screening_matches_a_ruling_already_in_the_bank(
    fake_harness: Harness, synthetic: SyntheticVideos
) -> None:
    fake_harness.processor.process(upload("v-1", FACE))
    rule(fake_harness, face_sha(synthetic), Decision.FALSE_POSITIVE)
    fresh = Harness(synthetic, fake=True)  # another replica: its cache is empty, same bank
    try:
        for entry in fake_harness.bank.entries():
            fresh.bank.add(entry)
        fresh.processor.process(upload("v-2", FACE_AGAIN))
    finally:
        fresh.detector.close()
    assert fresh.screened == ["v-2"] and fresh.flags() == []
    assert fresh.verdicts()[0].data.reason is Reason.ALLOW_LISTED


def test_a_cached_verdict_whose_hashes_are_gone_is_screened_again(
    harness: Harness, synthetic: SyntheticVideos
) -> None:
    """Without them a ruling on a re-encoded copy could not be checked: not served."""
    harness.processor.process(upload("v-1", FACE))
    key = CacheKey(harness.scorer.info.sha256, face_sha(synthetic))
    cached = harness.cache.get(key)
    assert cached is not None
    other = Harness(synthetic)
    try:
        other.cache.put(key, cached)  # the verdict without its hashes (evicted apart)
        other.processor.process(upload("v-2", FACE_AGAIN))
    finally:
        other.detector.close()
    assert other.screened == ["v-2"] and other.verdicts()[0].data.cache_hit is False
    assert other.cache.get_hashes(HashesKey(HASHING, face_sha(synthetic))) is not None


def test_a_verdict_taken_from_another_replica_is_brought_up_to_date_with_the_bank(
    harness: Harness, synthetic: SyntheticVideos
) -> None:
    other = Harness(synthetic)
    try:
        other.processor.process(upload("v-1", FACE))
    finally:
        other.detector.close()
    sha = face_sha(synthetic)
    key = CacheKey(harness.scorer.info.sha256, sha)
    verdict, hashes = other.cache.get(key), other.cache.get_hashes(HashesKey(HASHING, sha))
    assert verdict is not None and hashes is not None
    harness.bank.add(BankEntry.from_hashes(sha, Decision.CONFIRMED_FAKE, "mod-7", hashes))
    assert harness.cache.claim(key, "other-replica")

    def lands() -> None:
        harness.cache.put_hashes(HashesKey(HASHING, sha), hashes)
        harness.cache.put(key, verdict)

    threading.Timer(0.3, lands).start()
    harness.processor.process(upload("v-2", FACE))
    assert harness.screened == []
    [flag] = harness.flags()
    assert flag.data.cache_hit and flag.data.reason is Reason.MATCHES_CONFIRMED_FAKE


def test_nothing_is_screened_before_the_bank_has_been_read(synthetic: SyntheticVideos) -> None:
    harness = Harness(synthetic)
    harness.bank_caught_up.clear()
    worker = threading.Thread(target=harness.processor.process, args=(upload("v-1", FACE),))
    try:
        worker.start()
        time.sleep(0.5)
        assert harness.screened == [] and harness.sink.sent == []
        harness.bank_caught_up.set()
        worker.join(30)
        assert [v.data.video_id for v in harness.verdicts()] == ["v-1"]
    finally:
        harness.bank_caught_up.set()
        worker.join(30)
        harness.detector.close()


def test_a_bank_that_never_catches_up_holds_uploads_back_only_so_long(
    synthetic: SyntheticVideos,
) -> None:
    harness = Harness(synthetic, catch_up_wait_s=0.4)
    harness.bank_caught_up.clear()
    try:
        with capture_logs() as logs:
            started = time.monotonic()
            harness.processor.process(upload("v-1", FACE))
            harness.processor.process(upload("v-2", FACE_AGAIN))
    finally:
        harness.detector.close()
    assert time.monotonic() - started >= 0.4
    assert [v.data.video_id for v in harness.verdicts()] == ["v-1", "v-2"]
    assert [e["event"] for e in logs].count("bank_not_caught_up") == 1


def test_a_stop_while_waiting_for_the_bank_hands_the_upload_back(
    synthetic: SyntheticVideos,
) -> None:
    harness = Harness(synthetic)
    harness.bank_caught_up.clear()
    harness.stopping.set()
    try:
        with pytest.raises(HandedBack):
            harness.processor.process(upload("v-1", FACE))
    finally:
        harness.detector.close()
    assert harness.screened == [] and harness.sink.sent == []


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


# --------------------------------------------------------------------------- content credentials
#
# A second signal beside the model: the upload's own content credentials (C2PA).
# These tests screen with a scripted screen function (prepared verdicts by the
# bytes fetched), so only the processor's part is specified: what is published,
# counted, cached and logged.


def media_bytes(name: str) -> bytes:
    """The bytes behind `file:///m/NAME` (never decoded: the screen function is scripted)."""
    return f"the bytes of {name}".encode()


class Scripted:
    """The processor over in-memory twins, with a screen function that returns prepared verdicts.

    `answers` maps the fetched bytes to the verdict the detector would give them;
    the verdict is re-addressed to the upload, as the detector would address it.
    """

    def __init__(
        self,
        media: dict[str, bytes],
        answers: dict[bytes, ScreeningVerdict],
        *,
        policy: str = "",
        cache: InMemoryVerdictCache | None = None,
    ) -> None:
        self.answers = answers
        self.screened: list[str] = []
        self.fetcher = InMemoryFetcher(media)
        self.metrics = Metrics()
        self.cache = cache or InMemoryVerdictCache(metrics=self.metrics)
        self.sink = InMemoryEventSink()
        self.processor = UploadProcessor(
            SETTINGS,
            screen=self._screen,
            model_sha256=MODEL.sha256,
            fetcher=self.fetcher,
            cache=self.cache,
            sink=self.sink,
            metrics=self.metrics,
            stopping=threading.Event(),
            policy=policy,
        )

    def _screen(
        self, path: Path, *, video_id: str, uri: str, content_sha256: str
    ) -> ScreeningVerdict:
        self.screened.append(video_id)
        prepared = self.answers[path.read_bytes()]
        return prepared.model_copy(
            update={"video_id": video_id, "uri": uri, "content_sha256": content_sha256}
        )

    def verdicts(self) -> list[VerdictEvent]:
        return [VerdictEvent.model_validate_json(e.value) for e in self.sink.on("verdicts")]

    def flags(self) -> list[DeepfakeFlag]:
        return [DeepfakeFlag.model_validate_json(e.value) for e in self.sink.on("flags")]

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


def scripted(
    *, policy: str = "", cache: InMemoryVerdictCache | None = None, **answers: ScreeningVerdict
) -> Scripted:
    """Uploads `file:///m/NAME` and `file:///m/NAME-again` (the same bytes) for each answer."""
    media: dict[str, bytes] = {}
    by_bytes: dict[bytes, ScreeningVerdict] = {}
    for name, answer in answers.items():
        media[f"file:///m/{name}"] = media[f"file:///m/{name}-again"] = media_bytes(name)
        by_bytes[media_bytes(name)] = answer
    return Scripted(media, by_bytes, policy=policy, cache=cache)


def test_a_declared_synthetic_upload_gets_one_label_flag_carrying_its_credentials() -> None:
    run = scripted(ai=declared_synthetic())
    run.processor.process(upload("v-ai", "file:///m/ai"))
    [sent] = run.sink.on("flags")
    assert sent.key == b"v-ai"
    [flag] = run.flags()
    assert (flag.type, flag.dataschema) == ("deepscreen.flag.v1", FLAG_DATASCHEMA)
    assert flag.subject == "v-ai"
    data = flag.data
    assert (data.outcome, data.reason) == (Outcome.DECLARED_SYNTHETIC, Reason.DECLARED_AI_GENERATED)
    assert (data.action, data.action_signal) == (Action.LABEL, Signal.CONTENT_CREDENTIALS)
    assert data.provenance is not None
    assert (data.provenance.state, data.provenance.declaration) == (
        ProvenanceState.VALID,
        Declaration.AI_GENERATED,
    )
    # what a consumer downstream reads: the provenance section, and the model beside it
    document = json.loads(sent.value)["data"]
    assert document["action"] == "label" and document["action_signal"] == "content_credentials"
    assert document["provenance"]["state"] == "valid"
    assert document["provenance"]["declaration"] == "ai_generated"
    assert [s["signal"] for s in document["signals"]] == ["content_credentials", "model"]
    assert [e.data.video_id for e in run.verdicts()] == ["v-ai"]  # and its audit verdict


def test_a_likely_real_upload_without_credentials_is_not_flagged() -> None:
    run = scripted(real=likely_real(provenance=absent_provenance()))
    run.processor.process(upload("v-real", "file:///m/real"))
    assert run.flags() == []
    [event] = run.verdicts()
    assert event.data.provenance is not None
    assert event.data.provenance.state is ProvenanceState.ABSENT
    assert (event.data.action, event.data.action_signal) == (Action.NONE, None)
    assert run.sample("deepscreen_flags_total", signal="content_credentials") is None
    assert run.sample("deepscreen_flags_total", signal="model") is None


def test_flags_are_counted_by_the_signal_that_set_the_action() -> None:
    run = scripted(ai=declared_synthetic(), fake=verdict())  # fake: blocked by the model
    run.processor.process(upload("v-ai", "file:///m/ai"))
    run.processor.process(upload("v-ai-2", "file:///m/ai-again"))  # a cache hit, flagged too
    run.processor.process(upload("v-fake", "file:///m/fake"))
    assert [(f.data.video_id, f.data.action) for f in run.flags()] == [
        ("v-ai", Action.LABEL),
        ("v-ai-2", Action.LABEL),
        ("v-fake", Action.BLOCK),
    ]
    assert run.sample("deepscreen_flags_total", signal="content_credentials") == 2
    assert run.sample("deepscreen_flags_total", signal="model") == 1


def test_credentials_are_counted_once_per_read_never_on_a_cache_hit() -> None:
    run = scripted(ai=declared_synthetic(provenance=provenance(read_ms=250)))
    run.processor.process(upload("v-1", "file:///m/ai"))
    run.processor.process(upload("v-2", "file:///m/ai-again"))  # the same bytes: not read again
    assert run.screened == ["v-1"]
    assert [f.data.cache_hit for f in run.flags()] == [False, True]
    assert run.sample("deepscreen_credentials_total", state="valid") == 1
    assert run.sample("deepscreen_credentials_read_seconds_count") == 1
    assert run.sample("deepscreen_credentials_read_seconds_sum") == pytest.approx(0.25)
    assert run.sample("deepscreen_credentials_read_seconds_bucket", le="0.25") == 1
    assert run.sample("deepscreen_credentials_read_seconds_bucket", le="0.1") == 0
    assert run.sample("deepscreen_credentials_errors_total", reason="malformed_manifest") is None


def test_credentials_that_cannot_be_read_are_counted_by_reason() -> None:
    broken = unreadable_provenance(ProvenanceReason.MALFORMED)
    plain = absent_provenance()
    run = scripted(broken=likely_real(provenance=broken), plain=likely_real(provenance=plain))
    run.processor.process(upload("v-1", "file:///m/broken"))
    run.processor.process(upload("v-2", "file:///m/plain"))
    assert run.sample("deepscreen_credentials_total", state="unreadable") == 1
    assert run.sample("deepscreen_credentials_total", state="absent") == 1
    assert run.sample("deepscreen_credentials_errors_total", reason="malformed_manifest") == 1
    assert run.sample("deepscreen_credentials_read_seconds_count") == 2
    assert run.flags() == []  # unreadable credentials alone ask for no action


def test_a_verdict_without_credentials_read_counts_no_credentials() -> None:
    """Reading disabled (`DEEPSCREEN_PROVENANCE__ENABLED=false`): the verdict has none."""
    run = scripted(real=likely_real())
    run.processor.process(upload("v-1", "file:///m/real"))
    assert run.verdicts()[0].data.provenance is None
    assert run.sample("deepscreen_credentials_read_seconds_count") == 0
    for state in ProvenanceState:
        assert run.sample("deepscreen_credentials_total", state=state.value) is None


@pytest.mark.parametrize(
    "transient",
    [
        likely_real(provenance=unreadable_provenance(ProvenanceReason.READ_TIMEOUT)),
        likely_real(provenance=unreadable_provenance(ProvenanceReason.READER_CRASHED)),
        unreadable(reason=Reason.DECODE_TIMEOUT, provenance=absent_provenance()),
        unreadable(reason=Reason.DECODER_CRASHED),
    ],
    ids=["read_timeout", "reader_crashed", "decode_timeout", "decoder_crashed"],
)
def test_a_verdict_of_a_moment_is_not_cached_so_the_same_bytes_are_screened_again(
    transient: ScreeningVerdict,
) -> None:
    """A timeout or a crash says more about this replica than the bytes: the next try reads."""
    run = scripted(media=transient)
    run.processor.process(upload("v-1", "file:///m/media"))
    run.processor.process(upload("v-2", "file:///m/media-again"))
    assert run.screened == ["v-1", "v-2"]
    assert [e.data.cache_hit for e in run.verdicts()] == [False, False]
    assert run.sample("deepscreen_cache_hits_total") == 0


@pytest.mark.parametrize(
    "lasting",
    [
        declared_synthetic(),
        likely_real(provenance=unreadable_provenance(ProvenanceReason.MALFORMED)),
        likely_real(provenance=unreadable_provenance(ProvenanceReason.TOO_LARGE)),
        unreadable(reason=Reason.CORRUPT_CONTAINER, provenance=absent_provenance()),
    ],
    ids=["declared_synthetic", "malformed_manifest", "manifest_too_large", "corrupt_container"],
)
def test_a_verdict_about_the_bytes_is_cached_so_the_same_bytes_are_not_screened_again(
    lasting: ScreeningVerdict,
) -> None:
    run = scripted(media=lasting)
    run.processor.process(upload("v-1", "file:///m/media"))
    run.processor.process(upload("v-2", "file:///m/media-again"))
    assert run.screened == ["v-1"]
    assert [e.data.cache_hit for e in run.verdicts()] == [False, True]
    assert run.verdicts()[1].data.provenance == lasting.provenance


def test_processors_under_another_policy_do_not_share_cached_verdicts() -> None:
    """After an operator changes an action or the trust list, nothing decided before is served."""
    shared = InMemoryVerdictCache()
    labelling = scripted(policy="labels-ai", cache=shared, ai=declared_synthetic())
    reviewing = scripted(
        policy="reviews-ai", cache=shared, ai=declared_synthetic(action=Action.REVIEW)
    )
    labelling.processor.process(upload("v-1", "file:///m/ai"))
    reviewing.processor.process(upload("v-2", "file:///m/ai-again"))
    assert (labelling.screened, reviewing.screened) == (["v-1"], ["v-2"])
    assert reviewing.flags()[0].data.action is Action.REVIEW  # not the cached label
    assert reviewing.flags()[0].data.cache_hit is False
    # a replica under the same policy takes the entry
    again = scripted(policy="labels-ai", cache=shared, ai=declared_synthetic())
    again.processor.process(upload("v-3", "file:///m/ai-again"))
    assert again.screened == []
    assert (again.flags()[0].data.action, again.flags()[0].data.cache_hit) == (Action.LABEL, True)
    content = hashlib.sha256(media_bytes("ai")).hexdigest()
    assert shared.get(CacheKey(MODEL.sha256, content, policy="labels-ai")) is not None
    assert shared.get(CacheKey(MODEL.sha256, content)) is None  # no policy: another key


def test_the_screened_log_line_names_the_deciding_signal_the_media_and_the_credentials() -> None:
    run = scripted(ai=declared_synthetic(), real=likely_real())
    with capture_logs() as logs:
        run.processor.process(upload("v-ai", "file:///m/ai"))
        run.processor.process(upload("v-real", "file:///m/real"))
    screened = [entry for entry in logs if entry["event"] == "screened"]
    assert [entry["video_id"] for entry in screened] == ["v-ai", "v-real"]
    ai, real = screened
    assert ai["log_level"] == "info"
    assert (ai["outcome"], ai["reason"], ai["action"]) == (
        "declared_synthetic",
        "declared_ai_generated",
        "label",
    )
    assert (ai["action_signal"], ai["media"], ai["provenance"]) == (
        "content_credentials",
        "image",
        "valid",
    )
    assert (real["action"], real["action_signal"], real["media"], real["provenance"]) == (
        "none",
        None,
        "video",
        None,
    )


def test_the_detector_labels_a_real_looking_face_its_credentials_declare_ai(
    synthetic: SyntheticVideos,
) -> None:
    """End to end through the detector: the model's likely_real, the credentials' label."""
    scorer = InMemoryScorer(rule=lambda clip: 0.05)
    detector = Detector(scorer, credentials=StaticCredentialsReader(provenance()))
    metrics = Metrics()
    sink = InMemoryEventSink()
    processor = UploadProcessor(
        SETTINGS,
        screen=detector.screen,
        model_sha256=scorer.info.sha256,
        fetcher=InMemoryFetcher({"file:///m/face.mp4": synthetic.moving_face.read_bytes()}),
        cache=InMemoryVerdictCache(metrics=metrics),
        sink=sink,
        metrics=metrics,
        stopping=threading.Event(),
    )
    try:
        processor.process(upload("v-1", "file:///m/face.mp4"))
    finally:
        detector.close()
    [flag] = [DeepfakeFlag.model_validate_json(e.value) for e in sink.on("flags")]
    data = flag.data
    assert (data.outcome, data.action, data.action_signal) == (
        Outcome.DECLARED_SYNTHETIC,
        Action.LABEL,
        Signal.CONTENT_CREDENTIALS,
    )
    model = data.signal(Signal.MODEL)
    assert model is not None and model.outcome is Outcome.LIKELY_REAL
    assert data.score == pytest.approx(0.05) and data.timeline  # the model's evidence stays
    assert data.provenance == provenance()
    assert (
        metrics.registry.get_sample_value(
            "deepscreen_flags_total", {"signal": "content_credentials"}
        )
        == 1
    )
