"""How well the detector separates real from fake videos, measured on labelled folders.

A model is only as useful as the evidence that it ranks fakes above real videos
on data like production's. This module computes that evidence with numpy alone
(ROC, AUC with a bootstrap interval, equal error rate, the confusion at the
operating threshold), renders the ROC curve, and turns a `real/` + `fake/`
folder into scored videos via the same `Detector` the service runs, so the
numbers describe the pipeline that ships (face tracking, aggregation,
calibration included), not the bare network.

Labels are 1 for fake (the positive class, `labels[1]` of the model) and 0 for
real; a score at or above the threshold is a positive (flagged) prediction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from detector.pipeline import Detector
from detector.training.data import labelled_videos

FloatArray = npt.NDArray[np.float64]
ArrayLike = Sequence[float] | Sequence[int] | npt.NDArray[Any]


# --------------------------------------------------------------------------- metrics


def _checked(labels: ArrayLike, scores: ArrayLike) -> tuple[npt.NDArray[np.int8], FloatArray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or len(y) != len(s):
        raise ValueError(
            f"labels and scores must be 1-D and equally long; got {y.shape}, {s.shape}"
        )
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y.astype(np.int8), s


def _both_classes(y: npt.NDArray[np.int8]) -> None:
    if y.all() or not y.any():
        raise ValueError("a ranking metric needs at least one real (0) and one fake (1) sample")


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(fpr, tpr, thresholds), one point per distinct score, thresholds descending.

    The first point is (0, 0) at threshold +inf (nothing flagged); the last is
    (1, 1) at the lowest score. Tied scores form one point, so the curve is a
    diagonal segment across a tie, which is what makes the trapezoid AUC equal
    the Mann-Whitney statistic.
    """
    y, s = _checked(labels, scores)
    _both_classes(y)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # end of each tie run
    tp = np.cumsum(y, dtype=np.float64)[last_of_run]
    fp = (last_of_run + 1) - tp
    tpr = np.r_[0.0, tp / tp[-1]]
    fpr = np.r_[0.0, fp / fp[-1]]
    thresholds = np.r_[np.inf, s[last_of_run]]
    return fpr, tpr, thresholds


def _auc_sorted_negatives(positives: FloatArray, negatives_sorted: FloatArray) -> float:
    """P(pos > neg) + 0.5 * P(pos == neg), by binary search in the sorted negatives."""
    below = np.searchsorted(negatives_sorted, positives, side="left")
    at_or_below = np.searchsorted(negatives_sorted, positives, side="right")
    wins = below.sum() + 0.5 * (at_or_below - below).sum()
    return float(wins) / (len(positives) * len(negatives_sorted))


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve: the chance a random fake outscores a random real video.

    Ties count one half (average ranks), so this equals U / (n_fake * n_real)
    for the Mann-Whitney U of the fakes, and the trapezoid area under `roc_curve`.
    """
    y, s = _checked(labels, scores)
    _both_classes(y)
    return _auc_sorted_negatives(s[y == 1], np.sort(s[y == 0]))


def bootstrap_auc_ci(
    labels: ArrayLike,
    scores: ArrayLike,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC.

    Fakes and reals are resampled separately (stratified), each with
    replacement to its own count, so every resample has both classes and the
    class balance of the test set is kept.
    """
    if n_boot < 1 or not 0.0 < level < 1.0:
        raise ValueError("n_boot must be >= 1 and level in (0, 1)")
    y, s = _checked(labels, scores)
    _both_classes(y)
    positives, negatives = s[y == 1], s[y == 0]
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_boot)
    for i in range(n_boot):
        pos = positives[rng.integers(0, len(positives), len(positives))]
        neg = np.sort(negatives[rng.integers(0, len(negatives), len(negatives))])
        aucs[i] = _auc_sorted_negatives(pos, neg)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(aucs, [tail, 1.0 - tail])
    return float(low), float(high)


def equal_error_rate(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """(EER, threshold) where the false-positive and false-negative rates meet.

    FPR - FNR rises from -1 to +1 along the ROC; between the two ROC points
    where it changes sign both rates are interpolated linearly, and so is the
    threshold (from the finite one alone when the crossing is next to +inf).
    """
    fpr, tpr, thresholds = roc_curve(labels, scores)
    gap = fpr - (1.0 - tpr)
    i = int(np.argmax(gap >= 0.0))  # first point at or past the crossing; gap[-1] == 1
    if gap[i] == 0.0:
        return float(fpr[i]), float(thresholds[i])
    t = -gap[i - 1] / (gap[i] - gap[i - 1])
    eer = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    if math.isinf(thresholds[i - 1]):
        threshold = thresholds[i]
    else:
        threshold = thresholds[i - 1] + t * (thresholds[i] - thresholds[i - 1])
    return float(eer), float(threshold)


def confusion_at(labels: ArrayLike, scores: ArrayLike, threshold: float) -> dict[str, float]:
    """Counts and rates when every score >= `threshold` is flagged as fake.

    A rate whose denominator is zero (precision with nothing flagged, recall
    without fakes, ...) is 0.0, the usual convention, rather than NaN, so
    the result stays valid JSON.
    """
    y, s = _checked(labels, scores)
    flagged = s >= threshold
    tp = int(np.sum(flagged & (y == 1)))
    fp = int(np.sum(flagged & (y == 0)))
    tn = int(np.sum(~flagged & (y == 0)))
    fn = int(np.sum(~flagged & (y == 1)))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": _ratio(tp + tn, len(y)),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "fpr": _ratio(fp, fp + tn),
    }


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / denominator if denominator else 0.0


# --------------------------------------------------------------------------- report


@dataclass
class ScoredVideo:
    """One labelled video as the detector saw it; `score` is None when it was not scored."""

    path: str
    label: int
    score: float | None
    outcome: str
    reason: str | None = None
    clip_scores: list[float] = field(default_factory=list)


class ClipLevel(BaseModel):
    """Every scored clip ranked with its video's label: the network's own separation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int
    auc: float | None
    auc_ci95: tuple[float, float] | None
    accuracy: float
    f1: float
    eer: float | None
    note: str | None = None


class Confusion(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tp: int
    fp: int
    tn: int
    fn: int


class Bootstrap(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    n_boot: int
    seed: int
    level: float = 0.95
    stratified: bool = True


class UnscoredVideo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    label: int
    outcome: str
    reason: str | None


class ReportedFile(UnscoredVideo):
    score: float | None
    clips: int


class EvaluationReport(BaseModel):
    """The JSON report of `deepscreen model evaluate` (`--report OUT.json`).

    Videos without a score (`no_face`, `unreadable`) cannot be ranked, so they
    are left out of every video-level metric (`n_scored` counts the rest) but
    counted in `n`, `n_real`, `n_fake` and listed under `unscored` with their
    outcome and reason, so a test set that the detector largely refuses
    cannot pass for a good result. When only one class is scored, the AUC and
    EER fields are None and `note` says why.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model: dict[str, Any]  # the `ModelInfo` of the model evaluated
    n: int
    n_real: int
    n_fake: int
    n_scored: int
    n_unscored: int
    threshold: float
    auc: float | None
    auc_ci95: tuple[float, float] | None
    eer: float | None
    eer_threshold: float | None
    accuracy: float
    precision: float
    recall: float
    f1: float
    fpr: float
    confusion: Confusion
    bootstrap: Bootstrap
    unscored_policy: str = "videos without a score are excluded from the metrics and listed"
    unscored: list[UnscoredVideo]
    clip_level: ClipLevel
    files: list[ReportedFile]
    note: str | None = None


@dataclass(frozen=True)
class _Ranking:
    auc: float | None = None
    auc_ci95: tuple[float, float] | None = None
    eer: float | None = None
    eer_threshold: float | None = None
    note: str | None = None


def _ranking_metrics(labels: FloatArray, scores: FloatArray, n_boot: int, seed: int) -> _Ranking:
    """AUC (+ CI) and EER when both classes are present, else None with a note."""
    n_fake = int(labels.sum())
    if len(labels) == 0 or n_fake in (0, len(labels)):
        present = "no samples" if len(labels) == 0 else f"only {'fake' if n_fake else 'real'}"
        return _Ranking(note=f"AUC and EER need both classes; {present} scored")
    eer, eer_threshold = equal_error_rate(labels, scores)
    return _Ranking(
        auc=roc_auc(labels, scores),
        auc_ci95=bootstrap_auc_ci(labels, scores, n_boot=n_boot, seed=seed),
        eer=eer,
        eer_threshold=eer_threshold,
    )


def evaluation_report(
    videos: list[ScoredVideo],
    threshold: float,
    *,
    model: dict[str, Any],
    n_boot: int = 2000,
    seed: int = 0,
) -> EvaluationReport:
    """How the detector did on labelled videos (see `EvaluationReport` for the policy).

    Counting unscored videos as "real" or "fake" instead of listing them would
    bake an arbitrary decision into the AUC.
    """
    scored = [v for v in videos if v.score is not None]
    labels = np.array([v.label for v in scored], dtype=np.float64)
    scores = np.array([v.score for v in scored], dtype=np.float64)
    confusion = confusion_at(labels, scores, threshold)
    ranking = _ranking_metrics(labels, scores, n_boot, seed)

    clip_labels = np.array([v.label for v in scored for _ in v.clip_scores], dtype=np.float64)
    clip_scores = np.array([c for v in scored for c in v.clip_scores], dtype=np.float64)
    clip_ranking = _ranking_metrics(clip_labels, clip_scores, n_boot, seed)
    clip_confusion = confusion_at(clip_labels, clip_scores, threshold)
    return EvaluationReport(
        model=model,
        n=len(videos),
        n_real=sum(1 for v in videos if v.label == 0),
        n_fake=sum(1 for v in videos if v.label == 1),
        n_scored=len(scored),
        n_unscored=len(videos) - len(scored),
        threshold=threshold,
        auc=ranking.auc,
        auc_ci95=ranking.auc_ci95,
        eer=ranking.eer,
        eer_threshold=ranking.eer_threshold,
        accuracy=confusion["accuracy"],
        precision=confusion["precision"],
        recall=confusion["recall"],
        f1=confusion["f1"],
        fpr=confusion["fpr"],
        confusion=Confusion(**{k: int(confusion[k]) for k in ("tp", "fp", "tn", "fn")}),
        bootstrap=Bootstrap(n_boot=n_boot, seed=seed),
        unscored=[
            UnscoredVideo(path=v.path, label=v.label, outcome=v.outcome, reason=v.reason)
            for v in videos
            if v.score is None
        ],
        clip_level=ClipLevel(
            n=len(clip_scores),
            auc=clip_ranking.auc,
            auc_ci95=clip_ranking.auc_ci95,
            accuracy=clip_confusion["accuracy"],
            f1=clip_confusion["f1"],
            eer=clip_ranking.eer,
            note=clip_ranking.note,
        ),
        files=[
            ReportedFile(
                path=v.path,
                label=v.label,
                score=v.score,
                outcome=v.outcome,
                reason=v.reason,
                clips=len(v.clip_scores),
            )
            for v in videos
        ],
        note=ranking.note,
    )


# --------------------------------------------------------------------------- I/O


def plot_roc(
    labels: ArrayLike,
    scores: ArrayLike,
    path: Path,
    title: str,
    *,
    clip_labels: ArrayLike | None = None,
    clip_scores: ArrayLike | None = None,
) -> Path:
    """Write the ROC curve (and the clip-level one, when given) as a PNG; returns `path`."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.0, 5.0), dpi=120)
    try:
        fpr, tpr, _ = roc_curve(labels, scores)
        axes.plot(fpr, tpr, lw=2, label=f"video (AUC = {roc_auc(labels, scores):.3f})")
        if clip_labels is not None and clip_scores is not None:
            cfpr, ctpr, _ = roc_curve(clip_labels, clip_scores)
            auc = roc_auc(clip_labels, clip_scores)
            axes.plot(cfpr, ctpr, lw=1.5, ls="--", label=f"clip (AUC = {auc:.3f})")
        axes.plot([0, 1], [0, 1], color="grey", lw=1, ls=":", label="chance")
        axes.set(
            xlim=(0.0, 1.0),
            ylim=(0.0, 1.0),
            xlabel="false-positive rate (real flagged)",
            ylabel="true-positive rate (fakes caught)",
            title=title,
        )
        axes.set_aspect("equal")
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right")
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", bbox_inches="tight")
    finally:
        plt.close(figure)
    return path


def score_videos(
    detector: Detector,
    root: Path,
    *,
    workers: int = 1,
    labels: Collection[int] | None = None,
    on_done: Callable[[ScoredVideo], None] = lambda video: None,
) -> list[ScoredVideo]:
    """Screen every labelled video under `root` (see `data.labelled_videos`).

    With `labels`, only the videos of those labels (real only, for thresholds).

    Each video's id is its path relative to `root`, so reports name files the
    way the data set does. With `workers` > 1, videos are decoded concurrently
    and their clips batched together by the detector's scorer.
    """

    def one(item: tuple[Path, int]) -> ScoredVideo:
        path, label = item
        relative = path.relative_to(root).as_posix()
        verdict = detector.screen_timed(path, video_id=relative).verdict
        scored = ScoredVideo(
            path=relative,
            label=label,
            score=verdict.score,
            outcome=verdict.outcome.value,
            reason=verdict.reason.value if verdict.reason else None,
            clip_scores=[clip.score for clip in verdict.timeline],
        )
        on_done(scored)
        return scored

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evaluate") as pool:
        videos = [v for v in labelled_videos(root) if labels is None or v[1] in labels]
        return list(pool.map(one, videos))
