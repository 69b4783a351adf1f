"""Derived forms: made from the artifact, cached by its sha256, saying what they came from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from detector.artifact import LoadedModel, load, sha256_file
from detector.derived import (
    DERIVED_FILE,
    CalibrationClips,
    DerivedCache,
    DerivedError,
    DerivedMetadata,
    calibration_from_videos,
    derive,
    read_onnx_metadata,
    select_calibration,
    write_onnx,
)
from detector.scoring import TorchScorer
from tests.support.tiny_model import write_tiny_artifact


def clips(n: int, seed: int, frames: int = 20) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, frames, 112, 112, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    write_tiny_artifact(path, temperature=1.7)
    return path


@pytest.fixture(scope="module")
def tiny(tiny_artifact: Path) -> LoadedModel:
    return load(tiny_artifact, "cpu")


@pytest.fixture(scope="module")
def calibration() -> CalibrationClips:
    return CalibrationClips(clips(3, seed=11), "three test clips")


def onnx_logits(path: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["logits"], {"clips": batch})[0])


def torch_logits(model: LoadedModel, batch: np.ndarray) -> np.ndarray:
    return TorchScorer(model, precision="fp32").logits(batch)


def test_a_form_is_made_once_per_artifact_and_then_read_from_the_cache(
    tiny: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = DerivedCache(tmp_path)
    made = derive(tiny, "torchscript-frozen", cache)
    assert made.directory == tmp_path / tiny.info.sha256 / "torchscript-frozen"

    def no_rebuild(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached form was made again")

    monkeypatch.setattr(DerivedCache, "put", no_rebuild)
    again = derive(tiny, "torchscript-frozen", cache)
    assert again.metadata == made.metadata


def test_a_form_says_which_artifact_and_tools_it_came_from(
    tiny: LoadedModel, tmp_path: Path
) -> None:
    form = derive(tiny, "onnx", DerivedCache(tmp_path))
    metadata = DerivedMetadata.model_validate_json(form.file(DERIVED_FILE).read_text())
    assert metadata.form == "onnx"
    assert metadata.source_sha256 == tiny.info.sha256
    assert (metadata.source_name, metadata.source_version) == (tiny.info.name, tiny.info.version)
    assert {"torch", "onnx", "onnxruntime"} <= set(metadata.tools)
    assert metadata.calibration is None


def test_an_int8_form_records_its_calibration_clips(
    tiny: LoadedModel, calibration: CalibrationClips, tmp_path: Path
) -> None:
    form = derive(tiny, "onnx-int8", DerivedCache(tmp_path), lambda: calibration)
    assert form.metadata.derived_from == "onnx"
    assert form.metadata.calibration == calibration.summary()
    assert form.metadata.calibration is not None
    assert form.metadata.calibration.clips == 3
    # the fp32 form it was made from is cached beside it
    assert (tmp_path / tiny.info.sha256 / "onnx" / "model.onnx").is_file()


def test_int8_without_calibration_clips_is_refused_with_the_way_to_give_them(
    tiny: LoadedModel, tmp_path: Path
) -> None:
    with pytest.raises(DerivedError, match="DEEPSCREEN_DETECTOR__CALIBRATION_VIDEOS"):
        derive(tiny, "openvino-int8", DerivedCache(tmp_path))


def test_a_cached_form_of_another_artifact_is_not_used(tiny: LoadedModel, tmp_path: Path) -> None:
    cache = DerivedCache(tmp_path)
    form = derive(tiny, "torchscript-frozen", cache)
    other = "0" * 64
    moved = cache.directory(other, "torchscript-frozen")
    moved.parent.mkdir(parents=True)
    form.directory.rename(moved)
    assert cache.get(other, "torchscript-frozen") is None  # its metadata names another sha256
    assert cache.get(tiny.info.sha256, "torchscript-frozen") is None


def test_a_half_written_form_is_not_used(tiny: LoadedModel, tmp_path: Path) -> None:
    cache = DerivedCache(tmp_path)
    form = derive(tiny, "onnx", cache)
    form.file("model.onnx").unlink()
    assert cache.get(tiny.info.sha256, "onnx") is None
    assert derive(tiny, "onnx", cache).file("model.onnx").is_file()  # made again


def test_the_onnx_export_takes_uint8_clips_with_dynamic_batch_and_clip_length(
    tiny: LoadedModel, tiny_artifact: Path, tmp_path: Path
) -> None:
    path = tmp_path / "tiny.onnx"
    write_onnx(tiny, path)
    graph = onnx.load(str(path)).graph
    (clips_input,) = graph.input
    assert clips_input.name == "clips"
    assert clips_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = clips_input.type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[:2]] == ["batch", "frames"]
    assert [d.dim_value for d in dims[2:]] == [112, 112, 3]
    assert [output.name for output in graph.output] == ["logits", "p_fake"]
    artifact, derived = read_onnx_metadata(path)
    assert artifact == tiny.metadata
    assert derived.source_sha256 == sha256_file(tiny_artifact)
    assert derived.form == "onnx" and "onnx" in derived.tools


def test_onnx_runtime_and_torchscript_agree_on_one_clip_and_on_a_batch(
    tiny: LoadedModel, tmp_path: Path
) -> None:
    path = tmp_path / "tiny.onnx"
    write_onnx(tiny, path)
    one, several = clips(1, seed=1), clips(5, seed=2)
    for batch in (one, several):
        assert np.allclose(onnx_logits(path, batch), torch_logits(tiny, batch), atol=1e-4)


def test_the_onnx_export_scores_clips_of_another_length_as_torchscript_does(
    tiny: LoadedModel, tmp_path: Path
) -> None:
    path = tmp_path / "tiny.onnx"
    write_onnx(tiny, path)
    short = clips(2, seed=3, frames=8)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, p_fake = session.run(None, {"clips": short})
    with torch.inference_mode():
        x = torch.from_numpy(short).permute(0, 1, 4, 2, 3).float() / 255
        mean = torch.tensor(tiny.metadata.mean).view(1, 1, 3, 1, 1)
        std = torch.tensor(tiny.metadata.std).view(1, 1, 3, 1, 1)
        expected = tiny.module((x - mean) / std).numpy()
    assert np.allclose(logits, expected, atol=1e-4)
    temperature = tiny.metadata.calibration.temperature
    assert np.allclose(p_fake, 1 / (1 + np.exp(-expected / temperature)), atol=1e-5)


@pytest.mark.slow
def test_the_resnext_onnx_export_agrees_with_torchscript_on_one_clip_and_a_batch(
    reference_model: Path, tmp_path: Path
) -> None:
    model = load(reference_model, "cpu")
    path = tmp_path / "reference.onnx"
    write_onnx(model, path)
    one, several = clips(1, seed=4), clips(3, seed=5)
    for batch in (one, several):
        assert np.allclose(onnx_logits(path, batch), torch_logits(model, batch), atol=1e-3)


def test_calibration_clips_are_spread_over_the_videos() -> None:
    clip = np.zeros((20, 112, 112, 3), dtype=np.uint8)
    by_video = {f"v{i:02}": [clip + i, clip + i + 100] for i in range(10)}
    chosen, sources = select_calibration(by_video, 4)
    assert sources == ["v00", "v03", "v06", "v09"]  # first and last, evenly between
    chosen, sources = select_calibration(by_video, 13)
    assert len(chosen) == 13 and set(sources) == set(by_video)  # every video, then seconds
    assert [int(c[0, 0, 0, 0]) for c in chosen[10:]] == [100, 104, 109]


def test_calibration_clips_come_from_the_faces_the_pipeline_cuts(
    tiny: LoadedModel, synthetic: object
) -> None:
    video = synthetic.moving_face  # type: ignore[attr-defined]
    found = calibration_from_videos([video], tiny.metadata, max_clips=2)
    assert found.pixels.dtype == np.uint8 and found.pixels.shape[1:] == (20, 112, 112, 3)
    assert 1 <= len(found.pixels) <= 2
    assert video.name in found.source


def test_calibration_without_any_face_is_refused(tiny: LoadedModel, synthetic: object) -> None:
    with pytest.raises(DerivedError, match="no face clip"):
        calibration_from_videos(
            [synthetic.no_face],  # type: ignore[attr-defined]
            tiny.metadata,
            max_clips=2,
        )


def test_openvino_runs_and_converts_without_its_usage_telemetry(tmp_path: Path) -> None:
    """Importing `openvino` and converting a model report to Intel unless a consent file says
    no; the detector's processes (the service's, and the one that makes int8 forms while it
    screens) make no network request of their own."""
    code = (
        "import sys; from pathlib import Path; import torch;"
        " from tests.support.tiny_model import write_tiny_artifact;"
        " from detector.artifact import load; from detector.derived import DerivedCache, derive;"
        " path = Path(sys.argv[1]) / 'tiny.pt'; write_tiny_artifact(path);"
        " derive(load(path, 'cpu'), 'openvino', DerivedCache(Path(sys.argv[1]) / 'derived'));"
        " import openvino.tools.ovc.telemetry_utils as used;"
        " print(used.tm.__name__, sys.modules.get('openvino_telemetry'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert done.stdout.split() == ["openvino.tools.ovc.telemetry_stub", "None"]
