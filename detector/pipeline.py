"""Video file → `ScreeningVerdict`: probe, extract face clips, score, aggregate.

`Detector` is what `scan` and the service call. It is safe to call from many
threads at once: extraction runs per thread (or in isolated worker processes,
for the service), and the scorer (usually a `BatchingScorer`) batches clips
across the threads' videos.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from detector.aggregation import decide, rounded, track_scores, video_score
from detector.artifact import LoadedModel, sha256_file
from detector.batching import BatchingScorer
from detector.config import BatchingConfig, DetectorConfig
from detector.extraction import Extraction, Extractor, InProcessExtractor, StageTimes
from detector.faces import FaceDetector
from detector.probe import Unreadable
from detector.scoring import ClipScorer, Precision, TorchScorer
from schemas.verdict import (
    Action,
    ClipScore,
    FaceBox,
    Outcome,
    Reason,
    ScreeningVerdict,
)


@dataclass(frozen=True)
class Screening:
    """A verdict and where the time went (decode, faces, model)."""

    verdict: ScreeningVerdict
    times: StageTimes
    model_s: float = 0.0
    clips: int = 0
    extraction: Extraction | None = field(default=None, repr=False)


class Detector:
    def __init__(
        self,
        scorer: ClipScorer,
        config: DetectorConfig | None = None,
        face_detector: Callable[[], FaceDetector] | None = None,
        extractor: Extractor | None = None,
    ) -> None:
        """`extractor` defaults to extraction in this process with `config`."""
        self.scorer = scorer
        self.extractor = extractor or InProcessExtractor(config or DetectorConfig(), face_detector)

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
            video_id=video_id or path.name,
            uri=uri or path.resolve().as_uri(),
            content_sha256=content_sha256 or sha256_file(path),
        )
        metadata = self.scorer.metadata
        try:
            extraction = self.extractor.extract(
                path, clip_length=metadata.clip_length, input_size=metadata.input_size
            )
        except Unreadable as refused:
            verdict = self._verdict(
                base, started, Outcome.UNREADABLE, refused.reason, refused.detail
            )
            return Screening(verdict, StageTimes())

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
            verdict = self._verdict(
                base, started, Outcome.NO_FACE, reason, detail, extraction=extraction
            )
            return Screening(verdict, extraction.times, extraction=extraction)

        tick = time.monotonic()
        scores = self.scorer.score(np.stack([clip.pixels for clip in extraction.clips]))
        model_s = time.monotonic() - tick
        fps = extraction.probe.fps
        timeline = [
            ClipScore(
                start_s=round(clip.start_frame / fps, 3),
                end_s=round(clip.end_frame / fps, 3),
                start_frame=clip.start_frame,
                end_frame=clip.end_frame,
                track_id=clip.track_id,
                score=rounded(score),
                box=FaceBox(x=clip.box[0], y=clip.box[1], width=clip.box[2], height=clip.box[3]),
                face_coverage=round(clip.coverage, 3),
            )
            for clip, score in zip(extraction.clips, scores, strict=True)
        ]
        score = video_score(track_scores((c.track_id, c.score) for c in timeline))
        outcome, action = decide(score, metadata.thresholds)
        verdict = self._verdict(
            base,
            started,
            outcome,
            extraction=extraction,
            score=rounded(score),
            action=action,
            timeline=timeline,
        )
        return Screening(verdict, extraction.times, model_s, len(timeline), extraction)

    def close(self) -> None:
        """Score what is queued, then stop the decoders."""
        self.scorer.close()
        self.extractor.close()

    def _verdict(
        self,
        base: _Base,
        started: float,
        outcome: Outcome,
        reason: Reason | None = None,
        detail: str | None = None,
        *,
        extraction: Extraction | None = None,
        score: float | None = None,
        action: Action = Action.NONE,
        timeline: list[ClipScore] | None = None,
    ) -> ScreeningVerdict:
        return ScreeningVerdict(
            video_id=base.video_id,
            uri=base.uri,
            content_sha256=base.content_sha256,
            outcome=outcome,
            reason=reason,
            reason_detail=detail,
            score=score,
            action=action,
            thresholds=self.scorer.metadata.thresholds,
            model=self.scorer.info,
            timeline=timeline or [],
            faces_tracked=extraction.tracks if extraction else 0,
            frames_analyzed=extraction.frames_analyzed if extraction else 0,
            video=extraction.probe.properties() if extraction else None,
            warnings=extraction.warnings if extraction else [],
            screened_at=datetime.now(UTC),
            processing_ms=round((time.monotonic() - started) * 1000),
        )


@dataclass(frozen=True)
class _Base:
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
    extractor: Extractor | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Detector:
    """A loaded model behind a batching scorer (clips of concurrent videos scored together).

    `scan`, `model evaluate`/`calibrate` and the service all screen through this.
    """
    scorer = BatchingScorer(
        TorchScorer(model, max_batch=batch_size, precision=precision),
        max_batch=batch_size,
        max_wait_s=batch_wait_s,
        on_batch=on_batch,
    )
    return Detector(scorer, config, extractor=extractor)
