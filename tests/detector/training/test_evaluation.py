"""Evaluation metrics and the evaluation report, as a specification.

The metrics are checked against a small example worked out by hand, against
the Mann-Whitney definition of the AUC on random data, and the folder walk
against synthetic videos screened by the real pipeline with a rule scorer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.pipeline import Detector
from detector.scoring import InMemoryScorer
from detector.training.data import labelled_videos
from detector.training.evaluation import (
    EvaluationReport,
    ScoredVideo,
    bootstrap_auc_ci,
    confusion_at,
    equal_error_rate,
    evaluation_report,
    plot_roc,
    roc_auc,
    roc_curve,
    score_videos,
)
from tests.support import videos

# The worked example: four real and four fake videos, one real/fake tie at 0.7.
REAL = [0.1, 0.3, 0.5, 0.7]
FAKE = [0.4, 0.6, 0.7, 0.9]
LABELS = [0] * 4 + [1] * 4
SCORES = REAL + FAKE


def mann_whitney_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """U / (n_pos * n_neg) by brute force over every (fake, real) pair; ties count 1/2."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins) / (len(pos) * len(neg))


def test_auc_of_the_worked_example() -> None:
    # Fakes outscoring each real: 0.4 beats 0.1, 0.3 -> 2; 0.6 beats 0.1, 0.3, 0.5 -> 3;
    # 0.7 beats 0.1, 0.3, 0.5 and ties 0.7 -> 3.5; 0.9 beats all four -> 4.
    # AUC = (2 + 3 + 3.5 + 4) / (4 * 4) = 12.5 / 16 = 0.78125
    assert roc_auc(LABELS, SCORES) == pytest.approx(0.78125)


def test_roc_curve_of_the_worked_example_has_one_point_per_distinct_score() -> None:
    fpr, tpr, thresholds = roc_curve(LABELS, SCORES)
    # threshold: inf  0.9   0.7   0.6   0.5   0.4   0.3   0.1
    # flagged fakes: 0  1     2     3     3     4     4     4   (of 4)
    # flagged reals: 0  0     1     1     2     2     3     4   (of 4); 0.7 is one point
    assert thresholds.tolist() == [np.inf, 0.9, 0.7, 0.6, 0.5, 0.4, 0.3, 0.1]
    assert tpr.tolist() == [0, 0.25, 0.5, 0.75, 0.75, 1, 1, 1]
    assert fpr.tolist() == [0, 0, 0.25, 0.25, 0.5, 0.5, 0.75, 1]
    # the trapezoid area (the tie is a diagonal segment) is the same 0.78125
    assert np.trapz(tpr, fpr) == pytest.approx(0.78125)


def test_confusion_of_the_worked_example_at_half() -> None:
    # score >= 0.5 is flagged: reals 0.5, 0.7 (fp = 2, tn = 2); fakes 0.6, 0.7, 0.9 (tp = 3, fn = 1)
    # accuracy = 5/8; precision = 3/5; recall = 3/4; f1 = 2 * 0.6 * 0.75 / 1.35 = 2/3; fpr = 2/4
    c = confusion_at(LABELS, SCORES, 0.5)
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (3, 2, 2, 1)
    assert c["accuracy"] == pytest.approx(0.625)
    assert c["precision"] == pytest.approx(0.6)
    assert c["recall"] == pytest.approx(0.75)
    assert c["f1"] == pytest.approx(2 / 3)
    assert c["fpr"] == pytest.approx(0.5)


def test_eer_of_the_worked_example_falls_on_a_roc_point() -> None:
    # at 0.6: FPR = 1/4 (real 0.7), FNR = 1 - 3/4 = 1/4 -> EER 0.25 exactly, no interpolation
    assert equal_error_rate(LABELS, SCORES) == pytest.approx((0.25, 0.6))


def test_eer_between_roc_points_is_interpolated() -> None:
    # reals 0.1, 0.2, 0.3; fakes 0.25, 0.9.
    # at 0.3:  FPR = 1/3, FNR = 1/2 (FPR - FNR = -1/6); at 0.25: FPR = 1/3, FNR = 0 (+1/3).
    # The gap crosses zero a third of the way: EER = 1/3, threshold = 0.3 - 0.05 / 3.
    eer, threshold = equal_error_rate([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.25, 0.9])
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.3 - 0.05 / 3)


def test_perfect_separation_has_auc_one_and_eer_zero() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])[0] == 0.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(0, 20), min_size=1, max_size=40),
    st.lists(st.integers(0, 20), min_size=1, max_size=40),
)
def test_auc_is_the_mann_whitney_statistic(real: list[int], fake: list[int]) -> None:
    """Integer scores make ties frequent, which is where implementations differ."""
    labels = np.array([0] * len(real) + [1] * len(fake))
    scores = np.array(real + fake, dtype=np.float64) / 20
    expected = mann_whitney_auc(labels, scores)
    assert roc_auc(labels, scores) == pytest.approx(expected)
    fpr, tpr, _ = roc_curve(labels, scores)
    assert np.trapz(tpr, fpr) == pytest.approx(expected)


def test_auc_is_the_mann_whitney_statistic_on_continuous_scores() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 500)
    scores = rng.normal(labels * 0.8, 1.0)
    assert roc_auc(labels, scores) == pytest.approx(mann_whitney_auc(labels, scores))


def test_metrics_refuse_one_class_and_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one real"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="0 \\(real\\) or 1"):
        roc_auc([0, 2], [0.2, 0.3])
    with pytest.raises(ValueError, match="finite"):
        roc_auc([0, 1], [0.2, float("nan")])


def _separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n), np.ones(n)]
    return labels, rng.normal(labels * 1.0, 1.0)


def test_bootstrap_interval_contains_the_auc_and_narrows_with_more_data() -> None:
    small_labels, small_scores = _separable(40, seed=1)
    large_labels, large_scores = _separable(1000, seed=1)
    small = bootstrap_auc_ci(small_labels, small_scores, n_boot=500, seed=0)
    large = bootstrap_auc_ci(large_labels, large_scores, n_boot=500, seed=0)
    assert small[0] < roc_auc(small_labels, small_scores) < small[1]
    assert large[0] < roc_auc(large_labels, large_scores) < large[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 2
    # ~0.76 is the population AUC of N(1, 1) vs N(0, 1): Phi(1 / sqrt 2)
    assert large[0] < 0.760 < large[1]


def test_bootstrap_is_reproducible_with_a_seed_and_survives_a_single_sample_per_class() -> None:
    labels, scores = _separable(30, seed=2)
    assert bootstrap_auc_ci(labels, scores, n_boot=200, seed=5) == bootstrap_auc_ci(
        labels, scores, n_boot=200, seed=5
    )
    # stratified: even one real and one fake give a resample with both classes every time
    assert bootstrap_auc_ci([0, 1], [0.2, 0.8], n_boot=50) == (1.0, 1.0)


def test_the_roc_plot_is_a_png(tmp_path: Path) -> None:
    labels, scores = _separable(100, seed=4)
    out = plot_roc(
        labels,
        scores,
        tmp_path / "plots" / "roc.png",
        "synthetic",
        clip_labels=labels,
        clip_scores=scores + 0.1,
    )
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1024


def _video(path: str, label: int, score: float | None, clips: list[float]) -> ScoredVideo:
    outcome = "no_face" if score is None else "likely_real"
    reason = "no_face_detected" if score is None else None
    return ScoredVideo(path, label, score, outcome, reason, clips)


def test_the_report_excludes_unscored_videos_from_metrics_but_lists_them() -> None:
    scored = [_video(f"real/{i}.mp4", 0, s, [s, s - 0.05]) for i, s in enumerate(REAL)] + [
        _video(f"fake/{i}.mp4", 1, s, [s]) for i, s in enumerate(FAKE)
    ]
    unscored = [
        _video("real/dark.mp4", 0, None, []),
        ScoredVideo("fake/broken.mp4", 1, None, "unreadable", "corrupt_container", []),
    ]
    typed = evaluation_report(scored + unscored, 0.5, model={"name": "m"}, n_boot=200)

    assert EvaluationReport.model_validate_json(typed.model_dump_json()) == typed  # round-trips
    report = json.loads(typed.model_dump_json())
    assert (report["n"], report["n_real"], report["n_fake"]) == (10, 5, 5)
    assert (report["n_scored"], report["n_unscored"]) == (8, 2)
    # the metrics are the worked example's, untouched by the two unscored videos
    assert report["auc"] == pytest.approx(0.78125)
    assert (report["eer"], report["eer_threshold"]) == pytest.approx((0.25, 0.6))
    assert report["accuracy"] == pytest.approx(0.625)
    assert report["f1"] == pytest.approx(2 / 3)
    assert report["auc_ci95"][0] <= report["auc"] <= report["auc_ci95"][1]
    assert report["unscored"] == [
        {"path": "real/dark.mp4", "label": 0, "outcome": "no_face", "reason": "no_face_detected"},
        {
            "path": "fake/broken.mp4",
            "label": 1,
            "outcome": "unreadable",
            "reason": "corrupt_container",
        },
    ]
    assert [f["path"] for f in report["files"]][-2:] == ["real/dark.mp4", "fake/broken.mp4"]
    assert report["files"][0] == {
        "path": "real/0.mp4",
        "label": 0,
        "score": 0.1,
        "outcome": "likely_real",
        "reason": None,
        "clips": 2,
    }
    assert report["clip_level"]["n"] == 12  # two clips per real video, one per fake
    assert 0.0 <= report["clip_level"]["auc"] <= 1.0
    assert report["model"] == {"name": "m"}


def test_the_report_with_one_scored_class_has_no_auc_and_says_why() -> None:
    report = evaluation_report(
        [_video("real/a.mp4", 0, 0.2, [0.2]), _video("fake/b.mp4", 1, None, [])],
        0.5,
        model={},
    ).model_dump()
    assert report["auc"] is None and report["auc_ci95"] is None and report["eer"] is None
    assert "only real" in report["note"]
    assert report["clip_level"]["auc"] is None
    assert report["accuracy"] == 1.0  # the one scored video is a true negative


# --------------------------------------------------------------------------- folders


def _face_frames(brightness: float, frames: int = 40) -> list[np.ndarray]:
    """The astronaut sliding over a grey frame, dimmed to `brightness` (the "fake" tell)."""
    face = cv2.resize(videos.astronaut_face(), (150, 150))
    out = []
    for t in range(frames):
        frame = np.full((240, 320, 3), 110, dtype=np.uint8)
        frame[40 + t : 190 + t, 40 + 2 * t : 190 + 2 * t] = face
        out.append(np.asarray(frame * brightness, dtype=np.uint8))
    return out


@pytest.fixture(scope="module")
def labelled_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("labelled")
    videos.write_video(root / "real" / "bright.mp4", _face_frames(1.0))
    videos.write_video(root / "real" / "nested" / "dim.mp4", _face_frames(0.9))
    videos.no_face_video(root / "real" / "empty_room.mp4", frames=40)
    videos.write_video(root / "fake" / "dark.mp4", _face_frames(0.6))
    videos.write_video(root / "fake" / "darker.mp4", _face_frames(0.5))
    videos.not_a_video(root / "fake" / "broken.mp4")
    (root / "fake" / "README.txt").write_text("not a video: skipped by suffix")
    return root


@pytest.fixture(scope="module")
def darkness_detector() -> Iterator[Detector]:
    detector = Detector(InMemoryScorer(rule=lambda clip: 1.0 - float(clip.mean()) / 255.0))
    yield detector
    detector.close()


def test_labelled_videos_are_found_by_folder_and_suffix(labelled_root: Path) -> None:
    found = [
        (p.relative_to(labelled_root).as_posix(), label)
        for p, label in labelled_videos(labelled_root)
    ]
    assert found == [
        ("real/bright.mp4", 0),
        ("real/empty_room.mp4", 0),
        ("real/nested/dim.mp4", 0),
        ("fake/broken.mp4", 1),
        ("fake/dark.mp4", 1),
        ("fake/darker.mp4", 1),
    ]


def test_scoring_a_labelled_folder_runs_the_pipeline_on_every_video(
    labelled_root: Path, darkness_detector: Detector
) -> None:
    scored = {v.path: v for v in score_videos(darkness_detector, labelled_root)}
    assert scored["real/empty_room.mp4"].score is None
    assert scored["real/empty_room.mp4"].outcome == "no_face"
    assert scored["fake/broken.mp4"].score is None
    assert scored["fake/broken.mp4"].outcome == "unreadable"
    assert scored["fake/broken.mp4"].reason is not None
    faces = ["real/bright.mp4", "real/nested/dim.mp4", "fake/dark.mp4", "fake/darker.mp4"]
    assert all(scored[p].score is not None and len(scored[p].clip_scores) == 2 for p in faces)

    report = evaluation_report(
        list(scored.values()), 0.5, model={"name": "rule"}, n_boot=100
    ).model_dump()
    assert report["auc"] == 1.0  # the darker "fakes" all outscore the real faces
    assert report["n_scored"] == 4
    assert {u["path"] for u in report["unscored"]} == {"real/empty_room.mp4", "fake/broken.mp4"}
    assert report["clip_level"]["n"] == 8 and report["clip_level"]["auc"] == 1.0
