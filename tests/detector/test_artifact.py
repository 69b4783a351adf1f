"""The TorchScript artifact: describes itself, loads without deepscreen, needs its metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detector.artifact import ArtifactError, load, read_metadata, sha256_file
from detector.training.export import export
from detector.training.model import ClipClassifier
from schemas.model import METADATA_FILE

REQUIRED_METADATA = {"clip_length", "input_size", "mean", "std", "labels", "thresholds",
                     "architecture", "version", "trained"}  # fmt: skip

FRESH_PROCESS = """
import sys, torch
extra = {"deepscreen.json": ""}
module = torch.jit.load(sys.argv[1], _extra_files=extra).eval()
with torch.inference_mode():
    torch.save(module(torch.load(sys.argv[2])), sys.argv[3])
ours = sorted({n.split(".")[0] for n in sys.modules} & {"detector", "schemas", "consumer"})
raw = extra["deepscreen.json"]
print(ours, raw.decode() if isinstance(raw, bytes) else raw)
"""


def test_the_reference_artifact_describes_itself(reference_model: Path) -> None:
    metadata = read_metadata(reference_model)
    assert set(metadata.model_dump()) >= REQUIRED_METADATA
    assert metadata.clip_length == 20 and metadata.input_size == 112
    assert metadata.labels == ("real", "fake")
    assert metadata.trained is False
    assert metadata.architecture == "resnext50_32x4d+lstm"


def test_plain_torch_jit_load_in_a_fresh_process_gives_the_eager_scores(
    reference_model: Path, tmp_path: Path
) -> None:
    torch.manual_seed(7)  # init_reference(seed=7) built the artifact's weights the same way
    eager = ClipClassifier(lstm_hidden=256).eval()
    clips = torch.randn(2, 20, 3, 112, 112)
    torch.save(clips, tmp_path / "clips.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(reference_model), "clips.pt", "out.pt"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    imported, metadata = result.stdout.strip().split(" ", 1)
    assert imported == "[]", "the artifact must not need deepscreen's code"
    assert json.loads(metadata)["clip_length"] == 20
    with torch.inference_mode():
        expected = eager(clips)
    assert torch.allclose(torch.load(tmp_path / "out.pt"), expected, atol=1e-4)


def test_loading_reports_the_file_hash_as_the_model_identity(reference_model: Path) -> None:
    loaded = load(reference_model, "cpu")
    assert loaded.info.sha256 == sha256_file(reference_model)
    assert loaded.info.trained is False
    assert loaded.device == torch.device("cpu")


def test_a_torchscript_file_without_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bare.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 1)), str(path))
    with pytest.raises(ArtifactError, match=METADATA_FILE):
        load(path)


def test_invalid_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    module = torch.jit.script(torch.nn.Linear(2, 1))
    torch.jit.save(module, str(path), _extra_files={METADATA_FILE: '{"clip_length": 20}'})
    with pytest.raises(ArtifactError, match="invalid"):
        load(path)


def test_a_file_that_is_not_torchscript_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a model")
    with pytest.raises(ArtifactError):
        read_metadata(path)


def test_fp16_weights_halve_the_file_and_score_like_fp32(
    reference_model: Path, tmp_path: Path
) -> None:
    torch.manual_seed(7)
    model = ClipClassifier(lstm_hidden=256)
    half = tmp_path / "half.pt"
    metadata = read_metadata(reference_model).model_copy(update={"weights_dtype": "float16"})
    export(model, metadata, half)
    assert half.stat().st_size < 0.55 * reference_model.stat().st_size
    clips = torch.randn(1, 20, 3, 112, 112)
    with torch.inference_mode():
        full_scores = load(reference_model, "cpu").module(clips)
        half_scores = load(half, "cpu").module(clips)
    assert torch.allclose(full_scores, half_scores, atol=2e-2)


def test_the_packaged_default_model_loads_with_valid_metadata() -> None:
    """What `scan` and `serve` use when no model is given: it must be a working artifact."""
    import numpy as np

    from detector.config import PACKAGED_MODEL
    from detector.scoring import TorchScorer

    loaded = load(PACKAGED_MODEL, "cpu")
    metadata = loaded.metadata
    assert metadata.trained and metadata.name == "deepscreen-resnext50-lstm"
    assert (metadata.architecture, metadata.clip_length) == ("resnext50_32x4d+lstm", 20)
    assert metadata.training is not None and metadata.training.data_sha256
    assert loaded.info.sha256 == sha256_file(PACKAGED_MODEL)
    clip = np.zeros((1, 20, metadata.input_size, metadata.input_size, 3), dtype=np.uint8)
    score = TorchScorer(loaded).score(clip)
    assert score.shape == (1,) and 0.0 <= float(score[0]) <= 1.0


def test_serving_never_imports_torchvision_or_the_training_lifecycle() -> None:
    """Loading and scoring a model, and the whole service, stand apart from model building."""
    probe = (
        "import sys, consumer.app, detector.artifact, detector.pipeline, detector.isolation\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'"
        " or m.startswith('detector.training'))\n"
        "print(bad)"
    )
    imported = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert imported.stdout.strip() == "[]"
