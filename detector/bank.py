"""The bank of known content: moderators' rulings with the perceptual hashes of what they ruled on.

A `confirmed_fake` entry catches re-uploads of a fake however they were
re-encoded, resized or trimmed; a `false_positive` or `confirmed_real` entry
allow-lists content so that the model's false alarm is not raised again. Each
entry holds the PDQ features of the content's frames and of its face tiles
(`detector.hashing`); the bank indexes both for Hamming lookup
(`detector.hash_index`) and applies one match rule to every entry.

The rule (`MatchRule`), vPDQ's bag-of-frames comparison made safe for
deepfakes: a query matches an entry when

- at least `min_frame_share` of the query's frames lie within
  `frame_distance` bits (vPDQ's 31) of some frame of the entry, and
- at least `min_face_share` of the query's face tiles (or one of each
  tile's probes) lie within `face_distance` bits of some face tile of the
  entry.

A deepfake and the real video it was made from share every frame but the
face, so frames alone would let a fake's entry block its real original, and
an allow-listed original would silence the model on fakes made from it.
Faces alone would be weak: the same person in other footage. Both must
match, at a face distance tighter than whole frames allow (24 bits; on the
shared clips a real clip's face tiles lie 46 bits or more from its fake's:
`bench/README.md`). An entry without face tiles never matches. Query
features below `min_quality` (`min_face_quality` for face tiles) are ignored:
flat pictures, black frames and fades hash alike whatever they show; entry
features below it are not stored. A flipped copy is recognised through the
query's mirrored features.

An entry should hash every frame (or every other one) of its content, not
only the sampled windows: a trimmed or frame-rate-halved copy samples other
moments, and face tiles, unlike whole frames, change within a second.

The bank lives in memory in every replica; it is rebuilt from the bank topic
at start (or from a bank file, `detector.bank_file`). Thread-safe.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from detector.config import MatchRule
from detector.hash_index import FaissFlatIndex, HammingIndex
from detector.hashing import PdqFeature, VideoHashes, hex_to_bits
from schemas.decision import Decision, ModerationDecision, decision_event


@dataclass(frozen=True)
class BankEntry:
    """One ruling and the hashes of the content it is about.

    `entry_id` is the key on the bank topic: the content's sha256 for a
    ruling (so a later ruling on the same content replaces the earlier one),
    or any other stable id for imported hashes.
    """

    entry_id: str
    decision: Decision
    moderator: str
    decided_at: datetime
    frames: tuple[PdqFeature, ...] = field(repr=False)
    faces: tuple[PdqFeature, ...] = field(repr=False)
    content_sha256: str | None = None
    video_id: str | None = None
    uri: str | None = None
    reason: str = ""
    answers_event_id: str | None = None
    decision_event_id: str | None = None  # `schemas.decision.decision_event(ruling).id`

    def __post_init__(self) -> None:
        if not self.entry_id:
            raise ValueError("an entry has an id")
        if self.decision is Decision.RETRACTED:
            raise ValueError("a retraction removes an entry; it is not one")

    @classmethod
    def from_decision(cls, ruling: ModerationDecision, hashes: VideoHashes) -> BankEntry:
        """The entry a ruling makes, keyed by the content it is about."""
        return cls(
            entry_id=ruling.content_sha256,
            decision=ruling.decision,
            moderator=ruling.moderator,
            decided_at=ruling.decided_at,
            frames=hashes.frames,
            faces=hashes.faces,
            content_sha256=ruling.content_sha256,
            video_id=ruling.video_id,
            uri=ruling.uri,
            reason=ruling.reason,
            answers_event_id=ruling.answers_event_id,
            decision_event_id=decision_event(ruling).id,
        )

    @classmethod
    def from_hashes(
        cls,
        entry_id: str,
        decision: Decision,
        moderator: str,
        hashes: VideoHashes,
        *,
        decided_at: datetime | None = None,
        content_sha256: str | None = None,
        video_id: str | None = None,
        reason: str = "",
    ) -> BankEntry:
        """An entry made without a ruling event (`bank add`, imports, tests)."""
        return cls(
            entry_id=entry_id,
            decision=decision,
            moderator=moderator,
            decided_at=decided_at or datetime.now(UTC),
            frames=hashes.frames,
            faces=hashes.faces,
            content_sha256=content_sha256,
            video_id=video_id,
            reason=reason,
        )


@dataclass(frozen=True)
class BankMatch:
    """How a query compares with one entry: the evidence a flag carries.

    Shares are of the query's usable features; distances are, over the
    matched query features, of each to its nearest feature of the entry.
    """

    entry: BankEntry
    is_match: bool
    frame_share: float
    face_share: float
    frames_matched: int
    frames_queried: int
    faces_matched: int
    faces_queried: int
    frame_distance_median: float | None
    frame_distance_min: int | None
    face_distance_median: float | None
    face_distance_min: int | None
    mirrored: bool = False  # matched through the query's mirrored features

    @property
    def decision(self) -> Decision:
        return self.entry.decision

    def strength(self) -> tuple[bool, float, float]:
        return (self.is_match, self.face_share, self.frame_share)


IndexFactory = Callable[[], HammingIndex]


@dataclass
class _Tally:
    """Nearest distance of each matched query feature, per entry slot."""

    nearest: dict[int, dict[int, int]] = field(default_factory=dict)  # slot → query → distance

    def record(
        self, results: Sequence[Sequence[tuple[int, int]]], owners: Sequence[int] | None = None
    ) -> None:
        """Tally search results; `owners[i]` is the query feature result `i` stands for."""
        for row, found in enumerate(results):
            query = row if owners is None else owners[row]
            for slot, distance in found:
                per_query = self.nearest.setdefault(slot, {})
                per_query[query] = min(distance, per_query.get(query, distance))


class Bank:
    """Entries by id, their frame and face hashes in two Hamming indexes, and the match rule."""

    def __init__(
        self, rule: MatchRule | None = None, index_factory: IndexFactory = FaissFlatIndex
    ) -> None:
        self.rule = rule or MatchRule()
        self._frames: HammingIndex = index_factory()
        self._faces: HammingIndex = index_factory()
        self._slots: dict[str, int] = {}  # entry id → slot (never reused)
        self._entries: dict[int, BankEntry] = {}  # slot → entry
        self._next_slot = 0
        self._version = 0  # bumped by every change of the entries
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- contents

    def add(self, entry: BankEntry) -> None:
        """Store an entry; one with the same id is replaced (the later ruling wins)."""
        frames = _usable(entry.frames, self.rule.min_quality)
        faces = _usable(entry.faces, self.rule.min_face_quality)
        with self._lock:
            self._remove_locked(entry.entry_id)
            slot = self._next_slot
            self._next_slot += 1
            self._frames.add(hex_to_bits(frames), np.full(len(frames), slot, dtype=np.int64))
            self._faces.add(hex_to_bits(faces), np.full(len(faces), slot, dtype=np.int64))
            self._slots[entry.entry_id] = slot
            self._entries[slot] = entry
            self._version += 1

    def remove(self, entry_id: str) -> bool:
        """Forget an entry; False when there was none."""
        with self._lock:
            return self._remove_locked(entry_id)

    def apply(self, ruling: ModerationDecision, hashes: VideoHashes | None) -> BankEntry | None:
        """Bring the bank in line with a ruling: the entry stored, or None when retracted.

        A ruling other than a retraction needs the content's hashes.
        """
        if ruling.decision is Decision.RETRACTED:
            self.remove(ruling.content_sha256)
            return None
        if hashes is None:
            raise ValueError(f"a {ruling.decision.value} ruling needs the content's hashes")
        entry = BankEntry.from_decision(ruling, hashes)
        self.add(entry)
        return entry

    def get(self, entry_id: str) -> BankEntry | None:
        with self._lock:
            slot = self._slots.get(entry_id)
            return None if slot is None else self._entries[slot]

    def entries(self) -> list[BankEntry]:
        """Every entry, oldest added first."""
        with self._lock:
            return [self._entries[slot] for slot in sorted(self._entries)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def version(self) -> int:
        """Changes whenever an entry is added, replaced or removed."""
        with self._lock:
            return self._version

    def __contains__(self, entry_id: object) -> bool:
        with self._lock:
            return entry_id in self._slots

    @property
    def frame_rows(self) -> int:
        with self._lock:
            return len(self._frames)

    @property
    def face_rows(self) -> int:
        with self._lock:
            return len(self._faces)

    def memory_bytes(self) -> int:
        """Bytes of the two indexes (the entries' Python objects come on top)."""
        with self._lock:
            return self._frames.memory_bytes() + self._faces.memory_bytes()

    # ---------------------------------------------------------------- lookups

    def match(self, query: VideoHashes) -> list[BankMatch]:
        """The entries the query matches under the rule, strongest first."""
        found = [m for m in self._compare(query, only=None) if m.is_match]
        return sorted(found, key=BankMatch.strength, reverse=True)

    def evaluate(self, query: VideoHashes, entry_id: str) -> BankMatch | None:
        """How the query compares with one entry, match or not; None for an unknown entry."""
        with self._lock:
            slot = self._slots.get(entry_id)
        if slot is None:
            return None
        compared = self._compare(query, only=slot)
        if compared:
            return compared[0]
        entry = self.get(entry_id)
        if entry is None:
            return None
        return self._verdict(entry, _Tally(), _Tally(), 0, 0, slot, mirrored=False)

    def _compare(self, query: VideoHashes, only: int | None) -> list[BankMatch]:
        orientations = [(query.frames, query.faces, query.face_probes, False)]
        if self.rule.mirrored and (query.mirrored_frames or query.mirrored_faces):
            orientations.append(
                (query.mirrored_frames, query.mirrored_faces, query.mirrored_face_probes, True)
            )
        best: dict[int, BankMatch] = {}
        for frames, faces, probes, mirrored in orientations:
            for slot, compared in self._compare_oriented(frames, faces, probes, mirrored, only):
                if slot not in best or compared.strength() > best[slot].strength():
                    best[slot] = compared
        return list(best.values())

    def _compare_oriented(
        self,
        frames: Sequence[PdqFeature],
        faces: Sequence[PdqFeature],
        probes: Sequence[Sequence[PdqFeature]],
        mirrored: bool,
        only: int | None,
    ) -> list[tuple[int, BankMatch]]:
        frame_hashes = _usable(frames, self.rule.min_quality)
        face_hashes, face_owners, faces_queried = self._usable_faces(faces, probes)
        frame_tally, face_tally = _Tally(), _Tally()
        with self._lock:
            frame_tally.record(
                self._frames.search(hex_to_bits(frame_hashes), self.rule.frame_distance)
            )
            candidates = set(frame_tally.nearest) if only is None else {only}
            if face_hashes and candidates:
                face_tally.record(
                    self._faces.search(hex_to_bits(face_hashes), self.rule.face_distance),
                    face_owners,
                )
            entries = {slot: self._entries[slot] for slot in candidates if slot in self._entries}
        return [
            (
                slot,
                self._verdict(
                    entry,
                    frame_tally,
                    face_tally,
                    len(frame_hashes),
                    faces_queried,
                    slot,
                    mirrored,
                ),
            )
            for slot, entry in entries.items()
        ]

    def _verdict(
        self,
        entry: BankEntry,
        frame_tally: _Tally,
        face_tally: _Tally,
        frames_queried: int,
        faces_queried: int,
        slot: int,
        mirrored: bool,
    ) -> BankMatch:
        frame_distances = list(frame_tally.nearest.get(slot, {}).values())
        face_distances = list(face_tally.nearest.get(slot, {}).values())
        frame_share = len(frame_distances) / frames_queried if frames_queried else 0.0
        face_share = len(face_distances) / faces_queried if faces_queried else 0.0
        return BankMatch(
            entry=entry,
            is_match=(
                frames_queried > 0
                and faces_queried > 0
                and frame_share >= self.rule.min_frame_share
                and face_share >= self.rule.min_face_share
            ),
            frame_share=frame_share,
            face_share=face_share,
            frames_matched=len(frame_distances),
            frames_queried=frames_queried,
            faces_matched=len(face_distances),
            faces_queried=faces_queried,
            frame_distance_median=_median(frame_distances),
            frame_distance_min=min(frame_distances, default=None),
            face_distance_median=_median(face_distances),
            face_distance_min=min(face_distances, default=None),
            mirrored=mirrored,
        )

    # ---------------------------------------------------------------- internals

    def _usable_faces(
        self, faces: Sequence[PdqFeature], probes: Sequence[Sequence[PdqFeature]]
    ) -> tuple[list[str], list[int], int]:
        """The hashes to look up for the query's faces, the face each stands for, and the count.

        A face counts when its own tile is of the minimum quality; it is
        matched when that tile or one of its probes is.
        """
        hashes: list[str] = []
        owners: list[int] = []
        counted = 0
        for index, face in enumerate(faces):
            if face.quality < self.rule.min_face_quality:
                continue
            tiles = [face, *(probes[index] if index < len(probes) else ())]
            for tile in tiles:
                if tile.quality >= self.rule.min_face_quality:
                    hashes.append(tile.pdq_hex)
                    owners.append(counted)
            counted += 1
        return hashes, owners, counted

    def _remove_locked(self, entry_id: str) -> bool:
        slot = self._slots.pop(entry_id, None)
        if slot is None:
            return False
        self._version += 1
        del self._entries[slot]
        self._frames.remove([slot])
        self._faces.remove([slot])
        return True


def _usable(features: Iterable[PdqFeature], min_quality: int) -> list[str]:
    """Distinct hashes of the features of at least `min_quality`, in order."""
    return list(dict.fromkeys(f.pdq_hex for f in features if f.quality >= min_quality))


def _median(values: list[int]) -> float | None:
    return float(statistics.median(values)) if values else None
