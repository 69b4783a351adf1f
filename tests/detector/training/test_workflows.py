"""The lifecycle's commands as functions: what `deepscreen model ...` runs, without the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from detector.training.data import CacheManifest, ClipIndex
from detector.training.evaluation import EvaluationReport
from detector.training.workflows import (
    WorkflowError,
    calibrate_model,
    evaluate_model,
    load_model,
    prepare_training_data,
)
from tests.conftest import SyntheticVideos


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory, synthetic: SyntheticVideos) -> Path:
    """A real face, a "fake" (two faces) and a fake that is not a video at all."""
    root = tmp_path_factory.mktemp("labelled")
    (root / "real").mkdir()
    (root / "fake").mkdir()
    (root / "real" / "face.mp4").symlink_to(synthetic.moving_face)
    (root / "fake" / "faces.mp4").symlink_to(synthetic.two_faces)
    (root / "fake" / "broken.mp4").symlink_to(synthetic.not_a_video)
    return root


def test_video_training_data_counts_what_it_could_not_read(labelled: Path, tmp_path: Path) -> None:
    prepared = prepare_training_data(labelled, tmp_path / "cache", self_blend=False, input_size=112)
    manifest = prepared.manifest
    assert (manifest.kind, manifest.videos, manifest.skipped_unreadable) == ("videos", 3, 1)
    assert manifest.clips == len(prepared.index) > 0
    assert set(prepared.index.groups) == {"real/face.mp4", "fake/faces.mp4"}
    assert CacheManifest.read(tmp_path / "cache") == manifest


def test_a_video_cache_is_reused_without_cutting_a_clip_again(
    labelled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = prepare_training_data(labelled, tmp_path / "cache", self_blend=False, input_size=112)
    written = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()}

    def no_extraction(*args: object, **kwargs: object) -> None:
        raise AssertionError("a reused cache must not decode a video again")

    monkeypatch.setattr("detector.training.data.extract_face_clips", no_extraction)
    again = prepare_training_data(labelled, tmp_path / "cache", self_blend=False, input_size=112)
    assert again.manifest == first.manifest
    assert len(again.index) == len(first.index)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()} == written


def test_a_video_cache_of_another_input_size_is_refused(labelled: Path, tmp_path: Path) -> None:
    prepare_training_data(labelled, tmp_path / "cache", self_blend=False, input_size=112)
    with pytest.raises(ValueError, match="different cache"):
        prepare_training_data(labelled, tmp_path / "cache", self_blend=False, input_size=224)


def test_no_data_is_a_workflow_error(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="no labelled videos"):
        prepare_training_data(tmp_path, tmp_path / "cache", self_blend=False, input_size=112)
    with pytest.raises(WorkflowError, match="no images"):
        prepare_training_data(tmp_path, tmp_path / "cache", self_blend=True, input_size=112)


def test_a_file_that_is_not_a_model_is_a_workflow_error(labelled: Path, tmp_path: Path) -> None:
    not_a_model = tmp_path / "notes.pt"
    not_a_model.write_text("hello")
    with pytest.raises(WorkflowError, match="cannot use"):
        load_model(not_a_model, "cpu")
    with pytest.raises(WorkflowError, match="cannot use"):
        calibrate_model(not_a_model, labelled, tmp_path / "out.pt", review_fpr=0.01,
                        block_fpr=0.001)  # fmt: skip


def test_evaluation_writes_a_typed_report_and_a_roc(
    labelled: Path, reference_model: Path, tmp_path: Path
) -> None:
    report_path = tmp_path / "eval" / "report.json"
    report = evaluate_model(load_model(reference_model, "cpu"), labelled, report_path, workers=2)
    assert EvaluationReport.model_validate_json(report_path.read_text()) == report
    assert (report.n, report.n_scored, report.n_unscored) == (3, 2, 1)
    assert [u.path for u in report.unscored] == ["fake/broken.mp4"]
    assert report_path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibration_on_a_cache_uses_its_held_out_split(
    labelled: Path, reference_model: Path, tmp_path: Path
) -> None:
    prepare_training_data(labelled, tmp_path / "cache", self_blend=False, input_size=112)
    index = ClipIndex.open(tmp_path / "cache")
    result = calibrate_model(reference_model, tmp_path / "cache", tmp_path / "calibrated.pt",
                             review_fpr=0.5, block_fpr=0.25, validation_share=1.0)  # fmt: skip
    assert result.counts == {"clips": len(index)}  # every clip is held out at share 1.0
    assert result.metadata.calibration.method == "temperature"
    assert "validation split (100%, by source) of cache" in (
        result.metadata.calibration.fitted_on or ""
    )
