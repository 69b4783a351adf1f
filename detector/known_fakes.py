"""The known-fakes signal: an upload's hashes looked up in the bank, and what the finding means.

Moderators' rulings live in a bank (`detector.bank`): a `confirmed_fake`
entry catches re-uploads of a fake, a `false_positive` or `confirmed_real`
entry allow-lists content so that the model's false alarm is not raised
again. The detector asks the bank through the small `KnownFakes` port (an
in-memory `Bank` in every replica, fed from the bank topic, or from a bank
file for `scan --bank`).

A ruling about these very bytes applies whatever the pictures say (its entry
is keyed by the content's sha256): a fake whose faces the detector cannot
find is still the content the moderator ruled on. Otherwise the strongest
perceptual match decides, a confirmed fake before an allow-list entry.

The finding is a pure function of the hashes and the bank, so a cached
verdict is brought up to date with the bank (`refresh_known_fakes`) every
time it is served: a ruling made after the verdict was cached applies to the
next upload of that content on every replica, once the replica's bank has it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from detector.bank import BankEntry, BankMatch
from detector.config import ActionPolicy
from detector.hashing import VideoHashes
from schemas.decision import Decision
from schemas.verdict import (
    Action,
    KnownFakeMatch,
    Outcome,
    Reason,
    ScreeningVerdict,
    Signal,
    SignalResult,
    deciding_signal,
    headline_signal,
)


class KnownFakes(Protocol):
    """What the detector asks of the bank (`detector.bank.Bank` is one)."""

    def match(self, query: VideoHashes) -> list[BankMatch]:
        """The entries the query matches, strongest first."""
        ...

    def evaluate(self, query: VideoHashes, entry_id: str) -> BankMatch | None:
        """How the query compares with one entry, match or not; None for an unknown entry."""
        ...

    def get(self, entry_id: str) -> BankEntry | None: ...

    def __len__(self) -> int: ...

    @property
    def version(self) -> int:
        """Changes whenever an entry is added, replaced or removed."""
        ...


@dataclass(frozen=True)
class Finding:
    """The entry that applies to an upload, and how it compares with it."""

    match: BankMatch
    same_content: bool  # the entry is a ruling on these very bytes

    @property
    def entry(self) -> BankEntry:
        return self.match.entry


def look_up(bank: KnownFakes, hashes: VideoHashes | None, content_sha256: str) -> Finding | None:
    """The entry that applies: a ruling on these bytes, else the strongest perceptual match.

    Among perceptual matches a confirmed fake goes before an allow-list entry
    (the strictest ruling wins); the match rule already asks for frames and
    faces both, so the real original a fake was made from does not match it.
    """
    query = hashes or VideoHashes()
    if bank.get(content_sha256) is not None:
        compared = bank.evaluate(query, content_sha256)
        if compared is not None:  # None only when removed in between
            return Finding(compared, same_content=True)
    if hashes is None:
        return None
    matches = bank.match(hashes)
    fakes = [m for m in matches if m.decision is Decision.CONFIRMED_FAKE]
    strongest = fakes or matches
    return Finding(strongest[0], same_content=False) if strongest else None


def known_fakes_result(
    finding: Finding | None, policy: ActionPolicy, *, entries: int, hashed: bool
) -> SignalResult:
    """The bank's finding as a signal: a confirmed fake, an allow-list entry, or nothing."""
    if finding is None:
        looked = f"no match among {entries} bank entries"
        return SignalResult(
            signal=Signal.KNOWN_FAKES,
            outcome=None,
            summary=looked if hashed else f"not hashed (nothing decoded); {looked} by content",
        )
    entry, how = finding.entry, _how(finding)
    ruling = f"{entry.decision.value} by {entry.moderator} at {entry.decided_at.isoformat()}"
    if entry.decision is Decision.CONFIRMED_FAKE:
        return SignalResult(
            signal=Signal.KNOWN_FAKES,
            outcome=Outcome.SUSPECTED_DEEPFAKE,
            reason=Reason.MATCHES_CONFIRMED_FAKE,
            action=policy.known_fake,
            summary=f"matches bank entry {entry.entry_id} ({ruling}); {how}"[:512],
        )
    return SignalResult(
        signal=Signal.KNOWN_FAKES,
        outcome=Outcome.LIKELY_REAL,
        reason=Reason.ALLOW_LISTED,
        summary=f"allow-listed by bank entry {entry.entry_id} ({ruling}); {how}; "
        f"the model's action is not taken"[:512],
    )


def evidence(finding: Finding) -> KnownFakeMatch:
    """What a moderator sees of the finding: the entry, its ruling, shares and distances."""
    entry, match = finding.entry, finding.match
    return KnownFakeMatch(
        entry_id=entry.entry_id,
        decision=entry.decision.value,  # never `retracted`: a BankEntry refuses it
        moderator=entry.moderator,
        decided_at=entry.decided_at,
        decision_event_id=entry.decision_event_id,
        answers_event_id=entry.answers_event_id,
        entry_content_sha256=entry.content_sha256,
        entry_video_id=entry.video_id,
        same_content=finding.same_content,
        frame_share=round(match.frame_share, 4),
        face_share=round(match.face_share, 4),
        frames_matched=match.frames_matched,
        frames_queried=match.frames_queried,
        faces_matched=match.faces_matched,
        faces_queried=match.faces_queried,
        frame_distance_median=match.frame_distance_median,
        frame_distance_min=match.frame_distance_min,
        face_distance_median=match.face_distance_median,
        face_distance_min=match.face_distance_min,
        mirrored=match.mirrored,
    )


def combined(
    credentials: SignalResult | None, known: SignalResult | None, model: SignalResult
) -> list[SignalResult]:
    """The signals in `SIGNAL_PRIORITY` order; an allow-list entry suppresses the model's action.

    Only the model is ever suppressed: the credentials are the upload's own
    declaration, and a ruling that content is real does not change what it declares.
    """
    allow_listed = known is not None and known.reason is Reason.ALLOW_LISTED
    suppress = allow_listed and model.action is not Action.NONE
    if model.suppressed != suppress:
        model = SignalResult.model_validate({**model.model_dump(), "suppressed": suppress})
    return [r for r in (credentials, known, model) if r is not None]


def refresh_known_fakes(
    verdict: ScreeningVerdict,
    hashes: VideoHashes | None,
    bank: KnownFakes,
    policy: ActionPolicy,
) -> ScreeningVerdict:
    """The verdict with its known-fakes finding redone against the bank as it is now.

    For a verdict served from the cache: the model's and the credentials'
    results stand (they depend on the bytes alone), the bank's may have
    changed since. The verdict is returned unchanged when its finding has not.
    """
    finding = look_up(bank, hashes, verdict.content_sha256)
    known = known_fakes_result(finding, policy, entries=len(bank), hashed=hashes is not None)
    found = evidence(finding) if finding else None
    before = verdict.signal(Signal.KNOWN_FAKES)
    if before == known and verdict.known_fake == found:
        return verdict
    model = verdict.signal(Signal.MODEL)
    if model is None:  # a verdict always reports the model; this is a broken cache entry
        raise ValueError("a verdict without the model's result")
    signals = combined(verdict.signal(Signal.CONTENT_CREDENTIALS), known, model)
    headline = headline_signal(signals)
    old_headline = headline_signal(verdict.signals)
    if headline.signal is Signal.MODEL:
        detail = verdict.reason_detail if old_headline.signal is Signal.MODEL else model.summary
    else:
        detail = headline.summary
    deciding = deciding_signal(signals)
    return ScreeningVerdict.model_validate(
        {
            **verdict.model_dump(),
            "signals": [s.model_dump() for s in signals],
            "known_fake": found.model_dump() if found else None,
            "outcome": headline.outcome,
            "reason": headline.reason,
            "reason_detail": detail,
            "action": headline.action,
            "action_signal": deciding.signal if deciding else None,
        }
    )


class RefreshedVerdicts:
    """`refresh_known_fakes`, remembered per content while the bank does not change.

    A cache hit has its known-fakes finding redone against the bank; in a burst
    of re-uploads of the same bytes that would look the bank up once an upload,
    and a lookup in a bank of a million hashes takes tens of milliseconds. The
    answer is kept per content with the bank's `version`, which every entry
    added or removed changes, so what is served is never staler than a lookup
    would be. Kept only for the very verdict and hashes objects it was worked
    out from (the cache hands out the same objects for the same entries).
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._max_entries = max_entries
        self._kept: OrderedDict[str, tuple[int, object, object, ScreeningVerdict]] = OrderedDict()
        self._lock = threading.Lock()

    def refresh(
        self,
        verdict: ScreeningVerdict,
        hashes: VideoHashes | None,
        bank: KnownFakes,
        policy: ActionPolicy,
    ) -> ScreeningVerdict:
        version = bank.version  # before the lookup: a change during it is seen next time
        key = verdict.content_sha256
        with self._lock:
            kept = self._kept.get(key)
        if kept is not None and kept[0] == version and kept[1] is verdict and kept[2] is hashes:
            return kept[3]
        fresh = refresh_known_fakes(verdict, hashes, bank, policy)
        with self._lock:
            self._kept[key] = (version, verdict, hashes, fresh)
            self._kept.move_to_end(key)
            while len(self._kept) > self._max_entries:
                self._kept.popitem(last=False)
        return fresh


def _how(finding: Finding) -> str:
    match = finding.match
    shares = (
        f"frames {match.frames_matched}/{match.frames_queried}, "
        f"faces {match.faces_matched}/{match.faces_queried} within distance"
    )
    if finding.same_content:
        return f"the same bytes ({shares})"
    flipped = ", flipped" if match.mirrored else ""
    return f"{shares}{flipped}"
