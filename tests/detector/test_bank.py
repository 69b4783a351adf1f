"""The bank's match rule, on hashes made to lie at chosen distances from each other."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pytest

from detector.bank import Bank, BankEntry, MatchRule
from detector.hash_index import BruteForceIndex, FaissFlatIndex, FaissMultiHashIndex, HammingIndex
from detector.hashing import PdqFeature, VideoHashes
from schemas.decision import Decision, ModerationDecision

RULE = MatchRule(
    frame_distance=31,
    min_frame_share=0.5,
    face_distance=16,
    min_face_share=0.5,
    min_quality=50,
    min_face_quality=50,
)
FAKE_SHA = "f" * 64


def random_hex(rng: np.random.Generator) -> str:
    return rng.integers(0, 256, size=32, dtype=np.uint8).tobytes().hex()


def near(hex_hash: str, bits: int, rng: np.random.Generator) -> str:
    """A hash exactly `bits` bits away from `hex_hash`."""
    value = int(hex_hash, 16)
    for position in rng.choice(256, size=bits, replace=False):
        value ^= 1 << int(position)
    return f"{value:064x}"


def features(hashes: list[str], quality: int = 100) -> tuple[PdqFeature, ...]:
    return tuple(PdqFeature(5 * i, 0.2 * i, quality, h) for i, h in enumerate(hashes))


def video(rng: np.random.Generator, frames: int = 8, faces: int = 8) -> VideoHashes:
    return VideoHashes(
        frames=features([random_hex(rng) for _ in range(frames)]),
        faces=features([random_hex(rng) for _ in range(faces)]),
    )


def copy_of(
    source: VideoHashes,
    rng: np.random.Generator,
    frame_bits: int,
    face_bits: int,
    frames: int | None = None,
    faces: int | None = None,
) -> VideoHashes:
    """The source's first `frames`/`faces` features moved by the given distances."""
    return VideoHashes(
        frames=features([near(f.pdq_hex, frame_bits, rng) for f in source.frames[:frames]]),
        faces=features([near(f.pdq_hex, face_bits, rng) for f in source.faces[:faces]]),
    )


def fake_entry(hashes: VideoHashes, entry_id: str = "fake-1") -> BankEntry:
    return BankEntry.from_hashes(
        entry_id, Decision.CONFIRMED_FAKE, "mod-1", hashes, video_id="v-fake"
    )


INDEXES: dict[str, Callable[[], HammingIndex]] = {
    "faiss-flat": FaissFlatIndex,
    "faiss-multihash": FaissMultiHashIndex,
    "brute-force": BruteForceIndex,
}


@pytest.fixture(params=list(INDEXES))
def bank(request: pytest.FixtureRequest) -> Bank:
    return Bank(rule=RULE, index_factory=INDEXES[request.param])


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(15)


def test_a_re_encoded_copy_of_a_banked_fake_matches_with_its_evidence(
    bank: Bank, rng: np.random.Generator
) -> None:
    fake = video(rng)
    bank.add(fake_entry(fake))
    found = bank.match(copy_of(fake, rng, frame_bits=20, face_bits=10))
    assert len(found) == 1
    match = found[0]
    assert match.is_match and match.decision is Decision.CONFIRMED_FAKE
    assert match.entry.entry_id == "fake-1" and match.entry.moderator == "mod-1"
    assert (match.frame_share, match.face_share) == (1.0, 1.0)
    assert (match.frames_matched, match.frames_queried) == (8, 8)
    assert (match.frame_distance_median, match.frame_distance_min) == (20.0, 20)
    assert (match.face_distance_median, match.face_distance_min) == (10.0, 10)
    assert not match.mirrored


def test_the_real_original_of_a_fake_does_not_match_the_fakes_entry(
    bank: Bank, rng: np.random.Generator
) -> None:
    """Same frames (within 31 bits), other face: the swapped face lies 20 bits away or more."""
    fake = video(rng)
    bank.add(fake_entry(fake))
    original = copy_of(fake, rng, frame_bits=12, face_bits=20)
    assert bank.match(original) == []
    evidence = bank.evaluate(original, "fake-1")
    assert evidence is not None and not evidence.is_match
    assert (evidence.frame_share, evidence.face_share) == (1.0, 0.0)


def test_the_same_face_in_other_footage_does_not_match(
    bank: Bank, rng: np.random.Generator
) -> None:
    fake = video(rng)
    bank.add(fake_entry(fake))
    other_footage = VideoHashes(
        frames=video(rng).frames, faces=copy_of(fake, rng, frame_bits=0, face_bits=4).faces
    )
    assert bank.match(other_footage) == []


def test_too_small_a_share_of_matching_frames_or_faces_is_no_match(
    bank: Bank, rng: np.random.Generator
) -> None:
    fake = video(rng)
    bank.add(fake_entry(fake))
    unrelated = video(rng)
    copy = copy_of(fake, rng, frame_bits=10, face_bits=8)
    few_frames = VideoHashes(frames=copy.frames[:3] + unrelated.frames[:5], faces=copy.faces)
    few_faces = VideoHashes(frames=copy.frames, faces=copy.faces[:3] + unrelated.faces[:5])
    half = VideoHashes(frames=copy.frames[:4] + unrelated.frames[:4], faces=copy.faces)
    assert bank.match(few_frames) == []
    assert bank.match(few_faces) == []
    assert [m.frame_share for m in bank.match(half)] == [0.5]  # the threshold is inclusive


def test_a_trimmed_copy_matches_on_the_share_of_its_own_frames(
    bank: Bank, rng: np.random.Generator
) -> None:
    fake = video(rng, frames=20, faces=20)
    bank.add(fake_entry(fake))
    middle = VideoHashes(frames=fake.frames[6:14], faces=fake.faces[6:14])
    assert [m.frame_share for m in bank.match(middle)] == [1.0]


def test_an_entry_without_face_crops_never_matches(bank: Bank, rng: np.random.Generator) -> None:
    fake = video(rng, faces=0)
    bank.add(fake_entry(fake))
    assert bank.match(VideoHashes(frames=fake.frames, faces=video(rng).faces)) == []
    assert bank.match(fake) == []


def test_features_under_the_minimum_quality_count_for_nothing(
    bank: Bank, rng: np.random.Generator
) -> None:
    """Black frames and fades hash alike in every video: they must not make a match."""
    flat_frames = features([random_hex(rng) for _ in range(8)], quality=10)
    flat_faces = features([random_hex(rng) for _ in range(8)], quality=10)
    bank.add(fake_entry(VideoHashes(frames=flat_frames, faces=flat_faces)))
    assert bank.frame_rows == bank.face_rows == 0
    assert bank.match(VideoHashes(frames=flat_frames, faces=flat_faces)) == []


def test_a_flipped_copy_matches_through_the_querys_mirrored_features(
    rng: np.random.Generator,
) -> None:
    fake = video(rng)
    flipped = VideoHashes(
        frames=video(rng).frames,
        faces=video(rng).faces,
        mirrored_frames=copy_of(fake, rng, 12, 6).frames,
        mirrored_faces=copy_of(fake, rng, 12, 6).faces,
    )
    mirroring, upright_only = Bank(rule=RULE), Bank(rule=MatchRule(mirrored=False))
    for bank in (mirroring, upright_only):
        bank.add(fake_entry(fake))
    assert [m.mirrored for m in mirroring.match(flipped)] == [True]
    assert upright_only.match(flipped) == []


def test_a_retraction_removes_the_entry_its_ruling_made(
    bank: Bank, rng: np.random.Generator
) -> None:
    fake = video(rng)
    entry = bank.apply(ruling(Decision.CONFIRMED_FAKE), fake)
    assert entry is not None and entry.entry_id == FAKE_SHA and FAKE_SHA in bank
    assert bank.match(fake)[0].entry.answers_event_id == "flag-1"
    assert bank.apply(ruling(Decision.RETRACTED), None) is None
    assert FAKE_SHA not in bank and len(bank) == 0
    assert bank.match(fake) == []
    assert bank.remove(FAKE_SHA) is False


def test_a_later_ruling_on_the_same_content_replaces_the_earlier_one(
    bank: Bank, rng: np.random.Generator
) -> None:
    content = video(rng)
    bank.apply(ruling(Decision.CONFIRMED_FAKE), content)
    bank.apply(ruling(Decision.FALSE_POSITIVE), content)
    assert len(bank) == 1
    assert [m.decision for m in bank.match(content)] == [Decision.FALSE_POSITIVE]


def test_replacing_an_entry_drops_its_old_hashes(bank: Bank, rng: np.random.Generator) -> None:
    first, second = video(rng), video(rng)
    bank.add(fake_entry(first))
    bank.add(fake_entry(second))
    assert bank.match(first) == []
    assert [m.entry.entry_id for m in bank.match(second)] == ["fake-1"]
    assert bank.frame_rows == 8


def test_a_ruling_that_keeps_content_needs_its_hashes(bank: Bank) -> None:
    with pytest.raises(ValueError, match="hashes"):
        bank.apply(ruling(Decision.CONFIRMED_FAKE), None)


def test_several_matching_entries_come_strongest_first(
    bank: Bank, rng: np.random.Generator
) -> None:
    content = video(rng)
    bank.add(fake_entry(copy_of(content, rng, 10, 8, faces=6), entry_id="partial"))
    bank.add(fake_entry(copy_of(content, rng, 10, 8), entry_id="whole"))
    bank.add(fake_entry(video(rng), entry_id="unrelated"))
    assert [m.entry.entry_id for m in bank.match(content)] == ["whole", "partial"]
    assert bank.evaluate(content, "unrelated") is not None
    assert bank.evaluate(content, "missing") is None


def test_entries_are_listed_oldest_first_and_counted(bank: Bank, rng: np.random.Generator) -> None:
    for name in ("a", "b", "c"):
        bank.add(fake_entry(video(rng, frames=4, faces=2), entry_id=name))
    bank.remove("b")
    assert [e.entry_id for e in bank.entries()] == ["a", "c"]
    assert (len(bank), bank.frame_rows, bank.face_rows) == (2, 8, 4)
    assert bank.get("c") is not None and bank.get("b") is None
    assert bank.memory_bytes() >= (8 + 4) * 32


def test_a_retraction_is_not_an_entry() -> None:
    with pytest.raises(ValueError):
        BankEntry.from_hashes("x", Decision.RETRACTED, "m", VideoHashes())


@pytest.mark.parametrize(
    "rule",
    [
        {"face_distance": 40, "frame_distance": 31},
        {"min_frame_share": 0.0},
        {"min_face_share": 1.5},
    ],
)
def test_a_rule_that_makes_no_sense_is_refused(rule: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MatchRule(**rule)  # type: ignore[arg-type]


def ruling(decision: Decision) -> ModerationDecision:
    return ModerationDecision(
        answers_event_id="flag-1",
        video_id="v-fake",
        content_sha256=FAKE_SHA,
        decision=decision,
        moderator="mod-1",
        decided_at=datetime(2026, 11, 21, 9, 30, tzinfo=UTC),
    )
