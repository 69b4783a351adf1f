"""The known-fakes signal in the detector: uploads hashed as decoded, looked up in the bank.

Synthetic videos (the astronaut's face moving over a background), the in-memory
scorer and an in-memory bank: a banked confirmed fake is caught again, even
re-encoded; an allow-listed upload silences the model, never the credentials;
a cached verdict is brought up to date with the bank when served.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from detector.bank import Bank, BankEntry, BankMatch
from detector.config import ActionPolicy, DetectorConfig, KnownFakesConfig, SamplingConfig
from detector.hashing import VideoHashes
from detector.known_fakes import RefreshedVerdicts, refresh_known_fakes
from detector.pipeline import Detector
from detector.scoring import InMemoryScorer
from schemas import Action, Outcome, Reason
from schemas.decision import Decision, ModerationDecision, decision_event
from schemas.verdict import ScreeningVerdict, Signal, SignalResult, severity
from tests.conftest import SyntheticVideos
from tests.schemas.factories import verdict as make_verdict

DECIDED = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def screening(score: float, bank: Bank | None = None, **config: object) -> Detector:
    """A detector whose model gives every clip `score`, over `bank` (credentials off)."""
    base = DetectorConfig()
    return Detector(
        InMemoryScorer(rule=lambda clip: score),
        replace(base, credentials=replace(base.credentials, enabled=False), **config),
        known_fakes=bank,
    )


@pytest.fixture(scope="module")
def faking() -> Iterator[Detector]:
    detector = screening(0.1)
    yield detector
    detector.close()


@pytest.fixture(scope="module")
def whole_hashes(faking: Detector, synthetic: SyntheticVideos) -> VideoHashes:
    return faking.hash_whole(synthetic.moving_face)


def ruling(decision: Decision, content_sha256: str, **fields: object) -> ModerationDecision:
    return ModerationDecision.model_validate(
        {
            "video_id": "v-ruled",
            "content_sha256": content_sha256,
            "decision": decision.value,
            "moderator": "mod-7",
            "reason": "seen it",
            "decided_at": DECIDED,
            "answers_event_id": "flag-123",
            **fields,
        }
    )


def entry(decision: Decision, hashes: VideoHashes, entry_id: str = "e" * 64) -> BankEntry:
    return BankEntry.from_decision(ruling(decision, entry_id), hashes)


def reencoded(source: Path, target: Path, crf: int) -> Path:
    import imageio_ffmpeg

    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(source), "-an",
         "-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p", str(target)],
        check=True,
    )  # fmt: skip
    return target


# ------------------------------------------------------------------ hashing while decoding


def test_screening_hashes_every_fifth_frame_of_the_windows_and_the_faces_in_them(
    faking: Detector, synthetic: SyntheticVideos
) -> None:
    screened = faking.screen_timed(synthetic.moving_face)
    hashes = screened.hashes
    assert hashes is not None
    # 60 frames: three windows of 20, every one decoded for the model anyway
    assert [f.frame_number for f in hashes.frames] == list(range(0, 60, 5))
    assert [round(f.timestamp_s, 2) for f in hashes.frames[:3]] == [0.0, 0.2, 0.4]
    assert len(hashes.faces) == len(hashes.frames)  # one face in every hashed frame
    assert len(hashes.mirrored_frames) == len(hashes.frames)
    assert screened.times.hash_s > 0


def test_a_whole_video_hash_covers_every_window_not_only_the_sampled_ones(
    synthetic: SyntheticVideos, whole_hashes: VideoHashes
) -> None:
    one_window = screening(0.1, sampling=SamplingConfig(windows=1))
    sampled = one_window.screen_timed(synthetic.moving_face).hashes
    one_window.close()
    assert sampled is not None and len(sampled.frames) == 4  # one window of 20 frames
    assert not sampled.whole
    # every frame: a trimmed copy's sampled frames each meet one of the entry's own
    assert [f.frame_number for f in whole_hashes.frames] == list(range(60))
    assert {f.frame_number for f in whole_hashes.faces} == set(range(60))
    assert whole_hashes.whole


def test_a_whole_video_hash_beyond_its_frame_budget_takes_every_kth_frame(
    synthetic: SyntheticVideos,
) -> None:
    """Cost and the bank record's size stay bounded for long videos."""
    budget = KnownFakesConfig(hashing=replace(KnownFakesConfig().hashing, entry_max_frames=25))
    detector = screening(0.1, known_fakes=budget)
    hashes = detector.hash_whole(synthetic.moving_face)
    detector.close()
    assert [f.frame_number for f in hashes.frames] == list(range(0, 60, 3))  # ceil(60 / 25)


def test_with_the_signal_off_nothing_is_hashed_and_the_bank_is_not_asked(
    synthetic: SyntheticVideos,
) -> None:
    detector = screening(0.1, known_fakes=KnownFakesConfig(enabled=False))
    screened = detector.screen_timed(synthetic.moving_face)
    detector.close()
    assert screened.hashes is None
    assert [s.signal for s in screened.verdict.signals] == [Signal.MODEL]


# ------------------------------------------------------------------ confirmed fakes


def test_a_banked_confirmed_fake_is_blocked_with_the_entry_and_its_ruling_as_evidence(
    synthetic: SyntheticVideos, whole_hashes: VideoHashes
) -> None:
    bank = Bank()
    banked = entry(Decision.CONFIRMED_FAKE, whole_hashes)
    bank.add(banked)
    detector = screening(0.1, bank)  # the model thinks it real
    verdict = detector.screen(synthetic.moving_face)
    detector.close()
    assert (verdict.outcome, verdict.reason, verdict.action, verdict.action_signal) == (
        Outcome.SUSPECTED_DEEPFAKE,
        Reason.MATCHES_CONFIRMED_FAKE,
        Action.BLOCK,
        Signal.KNOWN_FAKES,
    )
    model = verdict.signal(Signal.MODEL)
    assert model is not None and model.outcome is Outcome.LIKELY_REAL  # still reported
    found = verdict.known_fake
    assert found is not None
    assert found.entry_id == banked.entry_id
    assert (found.decision, found.moderator, found.decided_at) == (
        "confirmed_fake",
        "mod-7",
        DECIDED,
    )
    assert found.decision_event_id == decision_event(ruling(Decision.CONFIRMED_FAKE, "e" * 64)).id
    assert found.answers_event_id == "flag-123"
    assert found.same_content is False
    assert found.frame_share == 1.0 and found.face_share >= 0.3
    assert found.frame_distance_min == 0 and found.face_distance_median is not None
    assert verdict.reason_detail is not None and banked.entry_id in verdict.reason_detail


def test_the_detector_matches_against_the_bank_it_was_given_even_one_empty_at_first(
    synthetic: SyntheticVideos, whole_hashes: VideoHashes
) -> None:
    """The service's bank starts empty and is filled from the bank topic afterwards."""
    bank = Bank()
    detector = screening(0.1, bank)
    bank.add(entry(Decision.CONFIRMED_FAKE, whole_hashes))
    verdict = detector.screen(synthetic.moving_face)
    detector.close()
    assert detector.known_fakes is bank
    assert verdict.reason is Reason.MATCHES_CONFIRMED_FAKE


def test_a_re_encoded_copy_of_a_confirmed_fake_matches_it(
    synthetic: SyntheticVideos, whole_hashes: VideoHashes, tmp_path: Path
) -> None:
    bank = Bank()
    bank.add(entry(Decision.CONFIRMED_FAKE, whole_hashes))
    copy = reencoded(synthetic.moving_face, tmp_path / "copy.mp4", crf=35)
    detector = screening(0.1, bank)
    verdict = detector.screen(copy)
    detector.close()
    assert verdict.reason is Reason.MATCHES_CONFIRMED_FAKE
    assert verdict.known_fake is not None and verdict.known_fake.frame_distance_median is not None
    assert verdict.known_fake.frame_distance_median > 0  # near, not equal


def test_the_action_on_a_confirmed_fake_comes_from_the_policy(
    synthetic: SyntheticVideos, whole_hashes: VideoHashes
) -> None:
    bank = Bank()
    bank.add(entry(Decision.CONFIRMED_FAKE, whole_hashes))
    detector = screening(0.1, bank, actions=ActionPolicy(known_fake=Action.REVIEW))
    verdict = detector.screen(synthetic.moving_face)
    detector.close()
    assert (verdict.action, verdict.action_signal) == (Action.REVIEW, Signal.KNOWN_FAKES)


def test_another_video_does_not_match_the_entry(
    synthetic: SyntheticVideos, whole_hashes: VideoHashes
) -> None:
    bank = Bank()
    bank.add(entry(Decision.CONFIRMED_FAKE, whole_hashes))
    detector = screening(0.1, bank)
    verdict = detector.screen(synthetic.two_faces)
    detector.close()
    assert (verdict.outcome, verdict.known_fake) == (Outcome.LIKELY_REAL, None)
    known = verdict.signal(Signal.KNOWN_FAKES)
    assert known is not None and known.outcome is None
    assert known.summary == "no match among 1 bank entries"


def test_a_ruling_on_these_very_bytes_applies_even_when_no_face_can_be_matched(
    faking: Detector, synthetic: SyntheticVideos
) -> None:
    screened = faking.screen_timed(synthetic.no_face)
    assert screened.hashes is not None and screened.hashes.faces == ()
    bank = Bank()
    bank.add(entry(Decision.CONFIRMED_FAKE, screened.hashes, screened.verdict.content_sha256))
    detector = screening(0.1, bank)
    verdict = detector.screen(synthetic.no_face)
    detector.close()
    assert (verdict.outcome, verdict.reason) == (
        Outcome.SUSPECTED_DEEPFAKE,
        Reason.MATCHES_CONFIRMED_FAKE,
    )
    assert verdict.known_fake is not None and verdict.known_fake.same_content
    model = verdict.signal(Signal.MODEL)
    assert model is not None and model.reason is Reason.NO_FACE_DETECTED


# ------------------------------------------------------------------ allow-list


@pytest.mark.parametrize("decision", [Decision.FALSE_POSITIVE, Decision.CONFIRMED_REAL])
def test_an_allow_listed_upload_silences_the_models_flag_and_says_so(
    synthetic: SyntheticVideos, whole_hashes: VideoHashes, decision: Decision
) -> None:
    bank = Bank()
    bank.add(entry(decision, whole_hashes))
    detector = screening(0.99, bank)  # the model would block it
    verdict = detector.screen(synthetic.moving_face)
    detector.close()
    assert (verdict.outcome, verdict.reason, verdict.action, verdict.action_signal) == (
        Outcome.LIKELY_REAL,
        Reason.ALLOW_LISTED,
        Action.NONE,
        None,
    )
    model = verdict.signal(Signal.MODEL)
    assert model is not None
    assert (model.outcome, model.action, model.suppressed) == (
        Outcome.SUSPECTED_DEEPFAKE,
        Action.BLOCK,
        True,
    )
    assert verdict.score == pytest.approx(0.99)  # the model's evidence stays
    assert verdict.known_fake is not None and verdict.known_fake.decision == decision.value


def test_a_confirmed_fake_wins_over_an_allow_list_entry_both_matching(
    synthetic: SyntheticVideos, whole_hashes: VideoHashes
) -> None:
    bank = Bank()
    bank.add(entry(Decision.FALSE_POSITIVE, whole_hashes, "a" * 64))
    bank.add(entry(Decision.CONFIRMED_FAKE, whole_hashes, "f" * 64))
    detector = screening(0.1, bank)
    verdict = detector.screen(synthetic.moving_face)
    detector.close()
    assert verdict.reason is Reason.MATCHES_CONFIRMED_FAKE
    assert verdict.known_fake is not None and verdict.known_fake.entry_id == "f" * 64


def credentials_label() -> SignalResult:
    return SignalResult(
        signal=Signal.CONTENT_CREDENTIALS,
        outcome=Outcome.DECLARED_SYNTHETIC,
        reason=Reason.DECLARED_AI_GENERATED,
        action=Action.LABEL,
        summary="valid credentials declaring ai_generated",
    )


def model_flag() -> SignalResult:
    return SignalResult(
        signal=Signal.MODEL,
        outcome=Outcome.SUSPECTED_DEEPFAKE,
        action=Action.BLOCK,
        summary="face score 0.97 >= block threshold 0.95",
    )


def cached(*signals: SignalResult) -> ScreeningVerdict:
    """A verdict as the cache holds it, screened when the bank did not know the content."""
    acting = [s for s in signals if s.action is not Action.NONE]
    headline = max(acting, key=lambda s: severity(s.action))
    return make_verdict(
        signals=list(signals),
        outcome=headline.outcome,
        reason=headline.reason,
        action=headline.action,
        action_signal=headline.signal,
        reason_detail="screened",
    )


def test_an_allow_list_entry_never_silences_the_credentials(whole_hashes: VideoHashes) -> None:
    bank = Bank()
    stale = cached(credentials_label(), model_flag())
    bank.add(entry(Decision.CONFIRMED_REAL, whole_hashes, stale.content_sha256))
    fresh = refresh_known_fakes(stale, whole_hashes, bank, ActionPolicy())
    assert (fresh.action, fresh.action_signal) == (Action.LABEL, Signal.CONTENT_CREDENTIALS)
    model = fresh.signal(Signal.MODEL)
    assert model is not None and model.suppressed
    credentials = fresh.signal(Signal.CONTENT_CREDENTIALS)
    assert credentials is not None and not credentials.suppressed


# ------------------------------------------------------------------ cached verdicts


def test_a_cached_verdict_is_brought_up_to_date_with_a_ruling_made_since(
    whole_hashes: VideoHashes,
) -> None:
    likely_real = make_verdict(
        signals=[SignalResult(signal=Signal.MODEL, outcome=Outcome.LIKELY_REAL, summary="low")],
        outcome=Outcome.LIKELY_REAL,
        action=Action.NONE,
        score=0.1,
        reason_detail="face score 0.1",
    )
    bank = Bank()
    looked_up = refresh_known_fakes(likely_real, whole_hashes, bank, ActionPolicy())
    assert looked_up.outcome is Outcome.LIKELY_REAL and looked_up.known_fake is None
    assert refresh_known_fakes(looked_up, whole_hashes, bank, ActionPolicy()) is looked_up
    bank.add(entry(Decision.CONFIRMED_FAKE, whole_hashes))
    fresh = refresh_known_fakes(likely_real, whole_hashes, bank, ActionPolicy())
    assert (fresh.outcome, fresh.reason, fresh.action, fresh.action_signal) == (
        Outcome.SUSPECTED_DEEPFAKE,
        Reason.MATCHES_CONFIRMED_FAKE,
        Action.BLOCK,
        Signal.KNOWN_FAKES,
    )
    bank.remove("e" * 64)  # retracted
    again = refresh_known_fakes(fresh, whole_hashes, bank, ActionPolicy())
    assert (again.outcome, again.action, again.known_fake) == (
        Outcome.LIKELY_REAL,
        Action.NONE,
        None,
    )
    assert again.reason_detail == "low"  # the model's own summary: its detail was not kept


def test_a_cached_verdict_without_hashes_still_meets_a_ruling_on_its_bytes(
    whole_hashes: VideoHashes,
) -> None:
    stale = cached(model_flag())
    bank = Bank()
    bank.add(entry(Decision.FALSE_POSITIVE, whole_hashes, stale.content_sha256))
    fresh = refresh_known_fakes(stale, None, bank, ActionPolicy())
    assert (fresh.outcome, fresh.reason, fresh.action) == (
        Outcome.LIKELY_REAL,
        Reason.ALLOW_LISTED,
        Action.NONE,
    )
    assert fresh.known_fake is not None and fresh.known_fake.same_content


class CountingBank(Bank):
    """A bank that counts the lookups it answers."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def match(self, query: VideoHashes) -> list[BankMatch]:
        self.lookups += 1
        return super().match(query)


def test_a_burst_of_hits_looks_the_bank_up_once_until_the_bank_changes(
    whole_hashes: VideoHashes,
) -> None:
    """A lookup in a large bank costs milliseconds; a ruling is still seen at the next hit."""
    stale, bank, refreshed = cached(model_flag()), CountingBank(), RefreshedVerdicts()
    first = refreshed.refresh(stale, whole_hashes, bank, ActionPolicy())
    for _ in range(5):
        assert refreshed.refresh(stale, whole_hashes, bank, ActionPolicy()) is first
    assert bank.lookups == 1
    bank.add(entry(Decision.FALSE_POSITIVE, whole_hashes, "f" * 64))
    allowed = refreshed.refresh(stale, whole_hashes, bank, ActionPolicy())
    assert bank.lookups == 2 and allowed.reason is Reason.ALLOW_LISTED
    bank.remove("f" * 64)
    again = refreshed.refresh(stale, whole_hashes, bank, ActionPolicy())
    assert bank.lookups == 3 and again.reason is not Reason.ALLOW_LISTED
    other = refreshed.refresh(stale, None, bank, ActionPolicy())  # other hashes: looked up
    assert other.known_fake is None


# ------------------------------------------------------------------ the contract holds it


def test_a_verdict_cannot_suppress_the_model_without_an_allow_list_entry() -> None:
    suppressed = model_flag().model_copy(update={"suppressed": True})
    with pytest.raises(ValueError, match="suppressed exactly when allow-listed"):
        ScreeningVerdict.model_validate(
            {**make_verdict().model_dump(), "signals": [suppressed.model_dump()]}
        )


def test_only_the_model_can_be_suppressed() -> None:
    with pytest.raises(ValueError, match="only the model"):
        SignalResult(**{**credentials_label().model_dump(), "suppressed": True})


def test_only_the_bank_gives_its_reasons() -> None:
    with pytest.raises(ValueError, match="only known_fakes"):
        SignalResult(
            signal=Signal.MODEL,
            outcome=Outcome.SUSPECTED_DEEPFAKE,
            reason=Reason.MATCHES_CONFIRMED_FAKE,
            summary="no",
        )
