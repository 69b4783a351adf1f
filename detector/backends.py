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

import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import structlog
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
    CalibrationClips,
    CalibrationSource,
    DerivedCache,
    DerivedError,
    DerivedForm,
    DerivedFormName,
    derive,
    import_openvino,
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
log = structlog.get_logger("deepscreen")


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


_openvino_core: Any = None
_openvino_core_lock = threading.Lock()


def openvino_core() -> Any:
    """The process's one OpenVINO `Core`, made on first use and kept until the process exits.

    OpenVINO's CPU plugin, made with each `Core`, gives the thread that makes it a signal
    stack of its own (`sigaltstack`) and unmaps that stack when the plugin is destroyed, from
    whichever thread lets go of it last. With a `Core` per scorer, self-calibration let go of
    the fp32 scorer on its own thread: the thread that had built it was left pointing at an
    unmapped signal stack, and the next signal with a handler there (SIGTERM, whose handler
    Python installs to run on that stack) killed the process with SIGSEGV instead of
    draining it. A `Core` that is never destroyed never unmaps the stack it set.
    """
    global _openvino_core
    # A lock, not functools.cache: two racing first calls would make two Cores, one then freed.
    with _openvino_core_lock:
        if _openvino_core is None:
            try:
                ov = import_openvino()
            except ImportError as error:
                raise BackendUnavailable(f"openvino is not installed ({error})") from error
            _openvino_core = ov.Core()
        return _openvino_core


def openvino_logits(form: DerivedForm, threads: int) -> Callable[[Clips], Scores]:
    core = openvino_core()
    config: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": threads,
        # fp32 arithmetic even where OpenVINO would pick bf16 by itself (CPUs with AMX):
        # the int8 form's int8 parts stay int8.
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
    }
    compiled = core.compile_model(str(form.file("model.xml")), "CPU", config)
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


class SelfCalibratingScorer:
    """`auto` with no int8 form yet: fp32 first, int8 once the replica has seen enough faces.

    An int8 form needs calibration clips like the uploads (activation ranges set on random
    pixels would be wrong for faces), and the service must start without any. So this
    scores with the fp32 scorer while it keeps a copy of the first `clips` face clips it
    is given; then a thread has the int8 form made from them in a child process
    (`derive_in_child`; stored in the derived cache under the artifact's sha256, so the
    next start runs int8 at once) and it scores with it from the next call on. If the
    int8 form cannot be made, fp32 stays (a warning says why). `info.backend` names the
    scorer in use; a verdict finished while the swap happens may name the new one for clips
    the old one scored (they agree within the int8 rule: `python -m bench.backends`).
    """

    def __init__(
        self,
        fp32: ClipScorer,
        make_int8: Callable[[CalibrationClips], ClipScorer],
        *,
        clips: int,
    ) -> None:
        self._scorer = fp32
        self._make_int8 = make_int8
        self._wanted = clips
        self._kept: list[Clips] = []
        self._count = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def metadata(self) -> ModelMetadata:
        return self._scorer.metadata

    @property
    def info(self) -> ModelInfo:
        return self._scorer.info

    @property
    def calibrating(self) -> bool:
        """Still keeping clips, or making the int8 form."""
        with self._lock:
            return self._thread is None or self._thread.is_alive()

    def score(self, clips: Clips) -> Scores:
        with self._lock:
            scorer = self._scorer
            if self._thread is None and len(clips):
                self._keep(clips)
        return scorer.score(clips)

    def _keep(self, clips: Clips) -> None:
        """(Under the lock.) Copy clips until enough, then start making the int8 form."""
        room = self._wanted - self._count
        taken = np.array(clips[:room], copy=True)
        self._kept.append(taken)
        self._count += len(taken)
        if self._count < self._wanted:
            return
        found = CalibrationClips(
            np.concatenate(self._kept),
            f"the first {self._count} face clips this process scored (self-calibration)",
        )
        self._kept = []
        self._thread = threading.Thread(
            target=self._calibrate, args=(found,), name="int8-calibration", daemon=True
        )
        self._thread.start()

    def _calibrate(self, found: CalibrationClips) -> None:
        try:
            int8 = self._make_int8(found)
        except Exception as error:  # a model the converter refuses: fp32 is still right
            log.warning("self_calibration_failed", error=f"{type(error).__name__}: {error}",
                        backend=self._scorer.info.backend)  # fmt: skip
            return
        with self._lock:
            if self._closed:
                int8.close()
                return
            fp32, self._scorer = self._scorer, int8
        # fp32 is not closed: the batcher may be scoring with it right now (it goes with
        # its last reference).
        log.info("self_calibrated", backend=int8.info.backend, replaced=fp32.info.backend,
                 clips=len(found.pixels))  # fmt: skip

    def close(self) -> None:
        with self._lock:
            self._closed = True
            scorer = self._scorer
        scorer.close()


def derive_in_child(
    model: LoadedModel, form: DerivedFormName, cache: DerivedCache, found: CalibrationClips
) -> None:
    """Make `form` into `cache` in a Python process of its own, calibrated on `found`.

    Exporting and quantising briefly take more than a GiB beyond what scoring needs; in a
    child that memory is given back when it exits instead of staying in the service's heap.
    A plain interpreter (not `multiprocessing`) runs it, with the job in files, so that
    nothing of this process (threads, handlers, the resource tracker) is shared.
    """
    with tempfile.TemporaryDirectory(prefix="deepscreen-derive-") as scratch:
        job = Path(scratch)
        torch.jit.save(model.module, str(job / "model.pt"))
        (job / "metadata.json").write_text(model.metadata.model_dump_json())
        (job / "info.json").write_text(model.info.model_dump_json())
        np.save(job / "calibration.npy", found.pixels)
        (job / "source.txt").write_text(found.source)
        code = "import sys; from detector.backends import derive_job; derive_job(*sys.argv[1:])"
        done = subprocess.run(
            [sys.executable, "-c", code, str(job), form, str(cache.root)], check=False
        )
    if done.returncode != 0:  # its traceback went to stderr
        raise DerivedError(f"making the {form} form failed (exit code {done.returncode})")


def derive_job(job: str, form: str, root: str) -> None:
    """The child's side of `derive_in_child`."""
    files = Path(job)
    loaded = torch.jit.load(str(files / "model.pt"), map_location="cpu")  # type: ignore[no-untyped-call]
    model = LoadedModel(
        loaded.float().eval(),
        ModelMetadata.model_validate_json((files / "metadata.json").read_text()),
        ModelInfo.model_validate_json((files / "info.json").read_text()),
        torch.device("cpu"),
    )
    found = CalibrationClips(np.load(files / "calibration.npy"), (files / "source.txt").read_text())
    name = next(f for f in BACKEND_FORMS.values() if f == form)
    assert name is not None
    derive(model, name, DerivedCache(Path(root)), lambda: found)


def build_cpu_scorer(
    model: LoadedModel,
    backend: CpuBackendChoice,
    *,
    cache: DerivedCache,
    max_batch: int = BatchingConfig.batch_size,
    calibration: CalibrationSource | None = None,
    threads: int | None = None,
    self_calibration_clips: int = 0,
) -> ClipScorer:
    """A scorer of `model` (loaded on the CPU) running on `backend`.

    The backend's derived form comes from `cache` or is made now; an int8 form that is not
    cached is calibrated on `calibration`; `auto` is resolved by `resolve_auto`. Where
    `auto` has no int8 form and nothing to calibrate one on, with `self_calibration_clips`
    it starts on fp32 and calibrates the int8 form on the first that many face clips it
    scores (`SelfCalibratingScorer`). `BackendUnavailable` says why a backend cannot run.
    """
    if backend == "auto":
        resolved = resolve_auto(model, cache, calibration)
        scorer = build_cpu_scorer(
            model, resolved, cache=cache, max_batch=max_batch, calibration=calibration,
            threads=threads,
        )  # fmt: skip
        if resolved in INT8_BACKENDS or self_calibration_clips < 1:
            return scorer
        int8 = AUTO_BACKENDS[0]

        def make_int8(found: CalibrationClips) -> ClipScorer:
            form = BACKEND_FORMS[int8]
            assert form is not None
            derive_in_child(model, form, cache, found)
            return build_cpu_scorer(model, int8, cache=cache, max_batch=max_batch,
                                    threads=threads)  # fmt: skip

        return SelfCalibratingScorer(scorer, make_int8, clips=self_calibration_clips)
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
