"""Forms derived from a model artifact for the CPU: frozen, int8-quantised, ONNX, OpenVINO.

The TorchScript artifact stays the contract; every other form is made from it, here, and
says what it came from (`DerivedMetadata`: the artifact's sha256, the form, the versions of
the tools that made it and, for int8, the calibration clips). `DerivedCache` keeps them on
disk under the artifact's sha256, so a form is made once per artifact and machine, at load
(`detector.backends`) or ahead of it (`deepscreen model derive`).

Forms and what they are made from:

- `torchscript-frozen`: `torch.jit.freeze` of the artifact's module (weights become
  constants). oneDNN fusion (`torch.jit.optimize_for_inference`) is applied at load: it
  depends on the CPU it runs on.
- `torchscript-int8`: post-training static quantisation of the CNN backbone with the x86
  backend (FBGEMM + oneDNN), TorchScript graph mode (`quantize_jit`); the LSTM and the head
  stay fp32.
- `onnx`: the artifact's module behind the input normalisation, as ONNX (opset 17) taking
  uint8 clips (N, T, H, W, 3) with dynamic N and T; outputs `logits` and `p_fake`
  (= sigmoid(logits / the artifact's temperature)). `deepscreen model export` writes it.
- `onnx-int8`: `onnx` with its convolutions quantised by ONNX Runtime (static, QDQ format,
  per-channel int8 weights in 7 bits so that CPUs without VNNI do not saturate, uint8
  activations, min-max calibration). LSTM and head stay fp32.
- `openvino`, `openvino-int8`: OpenVINO IR converted from `onnx` and `onnx-int8` (OpenVINO
  runs the QDQ convolutions in int8).

Calibration needs representative inputs: real face clips, cut by the service's own pipeline
from videos the operator gives (`calibration_from_videos`). Random pixels would set the
activation ranges of a face model wrongly.

This module is on the serving path: it never imports torchvision or the training lifecycle.
ONNX, ONNX Runtime and OpenVINO are imported only when a form that needs them is made.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from pathlib import Path
from types import ModuleType
from typing import Literal, get_args

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from detector.arrays import Clips
from detector.artifact import LoadedModel
from detector.config import DetectorConfig
from detector.scoring import normalisation_tensors, normalise
from schemas.model import METADATA_FILE, ModelMetadata

DerivedFormName = Literal[
    "torchscript-frozen",
    "torchscript-int8",
    "onnx",
    "onnx-int8",
    "openvino",
    "openvino-int8",
]
DERIVED_FORMS: tuple[DerivedFormName, ...] = get_args(DerivedFormName)
INT8_FORMS: frozenset[DerivedFormName] = frozenset(
    {"torchscript-int8", "onnx-int8", "openvino-int8"}
)
DERIVED_FILE = "derived.json"  # in every form's directory, and inside its files where they can
DERIVED_EXTRA = "deepscreen-derived.json"  # the TorchScript extra file / ONNX metadata key
ONNX_OPSET = 17
ONNX_INPUT = "clips"
ONNX_OUTPUTS = ("logits", "p_fake")
# The files each form consists of, inside its directory.
FORM_FILES: dict[DerivedFormName, tuple[str, ...]] = {
    "torchscript-frozen": ("model.pt",),
    "torchscript-int8": ("model.pt",),
    "onnx": ("model.onnx",),
    "onnx-int8": ("model.onnx",),
    "openvino": ("model.xml", "model.bin"),
    "openvino-int8": ("model.xml", "model.bin"),
}
_TOOLS = ("torch", "onnx", "onnxruntime", "openvino")


class DerivedError(RuntimeError):
    """A derived form cannot be made or read (a missing tool, no calibration clips, ...)."""


class CalibrationSummary(BaseModel):
    """The clips an int8 form was calibrated on: how many, their digest, where from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clips: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source: str = Field(max_length=2048)


class DerivedMetadata(BaseModel):
    """What a derived form is and what it came from (`derived.json`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    form: DerivedFormName
    source_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source_name: str
    source_version: str
    derived_from: DerivedFormName | None = Field(
        default=None, description="the form this one was made from (openvino from onnx, ...)"
    )
    tools: dict[str, str] = Field(description="package → version of what made the form")
    calibration: CalibrationSummary | None = None
    created_at: datetime
    machine: str = Field(description="the CPU it was made on (int8 choices may depend on it)")


@dataclass(frozen=True)
class DerivedForm:
    """A derived form on disk: its directory and its metadata."""

    directory: Path
    metadata: DerivedMetadata

    def file(self, name: str) -> Path:
        return self.directory / name


@dataclass(frozen=True)
class CalibrationClips:
    """uint8 face clips (N, T, S, S, 3) that set int8 activation ranges, and their origin."""

    pixels: Clips
    source: str

    def summary(self) -> CalibrationSummary:
        digest = hashlib.sha256(np.ascontiguousarray(self.pixels).tobytes()).hexdigest()
        return CalibrationSummary(clips=len(self.pixels), sha256=digest, source=self.source)


CalibrationSource = Callable[[], CalibrationClips]


def import_openvino() -> ModuleType:
    """`openvino`, with its usage telemetry left out.

    Importing `openvino` reports the import to Intel (Google Analytics), and converting a
    model reports the conversion, unless a consent file in the home directory says no;
    screening makes no network request of its own. `openvino`'s importers of
    `openvino_telemetry` fall back to their own stub when it cannot be imported, so it is
    made unimportable in this process before `openvino` is first imported.
    """
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    import openvino  # noqa: F401

    return sys.modules["openvino"]


def tool_versions() -> dict[str, str]:
    """Installed versions of the tools that make and run derived forms (absent ones left out)."""
    versions: dict[str, str] = {}
    for name in _TOOLS:
        try:
            versions[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            continue
    return versions


class DerivedCache:
    """Derived forms under `root/<artifact sha256>/<form>/`, each made once and reused.

    A form is built in a temporary directory beside its place and renamed into it, so a
    reader never sees half a form; two processes building the same form at once both
    succeed and the first rename wins.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def directory(self, sha256: str, form: DerivedFormName) -> Path:
        return self.root / sha256 / form

    def get(self, sha256: str, form: DerivedFormName) -> DerivedForm | None:
        """The cached form, or None when it is absent or does not describe itself correctly."""
        directory = self.directory(sha256, form)
        try:
            metadata = DerivedMetadata.model_validate_json((directory / DERIVED_FILE).read_bytes())
        except (OSError, ValidationError):
            return None
        if metadata.source_sha256 != sha256 or metadata.form != form:
            return None
        if not all((directory / name).is_file() for name in FORM_FILES[form]):
            return None
        return DerivedForm(directory, metadata)

    def put(
        self, sha256: str, form: DerivedFormName, build: Callable[[Path], DerivedMetadata]
    ) -> DerivedForm:
        """Run `build(directory)` in a scratch directory and move the result into place."""
        final = self.directory(sha256, form)
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{form}-", dir=final.parent))
        try:
            metadata = build(scratch)
            (scratch / DERIVED_FILE).write_text(metadata.model_dump_json(indent=2) + "\n")
            try:
                scratch.rename(final)
            except OSError:
                if self.get(sha256, form) is None:  # not another builder's finished form
                    shutil.rmtree(final, ignore_errors=True)
                    scratch.rename(final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        found = self.get(sha256, form)
        if found is None:
            raise DerivedError(f"{final}: the {form} form just written does not read back")
        return found


def derive(
    model: LoadedModel,
    form: DerivedFormName,
    cache: DerivedCache,
    calibration: CalibrationSource | None = None,
) -> DerivedForm:
    """The `form` of `model`'s artifact: from `cache`, or made now (and the forms it needs).

    An int8 form not yet in the cache needs `calibration`; without it, `DerivedError`.
    """
    sha256 = model.info.sha256
    found = cache.get(sha256, form)
    if found is not None:
        return found
    if form in INT8_FORMS and calibration is None:
        raise DerivedError(
            f"the {form} form of {model.info.name} ({sha256[:12]}) is not in {cache.root} and "
            "int8 needs calibration clips: set DEEPSCREEN_DETECTOR__CALIBRATION_VIDEOS to a "
            "directory of videos like your uploads, or run `deepscreen model derive`"
        )
    if form == "torchscript-frozen":
        return cache.put(sha256, form, lambda out: write_frozen(model, out / "model.pt"))
    if form == "torchscript-int8":
        assert calibration is not None
        clips = calibration()
        return cache.put(sha256, form, lambda out: write_torch_int8(model, clips, out / "model.pt"))
    if form == "onnx":
        return cache.put(sha256, form, lambda out: write_onnx(model, out / "model.onnx"))
    if form == "onnx-int8":
        fp32 = derive(model, "onnx", cache)
        assert calibration is not None
        clips = calibration()
        return cache.put(sha256, form, lambda out: write_onnx_int8(fp32, clips, out / "model.onnx"))
    source: DerivedFormName = "onnx-int8" if form == "openvino-int8" else "onnx"
    onnx_form = derive(model, source, cache, calibration)
    return cache.put(sha256, form, lambda out: write_openvino(onnx_form, form, out / "model.xml"))


def _metadata(
    model: LoadedModel,
    form: DerivedFormName,
    *,
    derived_from: DerivedFormName | None = None,
    calibration: CalibrationSummary | None = None,
) -> DerivedMetadata:
    return DerivedMetadata(
        form=form,
        source_sha256=model.info.sha256,
        source_name=model.info.name,
        source_version=model.info.version,
        derived_from=derived_from,
        tools=tool_versions(),
        calibration=calibration,
        created_at=datetime.now(UTC),
        machine=cpu_name(),
    )


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def _cpu_module(model: LoadedModel) -> torch.jit.ScriptModule:
    if model.device.type != "cpu":
        raise DerivedError(f"derived forms are made from a model on the CPU, not {model.device}")
    return model.module


def _extra_files(model: LoadedModel, derived: DerivedMetadata) -> dict[str, str]:
    return {
        METADATA_FILE: model.metadata.model_dump_json(),
        DERIVED_EXTRA: derived.model_dump_json(),
    }


# ------------------------------------------------------------------------ TorchScript --


def write_frozen(model: LoadedModel, path: Path) -> DerivedMetadata:
    """`torch.jit.freeze` of the artifact's module, with both metadata as extra files."""
    metadata = _metadata(model, "torchscript-frozen")
    with _quiet_torch():
        frozen = torch.jit.freeze(_cpu_module(model).eval())
        torch.jit.save(frozen, str(path), _extra_files=_extra_files(model, metadata))
    return metadata


QUANTISED_ENGINE = "x86"  # FBGEMM for convolutions and linear layers, oneDNN where it is faster


def write_torch_int8(model: LoadedModel, clips: CalibrationClips, path: Path) -> DerivedMetadata:
    """Static int8 of the backbone (x86 backend, TorchScript graph mode), calibrated on `clips`.

    The LSTM and the head stay fp32: they are a small share of the work, and the head's
    single logit is what the thresholds are read against.
    """
    from torch.ao.quantization import get_default_qconfig, quantize_jit

    metadata = _metadata(model, "torchscript-int8", calibration=clips.summary())
    torch.backends.quantized.engine = QUANTISED_ENGINE
    mean, std = normalisation_tensors(model.metadata, torch.device("cpu"))
    batches = [
        normalise(torch.from_numpy(np.ascontiguousarray(clips.pixels[i : i + 4])), mean, std)
        for i in range(0, len(clips.pixels), 4)
    ]

    def calibrate(module: torch.jit.ScriptModule, inputs: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for batch in inputs:
                module(batch)

    with _quiet_torch():
        quantised = quantize_jit(  # type: ignore[no-untyped-call]
            _cpu_module(model).eval(),
            {"backbone": get_default_qconfig(QUANTISED_ENGINE)},  # type: ignore[no-untyped-call]
            calibrate,
            [batches],
            inplace=False,
        )
        torch.jit.save(quantised, str(path), _extra_files=_extra_files(model, metadata))
    return metadata


# -------------------------------------------------------------------------------- ONNX --


class UInt8ClipClassifier(torch.nn.Module):
    """The artifact's module behind the scorer's normalisation: uint8 clips in, logits out.

    What the exported ONNX model computes, so that an edge runtime needs nothing but it:
    (N, T, H, W, 3) uint8 RGB → (`logits`, `p_fake` = sigmoid(logits / temperature)).
    """

    def __init__(self, module: torch.jit.ScriptModule, metadata: ModelMetadata) -> None:
        super().__init__()
        self.module = module
        mean, std = normalisation_tensors(metadata, torch.device("cpu"))
        self.mean = mean  # constants of the exported graph
        self.std = std
        self.temperature = float(metadata.calibration.temperature)

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.module(normalise(clips, self.mean, self.std))
        return logits, torch.sigmoid(logits / self.temperature)


def write_onnx(model: LoadedModel, path: Path) -> DerivedMetadata:
    """The artifact as ONNX: uint8 clips with dynamic batch and clip length; metadata inside."""
    import onnx

    metadata = _metadata(model, "onnx")
    wrapper = torch.jit.script(UInt8ClipClassifier(_cpu_module(model), model.metadata).eval())
    size = model.metadata.input_size
    example = torch.zeros((1, model.metadata.clip_length, size, size, 3), dtype=torch.uint8)
    with _quiet_torch(), tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        raw = Path(scratch) / "raw.onnx"
        # The TorchScript exporter: it takes the scripted module as it is, which the
        # torch.export-based one cannot.
        torch.onnx.export(
            wrapper,
            (example,),
            str(raw),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[ONNX_INPUT],
            output_names=list(ONNX_OUTPUTS),
            dynamic_axes={
                ONNX_INPUT: {0: "batch", 1: "frames"},
                **{name: {0: "batch"} for name in ONNX_OUTPUTS},
            },
        )
        proto = onnx.load(str(raw))
    _set_onnx_metadata(proto, model.metadata, metadata)
    onnx.save(proto, str(path))
    return metadata


def _set_onnx_metadata(proto: object, source: ModelMetadata, derived: DerivedMetadata) -> None:
    import onnx

    assert isinstance(proto, onnx.ModelProto)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(
        proto, {METADATA_FILE: source.model_dump_json(), DERIVED_EXTRA: derived.model_dump_json()}
    )
    proto.producer_name = "deepscreen"
    proto.doc_string = (
        f"{source.name} {source.version} (sha256 {derived.source_sha256}): uint8 clips "
        f"(batch, frames, {source.input_size}, {source.input_size}, 3) RGB → logits, p_fake"
    )


def read_onnx_metadata(path: Path) -> tuple[ModelMetadata, DerivedMetadata]:
    """The artifact metadata and the derived metadata stored inside an exported ONNX file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    props = {entry.key: entry.value for entry in proto.metadata_props}
    try:
        return (
            ModelMetadata.model_validate_json(props[METADATA_FILE]),
            DerivedMetadata.model_validate_json(props[DERIVED_EXTRA]),
        )
    except (KeyError, ValidationError) as error:
        raise DerivedError(f"{path}: not an ONNX model exported by deepscreen ({error})") from error


class _ClipsReader:
    """ONNX Runtime's calibration data reader, read one clip at a time.

    With `CalibStridedMinMax` = 1 ONNX Runtime asks for one clip (`set_range`), records the
    activations it gives and folds them into the running min/max before the next: memory
    holds one clip's activations rather than every clip's.
    """

    def __init__(self, clips: Clips) -> None:
        self._clips = clips
        self._pending: Iterator[int] = iter(())

    def __len__(self) -> int:
        return len(self._clips)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = iter(range(start_index, min(end_index, len(self._clips))))

    def get_next(self) -> dict[str, Clips] | None:
        index = next(self._pending, None)
        if index is None:
            return None
        return {ONNX_INPUT: np.ascontiguousarray(self._clips[index : index + 1])}


def write_onnx_int8(fp32: DerivedForm, clips: CalibrationClips, path: Path) -> DerivedMetadata:
    """`fp32`'s convolutions quantised statically by ONNX Runtime, calibrated on `clips`."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = fp32.metadata
    metadata = source.model_copy(
        update={
            "form": "onnx-int8",
            "derived_from": "onnx",
            "tools": tool_versions(),
            "calibration": clips.summary(),
            "created_at": datetime.now(UTC),
            "machine": cpu_name(),
        }
    )
    reader = _ClipsReader(clips.pixels)  # duck-typed: ONNX Runtime calls only these methods
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # Shape inference and graph clean-up (batch norms folded) before quantising.
        quant_pre_process(str(fp32.file("model.onnx")), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(path),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            reduce_range=True,  # 7-bit weights: no saturation on CPUs without VNNI
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            extra_options={"CalibStridedMinMax": 1},
        )
    artifact, _ = read_onnx_metadata(fp32.file("model.onnx"))
    proto = onnx.load(str(path))
    _set_onnx_metadata(proto, artifact, metadata)
    onnx.save(proto, str(path))
    return metadata


# ---------------------------------------------------------------------------- OpenVINO --


def write_openvino(onnx_form: DerivedForm, form: DerivedFormName, path: Path) -> DerivedMetadata:
    """OpenVINO IR (`.xml` + `.bin`, fp32 weights) converted from an ONNX form."""
    ov = import_openvino()
    metadata = onnx_form.metadata.model_copy(
        update={
            "form": form,
            "derived_from": onnx_form.metadata.form,
            "tools": tool_versions(),
            "created_at": datetime.now(UTC),
            "machine": cpu_name(),
        }
    )
    converted = ov.convert_model(str(onnx_form.file("model.onnx")))
    converted.set_rt_info(metadata.model_dump_json(), ["deepscreen", "derived"])
    ov.save_model(converted, str(path), compress_to_fp16=False)
    return metadata


# -------------------------------------------------------------------------- calibration --


def select_calibration(
    clips_by_video: Mapping[str, Sequence[Clips]], max_clips: int
) -> tuple[list[Clips], list[str]]:
    """At most `max_clips` clips spread over the videos: one of each in turn, evenly spaced.

    Round r takes the r-th clip of videos chosen evenly over the (sorted) list, so a small
    set still covers the first and the last videos, fakes and reals alike. Returns the
    clips and the names of the videos they came from.
    """
    names = sorted(name for name, clips in clips_by_video.items() if len(clips))
    chosen: list[Clips] = []
    sources: list[str] = []
    round_ = 0
    while len(chosen) < max_clips:
        holders = [name for name in names if len(clips_by_video[name]) > round_]
        if not holders:
            break
        wanted = min(len(holders), max_clips - len(chosen))
        picks = sorted({round(i) for i in np.linspace(0, len(holders) - 1, wanted)})
        for index in picks:
            chosen.append(clips_by_video[holders[index]][round_])
            sources.append(holders[index])
        round_ += 1
    return chosen, sources


def calibration_from_videos(
    videos: Sequence[Path],
    metadata: ModelMetadata,
    *,
    max_clips: int,
    config: DetectorConfig | None = None,
) -> CalibrationClips:
    """Face clips cut from `videos` by the service's own extraction, for int8 calibration.

    At most `max_clips` videos (evenly spaced over the sorted list) are read; unreadable
    ones and those without a face are passed over. `DerivedError` when no clip is found.
    """
    from detector.extraction import extract_face_clips
    from detector.faces import MediaPipeFaceDetector
    from detector.probe import Unreadable

    config = config or DetectorConfig()
    ordered = sorted(videos)
    if len(ordered) > max_clips:
        ordered = [ordered[round(i)] for i in np.linspace(0, len(ordered) - 1, max_clips)]
    faces = MediaPipeFaceDetector(config.faces)
    clips_by_video: dict[str, list[Clips]] = {}
    try:
        for video in ordered:
            try:
                extraction = extract_face_clips(
                    video,
                    clip_length=metadata.clip_length,
                    input_size=metadata.input_size,
                    config=config,
                    faces=faces,
                )
            except Unreadable:
                continue
            clips_by_video[video.name] = [clip.pixels for clip in extraction.clips]
    finally:
        faces.close()
    chosen, sources = select_calibration(clips_by_video, max_clips)
    if not chosen:
        raise DerivedError(f"no face clip in the {len(ordered)} calibration videos")
    return CalibrationClips(
        np.stack(chosen),
        f"{len(chosen)} face clips of {len(set(sources))} videos: "
        + ", ".join(sorted(set(sources))),
    )


def directory_calibration(
    directory: Path, metadata: ModelMetadata, *, max_clips: int
) -> CalibrationSource:
    """A calibration source reading the videos under `directory` only when it is called."""
    from detector.media_files import video_files

    def clips() -> CalibrationClips:
        videos = video_files(directory)
        if not videos:
            raise DerivedError(f"no videos under {directory} to calibrate int8 on")
        found = calibration_from_videos(videos, metadata, max_clips=max_clips)
        return CalibrationClips(found.pixels, f"{found.source} (under {directory})")

    return clips


@contextmanager
def _quiet_torch() -> Iterator[None]:
    """TorchScript's and the TorchScript ONNX exporter's deprecation notices, silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")
        yield


def describe(form: DerivedForm) -> dict[str, object]:
    """A form's metadata and files, for people (`deepscreen model derive`)."""
    return {
        "directory": str(form.directory),
        "files": {name: form.file(name).stat().st_size for name in FORM_FILES[form.metadata.form]},
        "metadata": json.loads(form.metadata.model_dump_json()),
    }
