"""CPU backends: the same artifact, the same scores (within each kind's tolerance), named."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from detector import backends
from detector.artifact import LoadedModel, load
from detector.backends import (
    INT8_BACKENDS,
    BackendUnavailable,
    LogitScorer,
    build_cpu_scorer,
    cpu_has_native_bf16,
    frozen_logits,
)
from detector.config import AUTO_BACKENDS, CPU_BACKENDS, CpuBackend, CpuInferenceConfig
from detector.derived import CalibrationClips, DerivedCache, derive
from detector.pipeline import build_detector
from detector.scoring import TorchScorer
from tests.support.tiny_model import write_tiny_artifact

FP32_TOLERANCE = 1e-4  # the same network in another runtime
REDUCED_TOLERANCE = 0.02  # int8 and bf16: the per-clip bound


def clips(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 20, 112, 112, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    write_tiny_artifact(path, seed=3, temperature=1.3)
    return load(path, "cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> DerivedCache:
    return DerivedCache(tmp_path_factory.mktemp("derived"))


@pytest.fixture(scope="module")
def calibration() -> CalibrationClips:
    return CalibrationClips(clips(4, seed=21), "four test clips")


def runnable_backends() -> list[CpuBackend]:
    """Every backend but bf16 on CPUs without native bf16 (tested on its own below)."""
    return [b for b in CPU_BACKENDS if b != "torchscript-bf16" or cpu_has_native_bf16()]


@pytest.mark.parametrize("backend", runnable_backends())
def test_every_backend_scores_like_todays_torchscript_path(
    backend: CpuBackend, tiny: LoadedModel, cache: DerivedCache, calibration: CalibrationClips
) -> None:
    batch = clips(5, seed=1)
    expected = TorchScorer(tiny, precision="fp32").score(batch)
    scorer = build_cpu_scorer(
        tiny, backend, cache=cache, max_batch=2, calibration=lambda: calibration
    )
    scores = scorer.score(batch)
    assert scores.dtype == np.float32 and scores.shape == (5,)
    reduced = backend in INT8_BACKENDS or backend == "torchscript-bf16"
    tolerance = REDUCED_TOLERANCE if reduced else FP32_TOLERANCE
    assert np.abs(scores - expected).max() <= tolerance


@pytest.mark.parametrize("backend", runnable_backends())
def test_the_model_info_names_the_backend_and_keeps_the_artifacts_identity(
    backend: CpuBackend, tiny: LoadedModel, cache: DerivedCache, calibration: CalibrationClips
) -> None:
    scorer = build_cpu_scorer(tiny, backend, cache=cache, calibration=lambda: calibration)
    assert scorer.info.backend == backend
    assert scorer.info.model_dump(exclude={"backend"}) == tiny.info.model_dump(exclude={"backend"})
    assert scorer.metadata == tiny.metadata


def test_bf16_runs_only_where_the_cpu_has_native_bf16(
    tiny: LoadedModel, cache: DerivedCache
) -> None:
    if cpu_has_native_bf16():
        scorer = build_cpu_scorer(tiny, "torchscript-bf16", cache=cache)
        assert scorer.info.backend == "torchscript-bf16"
    else:
        with pytest.raises(BackendUnavailable, match="no native bf16"):
            build_cpu_scorer(tiny, "torchscript-bf16", cache=cache)


def test_the_bf16_path_computes_in_bf16_within_the_reduced_tolerance(
    tiny: LoadedModel, cache: DerivedCache
) -> None:
    """What `torchscript-bf16` runs (emulated here when the CPU lacks bf16: slow, but exact)."""
    batch = clips(2, seed=2)
    form = derive(tiny, "torchscript-frozen", cache)
    bf16 = frozen_logits(form, tiny.metadata, bf16=True)(batch)
    fp32 = TorchScorer(tiny, precision="fp32").logits(batch)
    assert not np.array_equal(bf16, fp32)  # it did run in bf16
    assert np.abs(bf16 - fp32).max() < 0.1


def test_scores_apply_the_artifacts_temperature_to_the_runtimes_logits(
    tiny: LoadedModel,
) -> None:
    logits = np.array([-2.0, 0.0, 3.0], dtype=np.float32)
    scorer = LogitScorer(
        tiny.metadata, tiny.info, "onnxruntime", lambda batch: logits[: len(batch)]
    )
    temperature = tiny.metadata.calibration.temperature
    assert np.allclose(scorer.score(clips(3, seed=0)), 1 / (1 + np.exp(-logits / temperature)))


def test_clips_of_the_wrong_shape_are_refused(tiny: LoadedModel, cache: DerivedCache) -> None:
    scorer = build_cpu_scorer(tiny, "onnxruntime", cache=cache)
    with pytest.raises(ValueError, match="clips must be uint8"):
        scorer.score(np.zeros((1, 20, 64, 64, 3), dtype=np.uint8))


def test_an_int8_backend_without_calibration_or_a_cached_form_says_how_to_give_one(
    tiny: LoadedModel, tmp_path: Path
) -> None:
    with pytest.raises(BackendUnavailable, match="CALIBRATION_VIDEOS"):
        build_cpu_scorer(tiny, "openvino-int8", cache=DerivedCache(tmp_path))


def test_every_openvino_scorer_in_a_process_shares_one_core() -> None:
    """One Core, never destroyed: its CPU plugin never unmaps the signal stack it gave a thread
    (the signal test in test_self_calibration.py shows what a Core per scorer did)."""
    made_elsewhere = []
    thread = threading.Thread(target=lambda: made_elsewhere.append(backends.openvino_core()))
    thread.start()
    thread.join()
    assert backends.openvino_core() is backends.openvino_core() is made_elsewhere[0]


def test_a_missing_runtime_makes_its_backend_unavailable(
    tiny: LoadedModel, cache: DerivedCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    derive(tiny, "openvino", cache)  # the form exists; the runtime to run it does not
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setattr(backends, "_openvino_core", None)  # no runtime: no Core was ever made
    with pytest.raises(BackendUnavailable, match="openvino is not installed"):
        build_cpu_scorer(tiny, "openvino", cache=cache)


def test_an_unknown_backend_is_refused(tiny: LoadedModel, cache: DerivedCache) -> None:
    with pytest.raises(ValueError, match="unknown CPU backend"):
        build_cpu_scorer(tiny, "tensorrt", cache=cache)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["torchscript", "onnxruntime", "openvino"])
def test_build_detector_runs_the_configured_cpu_backend(
    backend: CpuBackend, tiny: LoadedModel, tmp_path: Path
) -> None:
    detector = build_detector(
        tiny, cpu=CpuInferenceConfig(backend=backend, derived_dir=tmp_path), batch_wait_s=0.0
    )
    try:
        assert detector.scorer.info.backend == backend
        assert detector.scorer.score(clips(1, seed=5)).shape == (1,)
    finally:
        detector.close()


def test_build_detector_runs_a_batch_on_the_cpu_clips_per_run_at_a_time(
    tiny: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Activation memory grows with the clips a runtime is given at once: a batch of clips
    from many videos is run a few at a time."""
    runs: list[int] = []

    def recording_logits(form: object, threads: int) -> object:
        def logits(batch: np.ndarray) -> np.ndarray:
            runs.append(len(batch))
            return np.zeros(len(batch), dtype=np.float32)

        return logits

    monkeypatch.setattr(backends, "openvino_logits", recording_logits)
    cpu = CpuInferenceConfig(backend="openvino", derived_dir=tmp_path, clips_per_run=3)
    detector = build_detector(tiny, cpu=cpu, batch_size=8, batch_wait_s=0.0)
    try:
        assert detector.scorer.score(clips(7, seed=1)).shape == (7,)
    finally:
        detector.close()
    assert runs == [3, 3, 1]


def test_clips_per_run_is_at_least_one() -> None:
    assert CpuInferenceConfig().clips_per_run == 4
    with pytest.raises(ValueError, match="clips_per_run"):
        CpuInferenceConfig(clips_per_run=0)


def test_auto_is_the_default_cpu_backend() -> None:
    assert CpuInferenceConfig().backend == "auto"
    assert AUTO_BACKENDS == ("openvino-int8", "openvino")
    assert set(AUTO_BACKENDS) <= set(CPU_BACKENDS)


def test_auto_runs_int8_when_calibration_clips_are_given(
    tiny: LoadedModel, calibration: CalibrationClips, tmp_path: Path
) -> None:
    cache = DerivedCache(tmp_path)
    scorer = build_cpu_scorer(tiny, "auto", cache=cache, calibration=lambda: calibration)
    assert scorer.info.backend == "openvino-int8"


def test_auto_runs_int8_when_its_form_is_cached_already(
    tiny: LoadedModel, calibration: CalibrationClips, tmp_path: Path
) -> None:
    cache = DerivedCache(tmp_path)
    derive(tiny, "openvino-int8", cache, lambda: calibration)  # `deepscreen model derive`
    assert build_cpu_scorer(tiny, "auto", cache=cache).info.backend == "openvino-int8"


def test_auto_without_calibration_runs_the_fp32_backend_and_says_so(
    tiny: LoadedModel, tmp_path: Path
) -> None:
    scorer = build_cpu_scorer(tiny, "auto", cache=DerivedCache(tmp_path))
    assert scorer.info.backend == "openvino"
    expected = TorchScorer(tiny, precision="fp32").score(clips(2, seed=9))
    assert np.abs(scorer.score(clips(2, seed=9)) - expected).max() <= FP32_TOLERANCE
