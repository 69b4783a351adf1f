"""The model artifact: one TorchScript file carrying its own metadata.

`torch.jit.load` opens it without this project's code; the metadata travels
inside it as the extra file `deepscreen.json` (see `schemas.model.ModelMetadata`),
so preprocessing, label order, thresholds and calibration cannot drift from
the weights. A file without valid metadata is refused.

This module only reads artifacts (the serving path); writing one belongs to
the lifecycle (`detector.training.export`).
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError

from schemas.model import METADATA_FILE, ModelInfo, ModelMetadata


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
