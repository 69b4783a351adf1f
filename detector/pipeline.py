"""Media file → `ScreeningVerdict`: read credentials, extract face clips, score, combine.

`Detector` is what `scan` and the service call. It is safe to call from many
threads at once: credentials reading and extraction run per thread (or in
isolated worker processes, for the service), and the scorer (usually a
`BatchingScorer`) batches clips across the threads' uploads. Each signal's
finding is kept in the verdict; the strictest sets its action.

Extraction also hashes the frames it decodes for the windows, and their faces
(`detector.hashing`), so the known-fakes signal costs no second decode; the
hashes are looked up in the bank (`known_fakes`, an in-memory `Bank` unless
another is given) and returned beside the verdict (`Screening.hashes`) for the
service to cache: a moderator's later ruling on the content is made from them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from detector.aggregation import rounded, track_scores, video_score
from detector.artifact import LoadedModel, sha256_file
from detector.backends import build_cpu_scorer
from detector.bank import Bank
from detector.batching import BatchingScorer
from detector.config import BatchingConfig, CpuInferenceConfig, DetectorConfig
from detector.credentials import CredentialsReader, InProcessCredentialsReader
from detector.derived import CalibrationSource, DerivedCache
from detector.extraction import Extraction, StageTimes
from detector.faces import FaceDetector
from detector.hashing import VideoHashes
from detector.image import ImageProbe
from detector.known_fakes import (
    KnownFakes,
    RefreshedVerdicts,
    combined,
    evidence,
    known_fakes_result,
    look_up,
)
from detector.probe import Probe, Unreadable
from detector.routing import Extractor, InProcessExtractor
from detector.scoring import ClipScorer, Precision, TorchScorer
from detector.signals import credentials_result, model_result
from detector.sniff import sniff
from schemas.provenance import Provenance
from schemas.verdict import (
    ClipScore,
    FaceBox,
    KnownFakeMatch,
    Outcome,
    Reason,
    ScreeningVerdict,
    SignalResult,
    deciding_signal,
    headline_signal,
)


@dataclass(frozen=True)
class Screening:
    """A verdict, the content's perceptual hashes, and where the time went (decode, faces, model).

    `hashes` is None when nothing was decoded (an unreadable upload) or hashing is off.
    """

    verdict: ScreeningVerdict
    times: StageTimes
    model_s: float = 0.0
    clips: int = 0
    extraction: Extraction | None = field(default=None, repr=False)
    hashes: VideoHashes | None = field(default=None, repr=False)


class Detector:
    def __init__(
        self,
        scorer: ClipScorer,
        config: DetectorConfig | None = None,
        face_detector: Callable[[], FaceDetector] | None = None,
        extractor: Extractor | None = None,
        credentials: CredentialsReader | None = None,
        known_fakes: KnownFakes | None = None,
    ) -> None:
        """`extractor` and `credentials` default to this process, with `config`;
        `known_fakes` to an empty in-memory bank with the configured match rule."""
        self.scorer = scorer
        self.config = config or DetectorConfig()
        # `is None`, not `or`: an empty bank is falsy, and the service's starts empty.
        self.known_fakes: KnownFakes = (
            known_fakes if known_fakes is not None else Bank(self.config.known_fakes.rule)
        )
        self._refreshed = RefreshedVerdicts()
        self.extractor = extractor or InProcessExtractor(self.config, face_detector)
        self.credentials = credentials or InProcessCredentialsReader(
            self.config.credentials, self.config.limits.max_bytes
        )

    def screen(
        self,
        path: Path,
        *,
        video_id: str | None = None,
        uri: str | None = None,
        content_sha256: str | None = None,
    ) -> ScreeningVerdict:
        return self.screen_timed(
            path, video_id=video_id, uri=uri, content_sha256=content_sha256
        ).verdict

    def screen_timed(
        self,
        path: Path,
        *,
        video_id: str | None = None,
        uri: str | None = None,
        content_sha256: str | None = None,
    ) -> Screening:
        started = time.monotonic()
        base = _Base(
            path=path,
            video_id=video_id or path.name,
            uri=uri or path.resolve().as_uri(),
            content_sha256=content_sha256 or sha256_file(path),
        )
        metadata = self.scorer.metadata
        provenance = (
            self.credentials.read_credentials(path) if self.config.credentials.enabled else None
        )
        try:
            extraction = self.extractor.extract(
                path, clip_length=metadata.clip_length, input_size=metadata.input_size
            )
        except Unreadable as refused:
            model = self._model_refused(Outcome.UNREADABLE, refused.reason)
            verdict = self._verdict(base, started, model, provenance, detail=refused.detail)
            return Screening(verdict, StageTimes())
        hashes = extraction.hashes

        if not extraction.clips:
            reason = (
                Reason.NO_FACE_DETECTED
                if extraction.faces_detected == 0
                else Reason.NO_STABLE_FACE_TRACK
            )
            detail = (
                f"no face in {extraction.frames_analyzed} sampled frames"
                if reason is Reason.NO_FACE_DETECTED
                else f"{extraction.faces_detected} detections in "
                f"{extraction.frames_analyzed} frames, none held for a clip"
            )
            model = self._model_refused(Outcome.NO_FACE, reason)
            verdict = self._verdict(
                base, started, model, provenance, detail=detail, extraction=extraction
            )
            return Screening(verdict, extraction.times, extraction=extraction, hashes=hashes)

        tick = time.monotonic()
        scores = self.scorer.score(np.stack([clip.pixels for clip in extraction.clips]))
        model_s = time.monotonic() - tick
        # A still has no time axis: its clips sit at 0 s.
        fps = extraction.probe.fps if isinstance(extraction.probe, Probe) else None
        timeline = [
            ClipScore(
                start_s=round(clip.start_frame / fps, 3) if fps else 0.0,
                end_s=round(clip.end_frame / fps, 3) if fps else 0.0,
                start_frame=clip.start_frame,
                end_frame=clip.end_frame,
                track_id=clip.track_id,
                score=rounded(score),
                box=FaceBox(x=clip.box[0], y=clip.box[1], width=clip.box[2], height=clip.box[3]),
                face_coverage=round(clip.coverage, 3),
            )
            for clip, score in zip(extraction.clips, scores, strict=True)
        ]
        score = rounded(video_score(track_scores((c.track_id, c.score) for c in timeline)))
        model = model_result(score, metadata.thresholds, self.config.actions)
        verdict = self._verdict(
            base,
            started,
            model,
            provenance,
            extraction=extraction,
            score=score,
            timeline=timeline,
        )
        return Screening(verdict, extraction.times, model_s, len(timeline), extraction, hashes)

    def refresh(self, verdict: ScreeningVerdict, hashes: VideoHashes | None) -> ScreeningVerdict:
        """A verdict (from the cache) with its known-fakes finding redone against the bank now."""
        if not self.config.known_fakes.enabled:
            return verdict
        return self._refreshed.refresh(verdict, hashes, self.known_fakes, self.config.actions)

    def hash_whole(self, path: Path) -> VideoHashes:
        """Hashes of every frame of a video (or of a still), for a bank entry; `Unreadable`.

        A bank entry should hold the whole video, not only the sampled windows:
        a trimmed copy samples other moments. Decoded like any upload (in the
        isolated workers, for the service), within the same limits.
        """
        return self.extractor.hash_whole(path, clip_length=self.scorer.metadata.clip_length)

    def close(self) -> None:
        """Score what is queued, then stop the decoders."""
        self.scorer.close()
        self.extractor.close()

    def _model_refused(self, outcome: Outcome, reason: Reason) -> SignalResult:
        return model_result(
            None, self.scorer.metadata.thresholds, self.config.actions, refused=(outcome, reason)
        )

    def _verdict(
        self,
        base: _Base,
        started: float,
        model: SignalResult,
        provenance: Provenance | None,
        *,
        detail: str | None = None,
        extraction: Extraction | None = None,
        score: float | None = None,
        timeline: list[ClipScore] | None = None,
    ) -> ScreeningVerdict:
        credentials = (
            credentials_result(provenance, self.config.actions) if provenance is not None else None
        )
        known, found = self._known_fakes(base, extraction)
        signals = combined(credentials, known, model)
        deciding = deciding_signal(signals)
        headline = headline_signal(signals)
        model = next(s for s in signals if s.signal is model.signal)
        probe = extraction.probe if extraction else None
        is_image = isinstance(probe, ImageProbe) or (probe is None and _sniffed_image(base.path))
        return ScreeningVerdict(
            video_id=base.video_id,
            uri=base.uri,
            content_sha256=base.content_sha256,
            outcome=headline.outcome or Outcome.UNREADABLE,  # never None: see signals
            reason=headline.reason,
            reason_detail=detail if headline is model else headline.summary,
            score=score,
            action=headline.action,
            action_signal=deciding.signal if deciding else None,
            signals=signals,
            provenance=provenance,
            known_fake=found,
            thresholds=self.scorer.metadata.thresholds,
            model=self.scorer.info,
            timeline=timeline or [],
            faces_tracked=extraction.tracks if extraction else 0,
            frames_analyzed=extraction.frames_analyzed if extraction else 0,
            media="image" if is_image else "video",
            video=probe.properties() if isinstance(probe, Probe) else None,
            image=probe.properties() if isinstance(probe, ImageProbe) else None,
            warnings=extraction.warnings if extraction else [],
            screened_at=datetime.now(UTC),
            processing_ms=round((time.monotonic() - started) * 1000),
        )

    def _known_fakes(
        self, base: _Base, extraction: Extraction | None
    ) -> tuple[SignalResult | None, KnownFakeMatch | None]:
        """The bank's finding on the upload, and its evidence; (None, None) when off."""
        if not self.config.known_fakes.enabled:
            return None, None
        hashes = extraction.hashes if extraction else None
        finding = look_up(self.known_fakes, hashes, base.content_sha256)
        result = known_fakes_result(
            finding, self.config.actions, entries=len(self.known_fakes), hashed=hashes is not None
        )
        return result, evidence(finding) if finding else None


def _sniffed_image(path: Path) -> bool:
    try:
        return sniff(path).kind == "image"
    except OSError:
        return False


@dataclass(frozen=True)
class _Base:
    path: Path
    video_id: str
    uri: str
    content_sha256: str


def build_detector(
    model: LoadedModel,
    config: DetectorConfig | None = None,
    *,
    batch_size: int = BatchingConfig.batch_size,
    batch_wait_s: float = BatchingConfig.wait_s,
    precision: Precision = "auto",
    cpu: CpuInferenceConfig | None = None,
    calibration: CalibrationSource | None = None,
    extractor: Extractor | None = None,
    credentials: CredentialsReader | None = None,
    on_batch: Callable[[int], None] | None = None,
    known_fakes: KnownFakes | None = None,
) -> Detector:
    """A loaded model behind a batching scorer (clips of concurrent videos scored together).

    On a GPU the TorchScript module runs with `precision`; on the CPU, `cpu.backend`
    (`detector.backends`) runs the artifact or a form derived from it, kept under
    `cpu.derived_dir`; an int8 form not made yet is calibrated on `calibration`.
    `scan`, `model evaluate`/`calibrate` and the service all screen through this.
    """
    cpu = cpu or CpuInferenceConfig()
    inner: ClipScorer
    if model.device.type == "cpu":
        inner = build_cpu_scorer(
            model,
            cpu.backend,
            cache=DerivedCache(cpu.derived_dir),
            max_batch=min(batch_size, cpu.clips_per_run),
            calibration=calibration,
            self_calibration_clips=cpu.calibration_clips if cpu.self_calibrate else 0,
        )
    else:
        inner = TorchScorer(model, max_batch=batch_size, precision=precision)
    scorer = BatchingScorer(
        inner,
        max_batch=batch_size,
        max_wait_s=batch_wait_s,
        on_batch=on_batch,
    )
    return Detector(
        scorer, config, extractor=extractor, credentials=credentials, known_fakes=known_fakes
    )
