"""The model artifact: one TorchScript file carrying its own metadata.

`torch.jit.load` opens it without this project's code; the metadata travels
inside it as the extra file `deepscreen.json` (see `schemas.model.ModelMetadata`),
so preprocessing, label order, thresholds and calibration cannot drift from
the weights. A file without valid metadata is refused.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from pydantic import ValidationError
from torch import nn

from detector.model import (
    ARCHITECTURE,
    BACKBONE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODEL_NAMES,
    ClipClassifier,
)
from schemas.model import METADATA_FILE, ModelInfo, ModelMetadata, Thresholds

CLIP_LENGTH = 20


class ArtifactError(ValueError):
    """The file is not a usable deepscreen model artifact."""


@dataclass(frozen=True)
class LoadedModel:
    module: torch.jit.ScriptModule
    metadata: ModelMetadata
    info: ModelInfo
    device: torch.device


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def reference_metadata(input_size: int, lstm_hidden: int, *, trained: bool) -> ModelMetadata:
    """Metadata for a ClipClassifier with ImageNet normalisation and default thresholds."""
    return ModelMetadata(
        name=MODEL_NAMES[BACKBONE] if trained else "deepscreen-reference-untrained",
        version="0.0.0" if not trained else "1.0.0",
        architecture=ARCHITECTURE,
        backbone=BACKBONE,
        lstm_hidden=lstm_hidden,
        clip_length=CLIP_LENGTH,
        input_size=input_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        thresholds=Thresholds(review=0.5, block=0.9),
        trained=trained,
        created_at=datetime.now(timezone.utc),
    )


def export(model: nn.Module, metadata: ModelMetadata, path: Path) -> str:
    """Script `model` and write it with `metadata` to `path` atomically; returns its sha256."""
    model = model.eval().to("cpu")
    if metadata.weights_dtype == "float16":
        model = model.half()
    scripted = torch.jit.script(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    torch.jit.save(scripted, str(partial), _extra_files={METADATA_FILE: metadata.model_dump_json()})
    partial.replace(path)
    return sha256_file(path)


def read_metadata(path: Path) -> ModelMetadata:
    """The metadata of an artifact, read from its zip without loading the weights."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"/extra/{METADATA_FILE}")]
            if not names:
                raise ArtifactError(f"{path}: no {METADATA_FILE} inside; not a deepscreen model")
            raw = archive.read(names[0])
    except (zipfile.BadZipFile, OSError) as error:
        raise ArtifactError(f"{path}: not a TorchScript archive ({error})") from error
    try:
        return ModelMetadata.model_validate_json(raw)
    except ValidationError as error:
        raise ArtifactError(f"{path}: invalid {METADATA_FILE}: {error}") from error


def model_info(metadata: ModelMetadata, sha256: str) -> ModelInfo:
    return ModelInfo(
        name=metadata.name,
        version=metadata.version,
        sha256=sha256,
        architecture=metadata.architecture,
        input_size=metadata.input_size,
        trained=metadata.trained,
    )


def resolve_device(requested: str) -> torch.device:
    """`auto` → the first CUDA GPU when there is one, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def load(path: Path, device: str = "auto") -> LoadedModel:
    """Load an artifact for inference on `device`; refuses one without valid metadata."""
    metadata = read_metadata(path)
    target = resolve_device(device)
    module = torch.jit.load(str(path), map_location=target)  # type: ignore[no-untyped-call]
    module = module.float().eval()  # fp16-stored weights compute in fp32 (autocast on GPUs)
    module = module.to(memory_format=torch.channels_last)
    return LoadedModel(module, metadata, model_info(metadata, sha256_file(path)), target)


def init_reference(path: Path, input_size: int = 112, lstm_hidden: int = 256, seed: int = 0) -> str:
    """Write an untrained ClipClassifier (`trained: false`) for tests and benchmarks."""
    torch.manual_seed(seed)
    metadata = reference_metadata(input_size, lstm_hidden, trained=False)
    return export(ClipClassifier(lstm_hidden=lstm_hidden), metadata, path)
