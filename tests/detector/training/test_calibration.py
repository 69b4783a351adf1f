"""Temperature scaling and FPR-targeted thresholds, as a specification.

Synthetic logits with a known true temperature check the fit; large synthetic
score samples check that a threshold keeps its false-positive rate; a tiny
TorchScript artifact checks that calibration rewrites only the metadata.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from detector.architecture import model_metadata
from detector.artifact import load, read_metadata
from detector.scoring import TorchScorer
from detector.training.calibration import (
    FprResolutionWarning,
    calibrate_artifact,
    fit_temperature,
    fpr_resolvable,
    set_thresholds,
    threshold_for_fpr,
)
from detector.training.export import export


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(x / 2.0))


def synthetic_logits(n: int, true_temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits from two Gaussians; labels drawn so that sigmoid(z / T_true) is the true P(fake)."""
    rng = np.random.default_rng(seed)
    z = np.where(rng.random(n) < 0.5, rng.normal(-3.0, 2.0, n), rng.normal(3.0, 2.0, n))
    labels = (rng.random(n) < sigmoid(z / true_temperature)).astype(np.float64)
    return z, labels


# --------------------------------------------------------------------------- temperature


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_the_fitted_temperature_recovers_the_true_one(true_temperature: float) -> None:
    z, labels = synthetic_logits(20_000, true_temperature, seed=11)
    assert fit_temperature(z, labels) == pytest.approx(true_temperature, rel=0.10)


def test_an_overconfident_model_becomes_calibrated() -> None:
    """Logits twice too large (T_true = 2): after scaling, each score bin's fake share matches."""
    z, labels = synthetic_logits(40_000, 2.0, seed=12)
    calibrated = sigmoid(z / fit_temperature(z, labels))
    bins = np.digitize(calibrated, np.linspace(0.1, 0.9, 9))
    gaps = [abs(labels[bins == b].mean() - calibrated[bins == b].mean()) for b in range(10)]
    assert max(gaps) < 0.03
    raw = sigmoid(z)  # T = 1 is far off: the top bin says ~0.99, the truth is ~0.9
    top = raw > 0.95
    assert raw[top].mean() - labels[top].mean() > 0.05


def test_a_temperature_needs_both_classes_and_finite_logits() -> None:
    with pytest.raises(ValueError, match="both"):
        fit_temperature([1.0, 2.0], [1, 1])
    with pytest.raises(ValueError, match="finite"):
        fit_temperature([1.0, float("inf")], [0, 1])
    assert fit_temperature([0.0, 0.0], [0, 1]) == 1.0  # nothing to scale


# --------------------------------------------------------------------------- thresholds


def real_scores(n: int, seed: int) -> np.ndarray:
    return sigmoid(np.random.default_rng(seed).normal(-2.0, 1.5, n))


def flagged(scores: np.ndarray, threshold: float) -> float:
    return float(np.mean(scores >= threshold))


@pytest.mark.parametrize("target", [0.01, 0.001])
def test_the_threshold_keeps_the_fpr_at_the_target_on_its_data(target: float) -> None:
    scores = real_scores(100_000, seed=1)
    threshold = threshold_for_fpr(scores, target)
    assert target * 0.99 <= flagged(scores, threshold) <= target
    # and it is the smallest such threshold: one float lower flags one real too many
    assert flagged(scores, float(np.nextafter(threshold, -np.inf))) > target


@pytest.mark.parametrize("target", [0.01, 0.001])
def test_the_threshold_holds_near_the_target_on_held_out_data(target: float) -> None:
    threshold = threshold_for_fpr(real_scores(100_000, seed=1), target)
    held_out = flagged(real_scores(100_000, seed=2), threshold)
    # sampling noise of both samples: sd ~ sqrt(2 * target / 1e5), here < 4.5e-4
    assert held_out == pytest.approx(target, abs=4 * np.sqrt(2 * target / 100_000))


def test_ties_at_the_boundary_stay_unflagged() -> None:
    scores = np.array([0.3] * 9 + [0.8])  # target 0.15 allows 1 of 10: only the 0.8
    threshold = threshold_for_fpr(scores, 0.15)
    assert 0.3 < threshold <= 0.8 and flagged(scores, threshold) == 0.1
    ties = np.full(10, 0.3)  # flagging any one 0.3 flags all ten
    assert flagged(ties, threshold_for_fpr(ties, 0.15)) == 0.0


def test_the_allowed_count_is_not_lost_to_float_rounding() -> None:
    scores = np.arange(100) / 100  # 0.29 * 100 is 28.999... in floating point
    assert flagged(scores, threshold_for_fpr(scores, 0.29)) == pytest.approx(0.29)


def test_a_threshold_on_a_grid_stays_safe_for_rounded_scores() -> None:
    scores = np.round(real_scores(20_000, seed=3), 4)
    threshold = threshold_for_fpr(scores, 0.01, resolution=1e-4)
    assert threshold == round(threshold, 4)  # on the 4-decimal grid, without float noise
    assert flagged(scores, threshold) <= 0.01
    assert flagged(scores, round(threshold - 1e-4, 4)) > 0.01  # the grid point below is too low


def test_too_few_real_samples_for_the_target_are_reported() -> None:
    scores = real_scores(50, seed=4)
    assert not fpr_resolvable(50, 0.001) and fpr_resolvable(1000, 0.001)
    with pytest.warns(FprResolutionWarning, match="cannot resolve an FPR of 0.001"):
        threshold = threshold_for_fpr(scores, 0.001)
    assert threshold > scores.max()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        threshold_for_fpr(real_scores(1000, seed=4), 0.001)  # 1 of 1000 is resolvable


def test_a_target_outside_zero_one_is_refused() -> None:
    for target in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="target_fpr"):
            threshold_for_fpr([0.1, 0.2], target)


# --------------------------------------------------------------------------- artifact


class TinyClipModel(nn.Module):
    """(N, T, C, H, W) → (N,) logits; a stand-in for ClipClassifier that scripts in milliseconds."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(1, 3, 4))).squeeze(-1)


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    export(TinyClipModel(), model_metadata(input_size=112, lstm_hidden=16, trained=False), path)
    return path


def fixed_input() -> torch.Tensor:
    return torch.linspace(-2.0, 2.0, 2 * 20 * 3 * 8 * 8).reshape(2, 20, 3, 8, 8)


def test_calibrating_an_artifact_rewrites_its_metadata_and_not_its_weights(
    tiny_model: Path, tmp_path: Path
) -> None:
    z, labels = synthetic_logits(20_000, 2.0, seed=5)
    before = torch.jit.load(str(tiny_model))
    out = tmp_path / "calibrated" / "tiny.pt"

    metadata = calibrate_artifact(tiny_model, out, z, labels, fitted_on="synthetic-v1 (20k clips)")

    assert read_metadata(out) == metadata
    calibration = metadata.calibration
    assert calibration.method == "temperature"
    assert calibration.temperature == pytest.approx(fit_temperature(z, labels))
    assert calibration.temperature == pytest.approx(2.0, rel=0.1)
    assert calibration.fitted_on == "synthetic-v1 (20k clips)"
    assert calibration.target_fpr == {"review": 0.01, "block": 0.001}
    # the thresholds keep the real samples' calibrated FPR at the targets; below them only by
    # the reals that tie at the boundary on the 4-decimal grid (~10k reals: 1 real = 1e-4)
    real = sigmoid(z[labels == 0] / calibration.temperature)
    assert 0.009 <= flagged(real, metadata.thresholds.review) <= 0.01
    assert 0.0008 <= flagged(real, metadata.thresholds.block) <= 0.001
    assert metadata.thresholds.review < metadata.thresholds.block
    # everything else is the original's
    original = read_metadata(tiny_model)
    unchanged = {"calibration", "thresholds"}
    assert metadata.model_dump(exclude=unchanged) == original.model_dump(exclude=unchanged)
    # the module computes exactly what it did
    after = torch.jit.load(str(out))
    assert torch.equal(after(fixed_input()), before(fixed_input()))
    for (name, a), (_, b) in zip(
        after.state_dict().items(), before.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_an_artifact_can_be_calibrated_in_place(tiny_model: Path) -> None:
    z, labels = synthetic_logits(5_000, 0.7, seed=6)
    metadata = calibrate_artifact(tiny_model, tiny_model, z, labels, fitted_on="in place")
    assert read_metadata(tiny_model).calibration.temperature == metadata.calibration.temperature
    assert list(tiny_model.parent.iterdir()) == [tiny_model]  # no temporary file left behind


def test_the_scorer_applies_the_fitted_temperature(tiny_model: Path, tmp_path: Path) -> None:
    z, labels = synthetic_logits(5_000, 3.0, seed=7)
    out = tmp_path / "scaled.pt"
    temperature = calibrate_artifact(
        tiny_model, out, z, labels, fitted_on="synthetic"
    ).calibration.temperature
    scorer = TorchScorer(load(out, device="cpu"))
    clips = np.random.default_rng(0).integers(0, 256, (3, 20, 112, 112, 3), dtype=np.uint8)
    expected = torch.sigmoid(torch.from_numpy(scorer.logits(clips)) / temperature).numpy()
    np.testing.assert_allclose(scorer.score(clips), expected, rtol=1e-6)


def test_block_must_be_the_stricter_target(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="block_fpr <= review_fpr"):
        calibrate_artifact(
            tiny_model,
            tmp_path / "x.pt",
            [0.0, 1.0],
            [0, 1],
            review_fpr=0.001,
            block_fpr=0.01,
            fitted_on="x",
        )


# --------------------------------------------------------------------------- thresholds only


def test_thresholds_from_real_videos_keep_the_temperature_and_hit_their_targets(
    tiny_model: Path, tmp_path: Path
) -> None:
    z, labels = synthetic_logits(5_000, 2.0, seed=8)
    calibrated = tmp_path / "calibrated.pt"
    before = calibrate_artifact(tiny_model, calibrated, z, labels, fitted_on="pseudo-fakes")
    # an operator's real uploads score higher than the training domain's reals
    videos = np.round(np.random.default_rng(9).beta(2.0, 5.0, 4_000), 4)
    out = tmp_path / "platform.pt"

    metadata = set_thresholds(
        calibrated, out, videos, review_fpr=0.02, block_fpr=0.005,
        fitted_on="video scores of 4000 real videos in uploads",
    )  # fmt: skip

    assert read_metadata(out) == metadata
    assert metadata.calibration.temperature == before.calibration.temperature
    assert metadata.calibration.method == "temperature"
    assert metadata.calibration.fitted_on == (
        "thresholds: video scores of 4000 real videos in uploads; temperature: pseudo-fakes"
    )
    assert metadata.calibration.target_fpr == {"review": 0.02, "block": 0.005}
    assert 0.019 <= flagged(videos, metadata.thresholds.review) <= 0.02
    assert 0.004 <= flagged(videos, metadata.thresholds.block) <= 0.005
    assert metadata.thresholds.review != before.thresholds.review
    after = torch.jit.load(str(out))
    assert torch.equal(after(fixed_input()), torch.jit.load(str(calibrated))(fixed_input()))


def test_thresholds_only_refuse_what_is_not_a_probability(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="probabilities"):
        set_thresholds(tiny_model, tmp_path / "x.pt", [0.2, 1.3], fitted_on="x")
    with pytest.raises(ValueError, match="block_fpr <= review_fpr"):
        set_thresholds(tiny_model, tmp_path / "x.pt", [0.2], review_fpr=0.001, block_fpr=0.01,
                       fitted_on="x")  # fmt: skip


def test_too_few_real_videos_for_the_block_rate_are_reported(
    tiny_model: Path, tmp_path: Path
) -> None:
    with pytest.warns(FprResolutionWarning, match="cannot resolve"):
        metadata = set_thresholds(tiny_model, tmp_path / "x.pt", [0.1] * 99 + [0.9],
                                  fitted_on="100 videos")  # fmt: skip
    # review: 1 of 100 may be flagged, the 0.9; block: none may, so just above the highest
    assert metadata.thresholds.review == pytest.approx(0.1001)
    assert metadata.thresholds.block == pytest.approx(0.9001)
