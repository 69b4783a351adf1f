"""The model on the CPU: one `ClipScorer` per backend, behind `build_cpu_scorer`.

Every backend scores the same artifact, in its own form (`detector.derived`):

| backend | runs |
|---|---|
| `torchscript` | the artifact's module as loaded (`TorchScorer`): the reference |
| `torchscript-frozen` | the frozen module, oneDNN-fused at load (`optimize_for_inference`) |
| `torchscript-bf16` | the frozen module under bf16 autocast (CPUs with native bf16 only) |
| `torchscript-int8` | the int8-quantised module (x86 backend) |
| `onnxruntime`, `onnxruntime-int8` | the ONNX form (fp32, or QDQ int8) in ONNX Runtime |
| `openvino`, `openvino-int8` | the OpenVINO IR (fp32, or int8) in OpenVINO |

All of them take the scorer's input (uint8 clips), give logits, and turn them into P(fake)
with the artifact's temperature in one place (`LogitScorer.score`), so they differ only in
how the network runs. The verdict's `model.backend` names the one used. ONNX Runtime and
OpenVINO run with as many threads as torch (`torch.get_num_threads()`) unless told.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from detector.arrays import Clips, Scores
from detector.artifact import LoadedModel
from detector.config import (
    AUTO_BACKENDS,
    CPU_BACKENDS,
    BatchingConfig,
    CpuBackend,
    CpuBackendChoice,
)
from detector.derived import (
    ONNX_INPUT,
    QUANTISED_ENGINE,
    CalibrationSource,
    DerivedCache,
    DerivedError,
    DerivedForm,
    DerivedFormName,
    derive,
)
from detector.scoring import ClipScorer, TorchScorer, check_clips, normalisation_tensors, normalise
from schemas.model import ModelInfo, ModelMetadata

# The derived form each backend runs (`torchscript` runs the artifact itself).
BACKEND_FORMS: dict[CpuBackend, DerivedFormName | None] = {
    "torchscript": None,
    "torchscript-frozen": "torchscript-frozen",
    "torchscript-bf16": "torchscript-frozen",
    "torchscript-int8": "torchscript-int8",
    "onnxruntime": "onnx",
    "onnxruntime-int8": "onnx-int8",
    "openvino": "openvino",
    "openvino-int8": "openvino-int8",
}
INT8_BACKENDS: frozenset[CpuBackend] = frozenset(
    {"torchscript-int8", "onnxruntime-int8", "openvino-int8"}
)


class BackendUnavailable(RuntimeError):
    """This backend cannot run here: its runtime is missing, the CPU lacks what it needs, or
    its derived form cannot be made (e.g. int8 without calibration clips)."""


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (AVX512-BF16 or AMX); else it emulates them."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class LogitScorer:
    """A `ClipScorer` over a function from uint8 clips to logits: batching, temperature."""

    def __init__(
        self,
        metadata: ModelMetadata,
        info: ModelInfo,
        backend: CpuBackend,
        logits: Callable[[Clips], Scores],
        max_batch: int = BatchingConfig.batch_size,
    ) -> None:
        self._metadata = metadata
        self._info = info.model_copy(update={"backend": backend})
        self._logits = logits
        self._max_batch = max_batch
        self._temperature = metadata.calibration.temperature
        self.backend = backend

    @property
    def metadata(self) -> ModelMetadata:
        return self._metadata

    @property
    def info(self) -> ModelInfo:
        return self._info

    def score(self, clips: Clips) -> Scores:
        logits = self.logits(clips).astype(np.float64)
        return np.asarray(1.0 / (1.0 + np.exp(-logits / self._temperature)), dtype=np.float32)

    def logits(self, clips: Clips) -> Scores:
        """Uncalibrated logits, `max_batch` clips a call."""
        check_clips(clips, self._metadata)
        parts = [
            np.asarray(self._logits(clips[i : i + self._max_batch]), dtype=np.float32).reshape(-1)
            for i in range(0, len(clips), self._max_batch)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def close(self) -> None:
        pass  # runtimes free their sessions with the scorer


# ---------------------------------------------------------------------------- TorchScript --


def frozen_logits(
    form: DerivedForm, metadata: ModelMetadata, *, bf16: bool = False
) -> Callable[[Clips], Scores]:
    """The frozen module: oneDNN-fused (fp32), or under CPU bf16 autocast."""
    module = torch.jit.load(str(form.file("model.pt")), map_location="cpu")  # type: ignore[no-untyped-call]
    if not bf16:
        # Fuses convolution, batch norm and activation into oneDNN kernels with prepacked
        # channels-last weights: specific to this CPU, so done here rather than cached.
        module = torch.jit.optimize_for_inference(module)
    mean, std = normalisation_tensors(metadata, torch.device("cpu"))

    def logits(clips: Clips) -> Scores:
        with torch.inference_mode():
            # The module itself lays each frame out channels-last for its convolutions.
            x = normalise(torch.from_numpy(np.ascontiguousarray(clips)), mean, std)
            if bf16:
                with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
                    out = module(x)
            else:
                out = module(x)
            return np.asarray(out.float().numpy(), dtype=np.float32)

    return logits


def quantised_logits(form: DerivedForm, metadata: ModelMetadata) -> Callable[[Clips], Scores]:
    """The int8 module (x86 backend): normalised float in, its quantised backbone inside."""
    torch.backends.quantized.engine = QUANTISED_ENGINE
    module = torch.jit.load(str(form.file("model.pt")), map_location="cpu")  # type: ignore[no-untyped-call]
    mean, std = normalisation_tensors(metadata, torch.device("cpu"))

    def logits(clips: Clips) -> Scores:
        with torch.inference_mode():
            out = module(normalise(torch.from_numpy(np.ascontiguousarray(clips)), mean, std))
            return np.asarray(out.numpy(), dtype=np.float32)

    return logits


# ------------------------------------------------------------------ ONNX Runtime, OpenVINO --


def onnxruntime_logits(form: DerivedForm, threads: int) -> Callable[[Clips], Scores]:
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise BackendUnavailable(f"onnxruntime is not installed ({error})") from error
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # one batch at a time: the batcher calls from one thread
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(
        str(form.file("model.onnx")), options, providers=["CPUExecutionProvider"]
    )

    def logits(clips: Clips) -> Scores:
        out = session.run(["logits"], {ONNX_INPUT: np.ascontiguousarray(clips)})
        return np.asarray(out[0], dtype=np.float32)

    return logits


def openvino_logits(form: DerivedForm, threads: int) -> Callable[[Clips], Scores]:
    try:
        import openvino as ov
    except ImportError as error:
        raise BackendUnavailable(f"openvino is not installed ({error})") from error
    config: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": threads,
        # fp32 arithmetic even where OpenVINO would pick bf16 by itself (CPUs with AMX):
        # the int8 form's int8 parts stay int8.
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
    }
    compiled = ov.Core().compile_model(str(form.file("model.xml")), "CPU", config)
    request = compiled.create_infer_request()
    output = compiled.output("logits")

    def logits(clips: Clips) -> Scores:
        result = request.infer({ONNX_INPUT: np.ascontiguousarray(clips)})
        return np.array(result[output], dtype=np.float32)  # a copy: the request reuses its buffer

    return logits


# -------------------------------------------------------------------------------- factory --


def resolve_auto(
    model: LoadedModel, cache: DerivedCache, calibration: CalibrationSource | None
) -> CpuBackend:
    """What `auto` runs: int8 where its form is cached or can be calibrated, else fp32.

    An int8 form cannot be made without calibration clips, and the service must start with
    no configuration, so without them `auto` runs the fastest fp32 backend that agrees; the
    verdict's `model.backend` says which ran.
    """
    int8, fp32 = AUTO_BACKENDS
    form = BACKEND_FORMS[int8]
    assert form is not None
    if calibration is not None or cache.get(model.info.sha256, form) is not None:
        return int8
    return fp32


def build_cpu_scorer(
    model: LoadedModel,
    backend: CpuBackendChoice,
    *,
    cache: DerivedCache,
    max_batch: int = BatchingConfig.batch_size,
    calibration: CalibrationSource | None = None,
    threads: int | None = None,
) -> ClipScorer:
    """A scorer of `model` (loaded on the CPU) running on `backend`.

    The backend's derived form comes from `cache` or is made now; an int8 form that is not
    cached is calibrated on `calibration`; `auto` is resolved by `resolve_auto`.
    `BackendUnavailable` says why a backend cannot run.
    """
    if backend == "auto":
        backend = resolve_auto(model, cache, calibration)
    if backend not in CPU_BACKENDS:
        choices = ", ".join(("auto", *CPU_BACKENDS))
        raise ValueError(f"unknown CPU backend {backend!r}; choose one of {choices}")
    if model.device.type != "cpu":
        raise ValueError(f"CPU backends run a model loaded on the CPU, not on {model.device}")
    if backend == "torchscript":
        return TorchScorer(model, max_batch=max_batch, precision="fp32")
    if backend == "torchscript-bf16" and not cpu_has_native_bf16():
        raise BackendUnavailable(
            "torchscript-bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); emulated bf16 "
            "is several times slower than fp32"
        )
    form_name = BACKEND_FORMS[backend]
    assert form_name is not None
    try:
        form = derive(model, form_name, cache, calibration)
    except (DerivedError, ImportError) as error:
        raise BackendUnavailable(f"{backend}: {error}") from error
    threads = threads or torch.get_num_threads()
    metadata = model.metadata
    logits: Callable[[Clips], Scores]
    if backend in ("torchscript-frozen", "torchscript-bf16"):
        logits = frozen_logits(form, metadata, bf16=backend == "torchscript-bf16")
    elif backend == "torchscript-int8":
        logits = quantised_logits(form, metadata)
    elif backend in ("onnxruntime", "onnxruntime-int8"):
        logits = onnxruntime_logits(form, threads)
    else:
        logits = openvino_logits(form, threads)
    return LogitScorer(metadata, model.info, backend, logits, max_batch)
