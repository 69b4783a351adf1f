"""The bank topic read into a bank: later records replace earlier ones, tombstones delete,
the whole history replayed from the beginning gives the same bank (no compaction needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consumer.bank_topic import (
    BankReader,
    InMemoryBankTopic,
    InvalidBankRecord,
    decode_record,
    encode_entry,
    fit_entry,
)
from detector.bank import Bank, BankEntry
from detector.hashing import PdqFeature, VideoHashes
from schemas.decision import Decision

FRAME = PdqFeature(0, 0.0, 90, "f0" * 32)
FACE = PdqFeature(0, 0.0, 60, "0f" * 32)


def entry(entry_id: str, decision: Decision = Decision.CONFIRMED_FAKE) -> BankEntry:
    return BankEntry.from_hashes(
        entry_id,
        decision,
        "mod-1",
        VideoHashes(frames=(FRAME,), faces=(FACE,)),
        decided_at=datetime(2026, 12, 1, tzinfo=UTC),
    )


def read_all(topic: InMemoryBankTopic) -> BankReader:
    reader = BankReader(topic.log(), Bank())
    assert reader.run_until_caught_up(timeout_s=2)
    return reader


def test_an_entry_goes_on_the_topic_keyed_by_its_id_and_comes_back_equal() -> None:
    key, value = encode_entry(entry("abc"))
    assert key == b"abc"
    assert decode_record(key, value) == entry("abc")


def long_entry(frames: int) -> BankEntry:
    """An entry of `frames` consecutive frames, a face in each."""
    features = [PdqFeature(n, n / 30, 90, f"{n:064x}") for n in range(frames)]
    return BankEntry.from_hashes(
        "long",
        Decision.CONFIRMED_FAKE,
        "mod-1",
        VideoHashes(frames=tuple(features), faces=tuple(features)),
        decided_at=datetime(2026, 12, 1, tzinfo=UTC),
    )


def test_an_entry_that_fits_in_one_request_is_published_as_it_is() -> None:
    whole = long_entry(300)
    assert fit_entry(whole, 1024 * 1024) == whole


def test_an_entry_too_large_for_one_request_keeps_every_kth_frame_across_the_video() -> None:
    """A record the broker refuses would hold the ruling back for ever."""
    whole = long_entry(12_000)
    assert len(encode_entry(whole)[1]) > 1024 * 1024
    fitted = fit_entry(whole, 1024 * 1024)
    assert len(encode_entry(fitted)[1]) <= 1024 * 1024 - 16 * 1024
    kept = [f.frame_number for f in fitted.frames]
    step = kept[1] - kept[0]
    assert step > 1 and kept == list(range(0, 12_000, step))  # the whole span, evenly
    assert [f.frame_number for f in fitted.faces] == kept
    assert (fitted.entry_id, fitted.decision) == (whole.entry_id, whole.decision)


def test_a_null_value_is_a_tombstone() -> None:
    assert decode_record(b"abc", None) is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (None, b"{}", "has a key"),
        (b"\xff", None, "not UTF-8"),
        (b"abc", b"not json", "ValidationError"),
        (b"other", encode_entry(entry("abc"))[1], "under key 'other'"),
    ],
)
def test_a_record_that_is_not_an_entry_under_its_own_key_is_refused(
    key: bytes | None, value: bytes | None, message: str
) -> None:
    with pytest.raises(InvalidBankRecord, match=message):
        decode_record(key, value)


def test_a_reader_replays_the_history_later_records_winning_and_tombstones_deleting() -> None:
    topic = InMemoryBankTopic()
    writer = topic.writer()
    writer.publish(entry("a", Decision.CONFIRMED_FAKE))
    writer.publish(entry("b"))
    writer.publish(entry("a", Decision.FALSE_POSITIVE))  # a later ruling on the same content
    writer.retract("b")
    writer.publish(entry("c"))
    reader = read_all(topic)
    assert [(e.entry_id, e.decision) for e in reader.bank.entries()] == [
        ("a", Decision.FALSE_POSITIVE),
        ("c", Decision.CONFIRMED_FAKE),
    ]
    assert (reader.applied, reader.skipped) == (5, 0)


def test_a_reader_is_caught_up_only_once_it_has_read_what_the_topic_held_at_start() -> None:
    topic = InMemoryBankTopic()
    for name in "abc":
        topic.writer().publish(entry(name))
    reader = BankReader(topic.log(), Bank())
    assert not reader.caught_up
    reader.start()
    assert reader.wait_caught_up(2.0)
    assert len(reader.bank) == 3
    reader.close()


def test_an_empty_topic_is_caught_up_at_once() -> None:
    reader = BankReader(InMemoryBankTopic().log(), Bank()).start()
    assert reader.wait_caught_up(1.0)
    reader.close()


def test_a_caught_up_reader_tails_what_another_replica_writes() -> None:
    topic = InMemoryBankTopic()
    reader = BankReader(topic.log(), Bank()).start()
    assert reader.wait_caught_up(1.0)
    topic.writer().publish(entry("late"))
    deadline = datetime.now(UTC).timestamp() + 2
    while "late" not in reader.bank and datetime.now(UTC).timestamp() < deadline:
        reader.wait_caught_up(0.01)
    assert "late" in reader.bank
    topic.writer().retract("late")
    while "late" in reader.bank and datetime.now(UTC).timestamp() < deadline:
        reader.wait_caught_up(0.01)
    assert "late" not in reader.bank
    reader.close()


def test_a_record_that_cannot_be_read_is_skipped_and_the_rest_applied() -> None:
    topic = InMemoryBankTopic()
    topic.writer().publish(entry("a"))
    topic.append(b"b", b"{not an entry")
    topic.writer().publish(entry("c"))
    reader = read_all(topic)
    assert [e.entry_id for e in reader.bank.entries()] == ["a", "c"]
    assert (reader.applied, reader.skipped) == (2, 1)
