"""`deepscreen model export` and `model derive`: derived forms from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from consumer.cli import app
from detector.artifact import load, sha256_file
from detector.derived import read_onnx_metadata
from detector.scoring import TorchScorer
from schemas import ScreeningVerdict
from tests.conftest import SyntheticVideos
from tests.support.tiny_model import write_tiny_artifact

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    write_tiny_artifact(path, seed=5)
    return path


def test_export_onnx_writes_a_model_that_scores_one_clip_and_a_batch_like_torchscript(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    out = tmp_path / "edge" / "model.onnx"
    result = runner.invoke(
        app, ["model", "export", "--format", "onnx", "--model", str(tiny_artifact), str(out)]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["sha256"] == sha256_file(out)
    assert printed["source_sha256"] == sha256_file(tiny_artifact)
    assert printed["inputs"]["clips"][:2] == ["batch", "frames"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    reference = TorchScorer(load(tiny_artifact, "cpu"), precision="fp32")
    rng = np.random.default_rng(0)
    for n in (1, 4):
        clips = rng.integers(0, 256, (n, 20, 112, 112, 3), dtype=np.uint8)
        logits, p_fake = session.run(None, {"clips": clips})
        assert np.allclose(logits, reference.logits(clips), atol=1e-4)
        assert np.allclose(p_fake, reference.score(clips), atol=1e-5)
    artifact, derived = read_onnx_metadata(out)
    assert artifact.name == "tiny-test" and derived.source_sha256 == printed["source_sha256"]
    assert not out.with_name("model.onnx.partial").exists()


def test_export_refuses_an_unknown_format(tiny_artifact: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["model", "export", "--format", "tflite", "--model", str(tiny_artifact),
              str(tmp_path / "m.tflite")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--format must be one of onnx" in result.stderr


def test_derive_makes_a_backends_form_into_the_cache_and_describes_it(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    arguments = ["model", "derive", "--backend", "openvino", "--model", str(tiny_artifact),
                 "--derived-dir", str(tmp_path)]  # fmt: skip
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    described = json.loads(result.stdout)
    sha256 = sha256_file(tiny_artifact)
    assert described["directory"] == str(tmp_path / sha256 / "openvino")
    assert set(described["files"]) == {"model.xml", "model.bin"}
    assert described["metadata"]["source_sha256"] == sha256
    assert described["metadata"]["derived_from"] == "onnx"
    assert (tmp_path / sha256 / "onnx" / "model.onnx").is_file()


def test_derive_int8_calibrates_on_the_face_clips_of_the_videos_given(
    tiny_artifact: Path, tmp_path: Path, synthetic: SyntheticVideos
) -> None:
    videos = tmp_path / "uploads"
    videos.mkdir()
    (videos / "face.mp4").symlink_to(synthetic.moving_face)
    arguments = ["model", "derive", "--backend", "onnxruntime-int8", "--model",
                 str(tiny_artifact), "--derived-dir", str(tmp_path / "derived"),
                 "--calibration-videos", str(videos), "--calibration-clips", "2"]  # fmt: skip
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    calibration = json.loads(result.stdout)["metadata"]["calibration"]
    assert 1 <= calibration["clips"] <= 2
    assert "face.mp4" in calibration["source"] and str(videos) in calibration["source"]


def test_derive_int8_without_calibration_videos_says_how_to_give_them(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    arguments = ["model", "derive", "--backend", "openvino-int8", "--model", str(tiny_artifact),
                 "--derived-dir", str(tmp_path)]  # fmt: skip
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2
    assert "calibration" in result.stderr


@pytest.mark.parametrize(
    ("backend", "message"),
    [("torchscript", "nothing to derive"), ("tensorrt", "--backend must be one of")],
)
def test_derive_refuses_a_backend_without_a_form(
    backend: str, message: str, tiny_artifact: Path, tmp_path: Path
) -> None:
    arguments = ["model", "derive", "--backend", backend, "--model", str(tiny_artifact),
                 "--derived-dir", str(tmp_path)]  # fmt: skip
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2
    assert message in result.stderr


def test_scan_runs_the_cpu_backend_asked_for_and_the_verdict_names_it(
    tiny_artifact: Path, synthetic: SyntheticVideos
) -> None:
    arguments = ["scan", "--model", str(tiny_artifact), "--device", "cpu", "--cpu-backend",
                 "onnxruntime", "--json", str(synthetic.moving_face)]  # fmt: skip
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    verdict = ScreeningVerdict.model_validate_json(result.stdout.splitlines()[0])
    assert verdict.model.backend == "onnxruntime"
    assert verdict.model.sha256 == sha256_file(tiny_artifact)


def test_scan_refuses_an_unknown_cpu_backend(tiny_artifact: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["scan", "--model", str(tiny_artifact), "--cpu-backend", "tensorrt", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "--cpu-backend must be one of" in result.stderr
