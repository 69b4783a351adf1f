"""Writing model artifacts: script a module, put its metadata inside, replace atomically.

Every artifact the lifecycle makes (a fresh reference model, a trained or
imported one, a recalibrated copy) is written by `save_artifact`, so none can
be half-written or lack its `deepscreen.json`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from detector.architecture import model_metadata
from detector.artifact import sha256_file
from detector.training.model import ClipClassifier
from schemas.model import METADATA_FILE, ModelMetadata


def save_artifact(module: torch.jit.ScriptModule, metadata: ModelMetadata, path: Path) -> str:
    """Write a scripted `module` with `metadata` to `path` (temporary file, then rename).

    `path` may be the file the module was loaded from. Returns the artifact's sha256.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    torch.jit.save(module, str(partial), _extra_files={METADATA_FILE: metadata.model_dump_json()})
    partial.replace(path)
    return sha256_file(path)


def export(model: nn.Module, metadata: ModelMetadata, path: Path) -> str:
    """Script `model` (on the CPU, eval mode) and write it with `metadata`; returns its sha256."""
    model = model.eval().to("cpu")
    if metadata.weights_dtype == "float16":
        model = model.half()
    return save_artifact(torch.jit.script(model), metadata, path)


def init_reference(path: Path, input_size: int = 112, lstm_hidden: int = 256, seed: int = 0) -> str:
    """Write an untrained ClipClassifier (`trained: false`) for tests and benchmarks."""
    torch.manual_seed(seed)
    metadata = model_metadata(input_size=input_size, lstm_hidden=lstm_hidden, trained=False)
    return export(ClipClassifier(lstm_hidden=lstm_hidden), metadata, path)
