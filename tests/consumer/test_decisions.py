"""Moderators' rulings become bank entries, from the cached hashes or the content fetched again;
a ruling that cannot become one is a dead letter with its reason, never a stall."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consumer.bank_topic import InMemoryBankTopic, decode_record
from consumer.broker import InMemoryEventSink, InMemoryUploadSource, Message
from consumer.cache import HashesKey, InMemoryVerdictCache
from consumer.decisions import DecisionHandler, DecisionNotHandled, DecisionsLoop
from consumer.media import FetchError, InMemoryFetcher
from consumer.settings import KafkaSettings, RetrySettings, Settings
from detector.bank import Bank, BankEntry
from detector.hashing import PdqFeature, VideoHashes
from detector.probe import Unreadable
from schemas.dead_letter import DeadLetter
from schemas.decision import Decision, ModerationDecision, decision_event
from schemas.verdict import Reason

CONTENT = b"the bytes a moderator ruled on"
SHA = hashlib.sha256(CONTENT).hexdigest()
URI = "file:///media/ruled.mp4"
HASHING = "hashing-fp"
HASHES = VideoHashes(
    frames=(PdqFeature(0, 0.0, 90, "f0" * 32),), faces=(PdqFeature(0, 0.0, 60, "0f" * 32),)
)
WHOLE = VideoHashes(frames=HASHES.frames * 3, faces=HASHES.faces * 3, whole=True)
DECIDED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def decision(**fields: Any) -> dict[str, Any]:
    return {
        "video_id": "v-9",
        "content_sha256": SHA,
        "uri": URI,
        "decision": "confirmed_fake",
        "moderator": "mod-3",
        "reason": "face swap",
        "decided_at": DECIDED.isoformat(),
        **fields,
    }


def message(document: dict[str, Any] | bytes, offset: int = 0) -> Message:
    value = document if isinstance(document, bytes) else json.dumps(document).encode()
    return Message("moderation.decisions", 0, offset, SHA.encode(), value)


class Replica:
    """A handler over in-memory twins, and what it hashed."""

    def __init__(self, media: dict[str, bytes | FetchError] | None = None) -> None:
        self.settings = Settings(
            kafka=KafkaSettings(dlq_topic="dlq"),
            retry=RetrySettings(max_attempts=2, backoff_initial_s=0.0, backoff_max_s=0.0),
        )
        self.bank = Bank()
        self.topic = InMemoryBankTopic()
        self.cache = InMemoryVerdictCache()
        self.sink = InMemoryEventSink()
        self.fetcher = InMemoryFetcher(media if media is not None else {URI: CONTENT})
        self.hashed: list[bytes] = []
        self.unreadable = False
        self.handler = DecisionHandler(
            self.settings,
            bank=self.bank,
            writer=self.topic.writer(),
            cache=self.cache,
            hashing=HASHING,
            fetcher=self.fetcher,
            hash_content=self.hash_content,
            sink=self.sink,
            wait=lambda seconds: False,
        )

    def hash_content(self, path: Path) -> VideoHashes:
        self.hashed.append(path.read_bytes())
        if self.unreadable:
            raise Unreadable(Reason.CORRUPT_CONTAINER, "moov atom missing")
        return WHOLE

    def banked(self) -> list[BankEntry | None]:
        return [decode_record(r.key, r.value) for r in self.topic.records]

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter.from_headers(event.headers) for event in self.sink.on("dlq")]


def test_a_ruling_on_screened_content_is_banked_from_the_hashes_cached_beside_its_verdict() -> None:
    replica = Replica()
    replica.cache.put_hashes(HashesKey(HASHING, SHA), HASHES)
    outcome = replica.handler.handle(message(decision(uri=None)))
    assert (outcome.kind, outcome.hashes_from, outcome.whole) == ("banked", "cache", False)
    [entry] = replica.banked()
    assert entry is not None
    assert (entry.entry_id, entry.decision, entry.moderator) == (
        SHA,
        Decision.CONFIRMED_FAKE,
        "mod-3",
    )
    assert entry.frames == HASHES.frames and entry.faces == HASHES.faces
    assert entry.decision_event_id is not None
    assert replica.bank.get(SHA) == entry  # this replica at once
    assert replica.fetcher.fetched == []  # nothing fetched or decoded again


def test_an_entry_from_the_screened_windows_is_replaced_by_one_of_the_whole_video() -> None:
    """Banked from the cache first (seconds), then from every frame: trimmed copies match too."""
    replica = Replica()
    replica.cache.put_hashes(HashesKey(HASHING, SHA), HASHES)
    outcome = replica.handler.handle(message(decision()))
    assert (outcome.kind, outcome.hashes_from, outcome.whole) == ("banked", "cache", True)
    windows, whole = replica.banked()
    assert windows is not None and windows.frames == HASHES.frames
    assert whole is not None and whole.frames == WHOLE.frames and whole.faces == WHOLE.faces
    assert (whole.entry_id, whole.decided_at) == (windows.entry_id, windows.decided_at)
    assert replica.hashed == [CONTENT]
    assert replica.bank.get(SHA) == whole
    assert replica.cache.get_hashes(HashesKey(HASHING, SHA)) == WHOLE  # no second fetch later


def test_cached_hashes_of_the_whole_content_are_not_fetched_again() -> None:
    replica = Replica()
    replica.cache.put_hashes(HashesKey(HASHING, SHA), WHOLE)
    outcome = replica.handler.handle(message(decision()))
    assert (outcome.hashes_from, outcome.whole) == ("cache", True)
    assert len(replica.banked()) == 1 and replica.fetcher.fetched == []


@pytest.mark.parametrize("failure", ["gone", "unreadable"])
def test_when_the_whole_video_cannot_be_had_the_window_entry_stays(failure: str) -> None:
    """Not a dead letter: the ruling is banked, from what screening saw."""
    media: dict[str, bytes | FetchError] = {URI: CONTENT}
    if failure == "gone":
        media = {URI: FetchError("not_found", "404", retryable=False)}
    replica = Replica(media)
    replica.unreadable = failure == "unreadable"
    replica.cache.put_hashes(HashesKey(HASHING, SHA), HASHES)
    outcome = replica.handler.handle(message(decision()))
    assert (outcome.kind, outcome.hashes_from, outcome.whole) == ("banked", "cache", False)
    [entry] = replica.banked()
    assert entry is not None and replica.bank.get(SHA) == entry
    assert entry.frames == HASHES.frames
    assert replica.dead_letters() == []


def test_without_cached_hashes_the_content_is_fetched_checked_and_hashed_whole() -> None:
    replica = Replica()
    outcome = replica.handler.handle(message(decision()))
    assert (outcome.kind, outcome.hashes_from) == ("banked", "uri")
    assert replica.hashed == [CONTENT]
    [entry] = replica.banked()
    assert entry is not None and entry.frames == WHOLE.frames
    assert replica.cache.get_hashes(HashesKey(HASHING, SHA)) == WHOLE  # kept for next time


def test_a_ruling_in_a_cloudevent_is_banked_under_the_id_of_that_ruling() -> None:
    replica = Replica()
    replica.cache.put_hashes(HashesKey(HASHING, SHA), HASHES)
    ruling = ModerationDecision.model_validate(decision())
    event = decision_event(ruling)
    replica.handler.handle(message(event.model_dump_json().encode()))
    entries = replica.banked()
    assert entries and all(e is not None and e.decision_event_id == event.id for e in entries)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "not_json"),
        (json.dumps(decision(decision="maybe")).encode(), "invalid_event"),
        (json.dumps(decision(content_sha256="xyz")).encode(), "invalid_event"),
        (b"", "empty_payload"),
    ],
)
def test_a_malformed_ruling_is_a_dead_letter_with_its_reason(value: bytes, reason: str) -> None:
    replica = Replica()
    outcome = replica.handler.handle(message(value))
    assert (outcome.kind, outcome.reason) == ("dead_lettered", reason)
    [letter] = replica.dead_letters()
    assert (letter.reason, letter.source_topic, letter.offset) == (
        reason,
        "moderation.decisions",
        0,
    )
    assert replica.topic.records == []


def test_no_cached_hashes_and_no_uri_is_a_dead_letter() -> None:
    replica = Replica()
    document = decision()
    del document["uri"]
    outcome = replica.handler.handle(message(document))
    assert (outcome.kind, outcome.reason) == ("dead_lettered", "hashes_unavailable")


def test_content_that_is_not_what_the_ruling_is_about_is_a_dead_letter() -> None:
    replica = Replica({URI: b"other bytes now"})
    outcome = replica.handler.handle(message(decision()))
    assert (outcome.kind, outcome.reason) == ("dead_lettered", "sha256_mismatch")
    assert replica.hashed == []


def test_content_that_cannot_be_fetched_after_the_retries_is_a_dead_letter() -> None:
    replica = Replica({URI: FetchError("timeout", "slow", retryable=True)})
    outcome = replica.handler.handle(message(decision()))
    assert (outcome.kind, outcome.reason) == ("dead_lettered", "timeout")
    assert replica.fetcher.fetched == [URI, URI]  # retry.max_attempts
    assert replica.dead_letters()[0].attempts == 2


def test_content_that_does_not_decode_is_a_dead_letter() -> None:
    replica = Replica()
    replica.unreadable = True
    outcome = replica.handler.handle(message(decision()))
    assert (outcome.kind, outcome.reason) == ("dead_lettered", "content_unreadable")
    assert "corrupt_container" in replica.dead_letters()[0].detail


def test_a_retraction_puts_a_tombstone_on_the_topic_and_takes_the_entry_out() -> None:
    replica = Replica()
    replica.cache.put_hashes(HashesKey(HASHING, SHA), HASHES)
    replica.handler.handle(message(decision()))
    later = (DECIDED + timedelta(hours=1)).isoformat()
    outcome = replica.handler.handle(message(decision(decision="retracted", decided_at=later), 1))
    assert outcome.kind == "retracted"
    assert replica.topic.records[-1].value is None and replica.topic.records[-1].key == SHA.encode()
    assert SHA not in replica.bank


def test_a_ruling_older_than_the_banked_one_changes_nothing() -> None:
    replica = Replica()
    replica.cache.put_hashes(HashesKey(HASHING, SHA), HASHES)
    replica.handler.handle(message(decision(decision="false_positive")))
    published = len(replica.topic.records)
    earlier = (DECIDED - timedelta(days=1)).isoformat()
    outcome = replica.handler.handle(message(decision(decided_at=earlier), 1))
    assert outcome.kind == "superseded"
    assert len(replica.topic.records) == published
    banked = replica.bank.get(SHA)
    assert banked is not None and banked.decision is Decision.FALSE_POSITIVE


def test_a_bank_topic_that_does_not_take_the_entry_leaves_the_ruling_to_be_tried_again() -> None:
    replica = Replica()
    replica.cache.put_hashes(HashesKey(HASHING, SHA), HASHES)
    replica.topic.fail_next = 1
    with pytest.raises(DecisionNotHandled):
        replica.handler.handle(message(decision()))
    assert SHA not in replica.bank


def test_the_loop_commits_each_ruling_once_it_has_an_outcome_retrying_until_it_does() -> None:
    replica = Replica()
    replica.cache.put_hashes(HashesKey(HASHING, SHA), HASHES)
    replica.topic.fail_next = 1  # the first try cannot publish
    source = InMemoryUploadSource([message(b"{bad"), message(decision(), 1)])
    outcomes: list[str] = []
    loop = DecisionsLoop(
        replica.handler, source, retry_after_s=0.01, on_outcome=lambda o: outcomes.append(o.kind)
    ).start()
    deadline = datetime.now(UTC) + timedelta(seconds=5)
    while len(outcomes) < 2 and datetime.now(UTC) < deadline:
        loop.wait(0.01)
    loop.close()
    assert outcomes == ["dead_lettered", "banked"]
    assert [c for commit in source.commits for c in commit.values()] == [1, 2]
    assert SHA in replica.bank
