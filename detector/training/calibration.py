"""Calibration: make P(fake) mean what it says, and put the thresholds where the FPR is known.

A network's sigmoid output is rarely a probability: deep classifiers are
usually over-confident. Temperature scaling (Guo et al., 2017, "On
Calibration of Modern Neural Networks") fits one scalar T on held-out
labelled logits so that sigmoid(logit / T) minimises the negative
log-likelihood; it changes no ranking (AUC is untouched) and no weight.

The review/block thresholds are then chosen from the calibrated scores of real
videos so that flagging at them keeps the false-positive rate (real uploads
sent to moderators, or blocked) at a target on that data. Both results are
written into the artifact's `deepscreen.json`, next to the unchanged weights,
so a model cannot ship with thresholds fitted for another. `set_thresholds`
moves only the thresholds, to target rates on an operator's own real videos.

Finite samples: with n real samples the FPRs that can be measured are 0, 1/n,
2/n, ...; a target below 1/n cannot be resolved (the threshold lands just above
the highest real score and the realised FPR on the data is 0, which says
nothing about the target), and `FprResolutionWarning` says so. The realised
FPR on new data scatters around the target by about sqrt(target / n).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from detector.aggregation import SCORE_DECIMALS, SCORE_RESOLUTION
from detector.artifact import read_metadata
from detector.training.export import save_artifact
from schemas.model import ModelMetadata

ArrayLike = Sequence[float] | Sequence[int] | npt.NDArray[Any]

# The bounds of `schemas.model.Calibration.temperature` (0, 100], searched in log space.
MIN_TEMPERATURE = 0.01
MAX_TEMPERATURE = 100.0


class FprResolutionWarning(UserWarning):
    """Too few real samples to resolve the target false-positive rate."""


def _nll(logits: npt.NDArray[np.float64], labels: npt.NDArray[np.float64], log_t: float) -> float:
    """Mean binary cross-entropy of sigmoid(logit / T), stable for any logit."""
    x = logits / math.exp(log_t)
    return float(np.mean(np.logaddexp(0.0, x) - labels * x))


def fit_temperature(logits: ArrayLike, labels: ArrayLike) -> float:
    """The T > 0 minimising the binary NLL of sigmoid(logit / T) against `labels` (1 = fake).

    The NLL is convex in 1/T, hence unimodal in log T; a golden-section search
    over log T in [0.01, 100] (the range the metadata accepts) finds it without
    derivatives. Perfectly separated data drive T to the lower bound.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if z.ndim != 1 or z.shape != y.shape or len(z) == 0:
        raise ValueError("logits and labels must be 1-D, equally long and non-empty")
    if not np.isfinite(z).all() or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("logits must be finite and labels 0 (real) or 1 (fake)")
    if y.all() or not y.any():
        raise ValueError("fitting a temperature needs both real (0) and fake (1) samples")
    if not z.any():
        return 1.0  # all logits 0: every T gives P = 0.5; keep the identity

    low, high = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = _nll(z, y, a), _nll(z, y, b)
    while high - low > 1e-7:  # ~60 steps; log T to 1e-7 is far below sampling noise
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = _nll(z, y, a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = _nll(z, y, b)
    return math.exp((low + high) / 2.0)


def fpr_resolvable(n_real: int, target_fpr: float) -> bool:
    """Whether `n_real` real samples can measure an FPR as small as `target_fpr` (n >= 1/target)."""
    return math.floor(target_fpr * n_real + 1e-9) >= 1


def threshold_for_fpr(
    scores_of_real: ArrayLike, target_fpr: float, *, resolution: float = 0.0
) -> float:
    """The smallest threshold t with share(real scores >= t) <= `target_fpr`.

    With n real scores at most k = floor(target * n) may be flagged, so t lies
    just above the (k+1)-th highest real score: the next float above it, or,
    with `resolution` > 0, the next point of that grid above it rounded to the
    grid (for scores that are rounded before they are compared). Ties at that
    score all stay unflagged, so the realised FPR can fall below the target.

    Warns `FprResolutionWarning` when n < 1/target (see the module docstring).
    """
    s = np.sort(np.asarray(scores_of_real, dtype=np.float64))[::-1]
    if s.ndim != 1 or len(s) == 0 or not np.isfinite(s).all():
        raise ValueError("scores_of_real must be a non-empty 1-D array of finite scores")
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1); got {target_fpr}")
    if resolution < 0.0:
        raise ValueError("resolution must be >= 0")
    n = len(s)
    k = math.floor(target_fpr * n + 1e-9)  # guard against 0.29 * 100 = 28.999...
    if k < 1:
        warnings.warn(
            f"{n} real samples cannot resolve an FPR of {target_fpr:g} (the smallest nonzero "
            f"FPR they can show is 1/{n} = {1 / n:.3g}); the threshold is set just above the "
            "highest real score and its FPR on new data is unknown",
            FprResolutionWarning,
            stacklevel=2,
        )
    boundary = float(s[k])  # the highest real score that must stay unflagged
    if resolution == 0.0:
        return float(np.nextafter(boundary, np.inf))
    steps = round(boundary / resolution) + 1
    decimals = max(0, -math.floor(math.log10(resolution))) + 2
    return round(steps * resolution, decimals)  # drop float noise such as 0.7347000000000001


def _pipeline_scores(logits: npt.NDArray[np.float64], temperature: float) -> npt.NDArray[Any]:
    """Calibrated scores exactly as `TorchScorer` and the pipeline produce them."""
    z = torch.from_numpy(logits.astype(np.float32))
    probabilities = torch.sigmoid(z / temperature).numpy().astype(np.float64)
    return np.round(probabilities, SCORE_DECIMALS)


def calibrate_artifact(
    model_path: Path,
    out_path: Path,
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    review_fpr: float = 0.01,
    block_fpr: float = 0.001,
    fitted_on: str,
) -> ModelMetadata:
    """Fit T on uncalibrated (`logits`, `labels`), set thresholds, write the artifact to `out_path`.

    `logits` come from `TorchScorer.logits` (not from `score`, which is
    already divided by the current temperature). The review/block thresholds
    are the `threshold_for_fpr` of the real samples' calibrated scores at
    `review_fpr`/`block_fpr`. They hold for the unit the samples are: pass one
    logit per clip and they bound the clip-level FPR; a video's score is the
    maximum over its face tracks of mean clip scores, so its FPR can differ.

    The TorchScript module is loaded and saved unchanged (same weights and
    code) with the new `deepscreen.json`; `out_path` may be `model_path`
    (written to a temporary file, then moved over it).
    """
    _check_targets(review_fpr, block_fpr)
    metadata = read_metadata(model_path)  # refuses a file that is not a deepscreen model
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    temperature = fit_temperature(z, y)
    real = _pipeline_scores(z, temperature)[y == 0]
    calibration = {
        "method": "temperature",
        "temperature": temperature,
        "fitted_on": fitted_on,
        "target_fpr": {"review": review_fpr, "block": block_fpr},
    }
    thresholds = _thresholds_for(real, review_fpr, block_fpr)
    return _save(model_path, out_path, metadata, thresholds, calibration)


def set_thresholds(
    model_path: Path,
    out_path: Path,
    real_video_scores: ArrayLike,
    *,
    review_fpr: float = 0.01,
    block_fpr: float = 0.001,
    fitted_on: str,
) -> ModelMetadata:
    """Keep the model's temperature; put review/block at target FPRs of real *video* scores.

    For operators whose own real uploads are the only data they have in
    quantity: pseudo-fake calibration bounds the FPR on the training domain,
    which need not carry over to a platform's videos (MODEL_CARD.md measures
    that), while fakes are too rare to fit a temperature on. The scores are the
    pipeline's video scores (the highest track's mean clip score, already
    calibrated and rounded), so the FPR holds for the unit the review and block
    decisions are made on. `fitted_on` says where the thresholds came from; the
    temperature's own provenance is kept beside it.
    """
    _check_targets(review_fpr, block_fpr)
    metadata = read_metadata(model_path)
    scores = np.asarray(real_video_scores, dtype=np.float64)
    if scores.ndim != 1 or not ((scores >= 0.0) & (scores <= 1.0)).all():
        raise ValueError("real video scores must be a 1-D array of probabilities in [0, 1]")
    previous = metadata.calibration
    origin = f"temperature: {previous.fitted_on or 'as trained'}"
    calibration = previous.model_dump() | {
        "fitted_on": f"thresholds: {fitted_on}; {origin}"[:512],
        "target_fpr": {"review": review_fpr, "block": block_fpr},
    }
    thresholds = _thresholds_for(scores, review_fpr, block_fpr)
    return _save(model_path, out_path, metadata, thresholds, calibration)


def _check_targets(review_fpr: float, block_fpr: float) -> None:
    if not 0.0 < block_fpr <= review_fpr < 1.0:
        raise ValueError("need 0 < block_fpr <= review_fpr < 1: blocking is the stricter action")


def _thresholds_for(
    real_scores: npt.NDArray[np.float64], review_fpr: float, block_fpr: float
) -> dict[str, float]:
    """`threshold_for_fpr` per action on the pipeline's score grid; block never below review."""
    thresholds: dict[str, float] = {}
    for action, target in (("review", review_fpr), ("block", block_fpr)):
        t = threshold_for_fpr(real_scores, target, resolution=SCORE_RESOLUTION)
        if t > 1.0:  # real scores of 1.0 leave no probability above them
            warnings.warn(
                f"{action}: real samples score 1.0; no threshold keeps the FPR at {target:g}",
                FprResolutionWarning,
                stacklevel=3,
            )
        thresholds[action] = min(t, 1.0)
    thresholds["block"] = max(thresholds["block"], thresholds["review"])
    return thresholds


def _save(
    model_path: Path,
    out_path: Path,
    metadata: ModelMetadata,
    thresholds: dict[str, float],
    calibration: dict[str, Any],
) -> ModelMetadata:
    """The TorchScript module unchanged, with the new thresholds and calibration in its metadata."""
    updated = ModelMetadata.model_validate(
        metadata.model_dump() | {"thresholds": thresholds, "calibration": calibration}
    )
    module = torch.jit.load(str(model_path), map_location="cpu")  # type: ignore[no-untyped-call]
    save_artifact(module, updated, out_path)
    return updated
