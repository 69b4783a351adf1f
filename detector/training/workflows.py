"""The lifecycle's commands as plain functions: train, evaluate, calibrate a model.

`deepscreen model train|evaluate|calibrate` parse their options, call one of
these, and print what it returns; the same steps are thus testable without the
command line, and a notebook or a pipeline can run them too. Each function
raises `WorkflowError` for a problem of its inputs (no data, an unusable model
file), which the CLI turns into a usage error with that message.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import warnings
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from detector.artifact import ArtifactError, LoadedModel, load, sha256_file
from detector.config import DetectorConfig, IsolationConfig
from detector.faces import MediaPipeFaceDetector
from detector.pipeline import build_detector
from detector.scoring import TorchScorer
from detector.training.calibration import (
    FprResolutionWarning,
    calibrate_artifact,
    set_thresholds,
)
from detector.training.data import (
    REAL,
    CacheManifest,
    ClipIndex,
    ExtractionCounts,
    build_video_cache,
    is_clip_cache,
    labelled_videos,
    split_by_group,
    video_clips,
)
from detector.training.evaluation import (
    EvaluationReport,
    ScoredVideo,
    evaluation_report,
    plot_roc,
    score_videos,
)
from detector.training.stills import build_still_cache, select_images
from detector.training.trainer import Progress, TrainConfig, TrainResult, train
from schemas.model import ModelMetadata

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
CALIBRATION_BATCH = 16  # clips scored at once while collecting calibration logits


class WorkflowError(ValueError):
    """The inputs cannot be used (no data, an unusable model): a usage error, not a bug."""


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainingData:
    """The cached clips a run trains on, and what they were made from."""

    index: ClipIndex
    manifest: CacheManifest
    description: str  # one line for people and for the artifact's metadata


def prepare_training_data(
    data: Path,
    cache_dir: Path,
    *,
    self_blend: bool,
    input_size: int,
    limit: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    config: DetectorConfig | None = None,
    on_cached: Callable[[int, int], None] = lambda done, total: None,
) -> TrainingData:
    """Cut (or reuse) the training clips of `data` into `cache_dir`.

    With `self_blend`, `data` holds real face stills (a seeded `limit` of them),
    each giving a real and a self-blended clip, made by `workers` processes
    (default: one per CPU); otherwise it holds labelled videos. `on_cached`
    reports stills done of all.
    """
    config = config or DetectorConfig()
    if self_blend:
        images = select_images(data, limit, seed)
        if not images:
            raise WorkflowError(f"no images under {data}")
        manifest = build_still_cache(
            images, cache_dir, new_faces=functools.partial(MediaPipeFaceDetector, config.faces),
            config=config, input_size=input_size, seed=seed,
            workers=workers or os.cpu_count() or 1, progress=on_cached,
        )  # fmt: skip
        description = f"{manifest.pairs} real stills + their self-blended pseudo-fakes"
    else:
        videos = labelled_videos(data)
        if not videos:
            raise WorkflowError(f"no labelled videos under {data} (real/ + fake/, or FF++ layout)")
        faces = MediaPipeFaceDetector(config.faces)
        try:
            manifest = build_video_cache(
                videos, data, cache_dir, faces=faces, config=config, input_size=input_size
            )
        finally:
            faces.close()
        description = f"{len(videos)} labelled videos from {data.name}"
    try:
        index = ClipIndex.open(cache_dir)
    except ValueError as error:
        raise WorkflowError(f"{error}: no face clip could be cut from {data}") from error
    return TrainingData(index, manifest, description)


def initialisation_of(config: TrainConfig) -> str:
    """Where the weights started from, for the artifact's `training.source`."""
    if config.backbone_weights is not None:
        weights = Path(config.backbone_weights)
        started = (
            f"{config.backbone} initialised from ImageNet weights {weights.name} "
            f"(sha256 {sha256_file(weights)})"
        )
    else:
        started = f"{config.backbone} trained from scratch"
    if config.teacher is not None:
        teacher = Path(config.teacher)
        started += (
            f", distilled from {teacher.name} (sha256 {sha256_file(teacher)}, "
            f"weight {config.distil_weight})"
        )
    return started


def train_model(
    prepared: TrainingData,
    data: Path,
    out: Path,
    config: TrainConfig,
    *,
    checkpoint_dir: Path,
    resume: Path | None = None,
    command: str,
    code_version: str,
    on_progress: Callable[[Progress], None] = lambda progress: None,
) -> TrainResult:
    """Train on the prepared clips and write the artifact; its metadata says how it was made."""
    licence_note = " (UTKFace: non-commercial research use only)"
    summary = {
        "command": command,
        "data": prepared.description + (licence_note if "utkface" in str(data).lower() else ""),
        "data_sha256": prepared.manifest.data_sha256,
        "licence": "inherits the training data's terms",
        "code_version": code_version,
        "source": initialisation_of(config),
    }
    return train(
        prepared.index, out, config, checkpoint_dir=checkpoint_dir, resume=resume,
        summary=summary, on_progress=on_progress,
    )  # fmt: skip


# --------------------------------------------------------------------------- screening


def load_model(path: Path, device: str) -> LoadedModel:
    """`artifact.load`, with a missing or unusable file as a `WorkflowError`."""
    try:
        return load(path, device)
    except (ArtifactError, RuntimeError, OSError) as error:
        raise WorkflowError(f"cannot use {path}: {error}") from error


def screen_labelled_videos(
    model: LoadedModel,
    data: Path,
    *,
    workers: int,
    labels: Collection[int] | None = None,
    on_done: Callable[[ScoredVideo], None] = lambda video: None,
) -> list[ScoredVideo]:
    """The labelled videos under `data` (only `labels`, if given) through the `scan` pipeline."""
    if not any(labels is None or label in labels for _, label in labelled_videos(data)):
        return []
    detector = build_detector(model)
    try:
        return score_videos(detector, data, workers=workers, labels=labels, on_done=on_done)
    finally:
        detector.close()


def evaluate_model(
    model: LoadedModel,
    data: Path,
    report: Path,
    *,
    workers: int,
    on_done: Callable[[ScoredVideo], None] = lambda video: None,
) -> EvaluationReport:
    """Score `data/real` and `data/fake`; write the JSON report and, with both classes, the ROC."""
    scored = screen_labelled_videos(model, data, workers=workers, on_done=on_done)
    if not scored:
        raise WorkflowError(f"no videos under {data}/real or {data}/fake")
    document = evaluation_report(scored, model.metadata.thresholds.review,
                                 model=model.info.model_dump(mode="json"))  # fmt: skip
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(document.model_dump_json(indent=2) + "\n")
    ranked = [v for v in scored if v.score is not None]
    if len({v.label for v in ranked}) == 2:
        plot_roc(
            [v.label for v in ranked], [float(v.score or 0) for v in ranked],
            report.with_suffix(".png"), f"{model.info.name} on {data.name}",
            clip_labels=[v.label for v in ranked for _ in v.clip_scores],
            clip_scores=[s for v in ranked for s in v.clip_scores],
        )  # fmt: skip
    return document


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class CalibrationResult:
    metadata: ModelMetadata
    counts: dict[str, int]  # what the fit used: clips, or videos scored and not scored
    warnings: list[str] = field(default_factory=list)  # targets the data cannot resolve

    def summary(self, out: Path) -> str:
        """One JSON line: the new temperature and thresholds, and what they were fitted on."""
        calibration = {
            "out": str(out),
            "temperature": self.metadata.calibration.temperature,
            "thresholds": self.metadata.thresholds.model_dump(),
        }
        return json.dumps(calibration | self.counts)


@contextlib.contextmanager
def _resolution_warnings(into: list[str]) -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FprResolutionWarning)
        yield
    into += [str(w.message) for w in caught if issubclass(w.category, FprResolutionWarning)]


def calibration_logits(
    model: LoadedModel, data: Path, *, validation_share: float, config: DetectorConfig | None = None
) -> tuple[FloatArray, IntArray, str]:
    """Uncalibrated clip logits and labels, and where they came from.

    From a training clip cache: its held-out split (by source, with the seed
    the model was trained with). From labelled videos: every face clip.
    """
    scorer = TorchScorer(model)
    logits: list[float] = []
    labels: list[int] = []
    if is_clip_cache(data):
        index = ClipIndex.open(data)
        seed = (model.metadata.training.seed if model.metadata.training else 0) or 0
        _, held_out = split_by_group(index.groups, validation_share, seed)
        for start in range(0, len(held_out), CALIBRATION_BATCH):
            rows = held_out[start : start + CALIBRATION_BATCH]
            logits += scorer.logits(np.stack([index.pixels(int(i)) for i in rows])).tolist()
            labels += index.labels[rows].tolist()
        fitted_on = f"validation split ({validation_share:.0%}, by source) of {data.name}"
    else:
        config = config or DetectorConfig()
        faces = MediaPipeFaceDetector(config.faces)
        counts = ExtractionCounts()
        try:
            for clip in video_clips(labelled_videos(data), data, faces=faces, config=config,
                                    input_size=model.metadata.input_size,
                                    counts=counts):  # fmt: skip
                logits += scorer.logits(clip.pixels[None]).tolist()
                labels.append(clip.label)
        finally:
            faces.close()
        fitted_on = f"clips of the videos in {data.name}"
        if counts.unreadable:
            fitted_on += f", {len(counts.unreadable)} unreadable videos left out"
    return np.array(logits, dtype=np.float64), np.array(labels, dtype=np.int64), fitted_on


def calibrate_model(
    model_path: Path,
    data: Path,
    out: Path,
    *,
    review_fpr: float,
    block_fpr: float,
    validation_share: float = 0.1,
    device: str = "auto",
) -> CalibrationResult:
    """Temperature and review/block thresholds from held-out clips; written into `out`."""
    model = load_model(model_path, device)
    logits, labels, fitted_on = calibration_logits(model, data, validation_share=validation_share)
    if len(set(labels.tolist())) < 2:
        raise WorkflowError("calibration needs real and fake examples")
    caught: list[str] = []
    with _resolution_warnings(caught):
        metadata = calibrate_artifact(
            model_path, out, logits, labels, review_fpr=review_fpr, block_fpr=block_fpr,
            fitted_on=f"{fitted_on} ({len(labels)} clips)",
        )  # fmt: skip
    return CalibrationResult(metadata, {"clips": len(labels)}, caught)


def calibrate_thresholds_on_real_videos(
    model_path: Path,
    data: Path,
    out: Path,
    *,
    review_fpr: float,
    block_fpr: float,
    device: str = "auto",
    workers: int = IsolationConfig.workers,
    on_done: Callable[[ScoredVideo], None] = lambda video: None,
) -> CalibrationResult:
    """Keep the temperature; review/block at target rates of the video scores of `data/real`."""
    if is_clip_cache(data):
        raise WorkflowError("--thresholds-only needs real videos (DIR/real/), not a clip cache")
    model = load_model(model_path, device)
    scored = screen_labelled_videos(model, data, workers=workers, labels={REAL}, on_done=on_done)
    if not scored:
        raise WorkflowError(f"no real videos under {data}/real or {data}/original_sequences")
    scores = [video.score for video in scored if video.score is not None]
    if not scores:
        raise WorkflowError(f"none of the {len(scored)} real videos had a face to score")
    caught: list[str] = []
    with _resolution_warnings(caught):
        metadata = set_thresholds(
            model_path, out, scores, review_fpr=review_fpr, block_fpr=block_fpr,
            fitted_on=f"video scores of the real videos in {data.name} ({len(scores)} scored)",
        )  # fmt: skip
    counts = {"videos": len(scores), "not_scored": len(scored) - len(scores)}
    return CalibrationResult(metadata, counts, caught)
