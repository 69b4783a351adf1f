from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from detector.bank import Bank, BankEntry
from detector.bank_file import (
    InvalidBankFile,
    entry_to_record,
    feature_line,
    load_bank,
    parse_vpdq,
    record_to_entry,
    save_bank,
    vpdq_text,
)
from detector.hashing import PdqFeature, VideoHashes
from schemas.bank import BankEntryRecord
from schemas.decision import Decision

DIGEST = "e271017837246aaccddea259648fb7d62f435c89d9e99b2497763e216c8d055c"


def random_features(count: int, seed: int) -> tuple[PdqFeature, ...]:
    rng = np.random.default_rng(seed)
    return tuple(
        PdqFeature(3 * i, round(0.1 * i, 3), int(rng.integers(50, 101)), rng.bytes(32).hex())
        for i in range(count)
    )


def entry(entry_id: str = "c" * 64, decision: Decision = Decision.CONFIRMED_FAKE) -> BankEntry:
    return BankEntry(
        entry_id=entry_id,
        decision=decision,
        moderator="mod-42",
        decided_at=datetime(2026, 11, 21, 9, 30, tzinfo=UTC),
        frames=random_features(12, seed=1),
        faces=random_features(9, seed=2),
        content_sha256="c" * 64,
        video_id="v-7",
        uri="s3://uploads/v-7.mp4",
        reason="face swap",
        answers_event_id="flag-1",
    )


def test_a_feature_is_written_as_the_vpdq_reference_hash_file_writes_it() -> None:
    feature = PdqFeature(frame_number=3, timestamp_s=0.1, quality=100, pdq_hex=DIGEST)
    assert feature_line(feature) == f"3,100,{DIGEST},0.100"


def test_a_vpdq_hash_file_reads_back_to_the_same_features() -> None:
    features = random_features(20, seed=3)
    assert parse_vpdq(vpdq_text(features)) == features


def test_threatexchange_compact_lines_are_read_with_frames_counted_from_zero() -> None:
    compact = json.dumps([f"{DIGEST},100,0.000", f"{DIGEST.upper()},87,1.000"])
    features = parse_vpdq("\n".join(json.loads(compact)))
    assert [(f.frame_number, f.quality, f.timestamp_s) for f in features] == [
        (0, 100, 0.0),
        (1, 87, 1.0),
    ]
    assert features[1].pdq_hex == DIGEST


@pytest.mark.parametrize(
    "text",
    [
        f"0,100,{DIGEST}",  # two fields where three or four are needed
        f"0,100,{DIGEST[:-1]},0.0",
        f"0,101,{DIGEST},0.0",
        f"x,100,{DIGEST},0.0",
        f"0,100,{DIGEST},0.0,extra",
    ],
)
def test_a_line_that_is_not_a_vpdq_feature_is_refused(text: str) -> None:
    with pytest.raises(InvalidBankFile):
        parse_vpdq(f"0,100,{DIGEST},0.000\n{text}\n")


def test_a_bank_file_round_trips_every_entry(tmp_path: Path) -> None:
    entries = [entry("a" * 64), entry("b" * 64, Decision.FALSE_POSITIVE)]
    path = tmp_path / "banks" / "known.json"
    save_bank(path, entries)
    assert load_bank(path) == entries
    assert [p.name for p in path.parent.iterdir()] == ["known.json"]  # no temporary left


def test_a_bank_file_holds_each_entrys_frames_as_a_vpdq_hash(tmp_path: Path) -> None:
    path = tmp_path / "known.json"
    banked = entry()
    save_bank(path, [banked])
    document = json.loads(path.read_text())
    assert document["format"] == "deepscreen.bank" and document["version"] == 1
    frames = document["entries"][0]["frames"]
    assert parse_vpdq("\n".join(frames)) == banked.frames
    assert document["entries"][0]["decision"] == "confirmed_fake"


def test_a_loaded_bank_matches_what_the_saved_one_did(tmp_path: Path) -> None:
    banked = entry()
    save_bank(tmp_path / "known.json", [banked])
    bank = Bank()
    for loaded in load_bank(tmp_path / "known.json"):
        bank.add(loaded)
    query = VideoHashes(frames=banked.frames, faces=banked.faces)
    assert [m.entry.entry_id for m in bank.match(query)] == [banked.entry_id]


def test_an_entry_survives_the_record_the_bank_topic_carries() -> None:
    banked = entry()
    record = entry_to_record(banked)
    assert record_to_entry(BankEntryRecord.model_validate_json(record.model_dump_json())) == banked


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b'{"format": "something.else", "entries": []}',
        json.dumps({"format": "deepscreen.bank", "version": 1, "entries": [{"id": "x"}]}).encode(),
        json.dumps(
            {
                "format": "deepscreen.bank",
                "version": 1,
                "entries": [
                    {
                        "id": "x",
                        "decision": "retracted",
                        "moderator": "m",
                        "decided_at": "2026-11-21T09:30:00Z",
                        "frames": [],
                    }
                ],
            }
        ).encode(),
    ],
    ids=["not-json", "a-list", "another-format", "entry-without-fields", "a-retraction"],
)
def test_a_file_that_is_not_a_bank_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "known.json"
    path.write_bytes(content)
    with pytest.raises(InvalidBankFile):
        load_bank(path)


def test_an_empty_bank_saves_and_loads(tmp_path: Path) -> None:
    save_bank(tmp_path / "empty.json", [])
    assert load_bank(tmp_path / "empty.json") == []
