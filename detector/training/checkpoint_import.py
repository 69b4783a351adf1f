"""Import a checkpoint of the widely used public ResNeXt50+LSTM deepfake project.

That project (the one that published `model_87_acc_20_frames_final_data.pt`)
trains `Model(num_classes=2)`: `model` = ResNeXt50-32x4d without its pooling
and classifier, `lstm` = `nn.LSTM(2048, hidden, layers, bidirectional)`,
`linear1` = `nn.Linear(2048, 2)`, on 112 px ImageNet-normalised face crops,
class 1 meaning REAL and class 0 fake; its prediction is a softmax over the
two logits. Two quirks of its code decide what an exact import must compute:

* The fourth positional argument of `nn.LSTM` is `bias`, not `bidirectional`,
  so `bidirectional=False` builds an LSTM *without* biases (its state dict
  holds `lstm.weight_ih_l0` and `lstm.weight_hh_l0` only). We infer the bias
  from the keys, so a checkpoint with biases imports too.
* Its LSTM is not `batch_first`: for one clip, `(1, T, 2048)` is read as a
  sequence of length one with a batch of T, so every frame goes through the
  LSTM alone from a zero state, and the outputs are averaged over the frames.
  `ClipClassifier(per_frame_lstm=True)` computes exactly that.

The import therefore matches the public forward pass for one clip at a time
(how that project scores a video). With several clips in one batch the public
code would run the recurrence across clips — a bug we do not reproduce: our
artifact scores every clip independently of the others in its batch.

The two-class head is folded into our single "fake" logit:
`logit_fake = l0 - l1`, so `sigmoid(logit_fake) == softmax(l)[0] == P(fake)`.
Thresholds are left at their defaults and no calibration is stored: run the
calibration on your own data after importing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from detector.architecture import BACKBONE, FEATURES, model_metadata
from detector.artifact import sha256_file
from detector.training.export import export
from detector.training.model import ClipClassifier
from schemas.model import TrainingSummary

INPUT_SIZE = 112
NUM_CLASSES = 2
FAKE_CLASS, REAL_CLASS = 0, 1  # the public project's label order
WRAPPER_KEYS = ("state_dict", "model_state_dict")
DATA_PARALLEL_PREFIX = "module."
_SHOWN = 12  # keys named in an error message before "... and N more"


class CheckpointError(ValueError):
    """The file is not a checkpoint of the public ResNeXt50+LSTM model we can import."""


def _named(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown if len(keys) <= _SHOWN else f"{shown}, ... and {len(keys) - _SHOWN} more"


def load_public_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The public model's state dict from `path`, on the CPU, without unpickling code.

    Accepts a bare state dict, or one wrapped under `state_dict` /
    `model_state_dict`; strips the `module.` prefix `nn.DataParallel` adds.
    """
    try:
        raw: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a bad or unsafe file
        message = f"{path}: not a loadable weights-only checkpoint ({error})"
        raise CheckpointError(message) from error
    if isinstance(raw, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(raw.get(key), Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping) or not raw:
        raise CheckpointError(f"{path}: expected a state dict (a mapping of names to tensors)")
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is not a named tensor")
        name = key.removeprefix(DATA_PARALLEL_PREFIX)
        if name in state:
            raise CheckpointError(f"{path}: {name!r} appears twice (with and without 'module.')")
        state[name] = value
    return state


def _lstm_shape(public: Mapping[str, torch.Tensor]) -> tuple[int, bool]:
    """Hidden size and bias of the public LSTM, from `lstm.weight_hh_l0` and the bias keys."""
    recurrent = public.get("lstm.weight_hh_l0")
    if recurrent is None:
        raise CheckpointError(
            "missing key lstm.weight_hh_l0: not a checkpoint of the public ResNeXt50+LSTM model"
        )
    shape = tuple(recurrent.shape)
    if len(shape) != 2 or shape[0] != 4 * shape[1] or shape[1] < 1:
        raise CheckpointError(f"lstm.weight_hh_l0 has shape {shape}; expected (4*hidden, hidden)")
    has_bias = "lstm.bias_ih_l0" in public or "lstm.bias_hh_l0" in public
    return shape[1], has_bias


def _key_map(model: ClipClassifier) -> dict[str, str]:
    """Our state-dict key → the public one, for everything except the head."""
    mapping: dict[str, str] = {}
    for key in model.state_dict():
        if key.startswith("backbone."):
            mapping[key] = "model." + key.removeprefix("backbone.")
        elif key.startswith("lstm."):
            mapping[key] = key
    return mapping


def convert_state_dict(
    public: Mapping[str, torch.Tensor],
) -> tuple[ClipClassifier, dict[str, Any]]:
    """A `ClipClassifier` (eval mode) computing the public model's P(fake), and a summary.

    Refuses, naming them, missing and unexpected keys and shape mismatches.
    The summary holds `lstm_hidden`, `lstm_bias` and `parameters`.
    """
    hidden, has_bias = _lstm_shape(public)
    model = ClipClassifier(lstm_hidden=hidden, lstm_bias=has_bias, per_frame_lstm=True)
    ours = model.state_dict()
    mapping = _key_map(model)
    head_shapes = {
        "linear1.weight": (NUM_CLASSES, hidden),
        "linear1.bias": (NUM_CLASSES,),
    }
    expected: dict[str, tuple[int, ...]] = {
        source: tuple(ours[target].shape) for target, source in mapping.items()
    }
    expected.update(head_shapes)

    missing = sorted(set(expected) - set(public))
    unexpected = sorted(set(public) - set(expected))
    mismatched = sorted(
        f"{key}: checkpoint {tuple(public[key].shape)}, expected {shape}"
        for key, shape in expected.items()
        if key in public and tuple(public[key].shape) != shape
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_named(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_named(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_named(mismatched)}")
    if problems:
        raise CheckpointError(
            "not a checkpoint of the public ResNeXt50+LSTM model "
            f"({FEATURES}-d features, 1-layer unidirectional LSTM, hidden {hidden}, 2 classes): "
            + "; ".join(problems)
        )
    not_float = sorted(
        key
        for key in expected
        if not key.endswith("num_batches_tracked") and not public[key].is_floating_point()
    )
    if not_float:
        raise CheckpointError(f"weights that are not floating point: {_named(not_float)}")

    converted = {target: public[source] for target, source in mapping.items()}
    weight = public["linear1.weight"].double()
    bias = public["linear1.bias"].double()
    # P(fake) = softmax(l)[0] = sigmoid(l0 - l1): one logit for class 0 (fake).
    converted["head.weight"] = (weight[FAKE_CLASS] - weight[REAL_CLASS]).unsqueeze(0).float()
    converted["head.bias"] = (bias[FAKE_CLASS] - bias[REAL_CLASS]).reshape(1).float()
    model.load_state_dict(converted, strict=True)
    model.eval()
    info: dict[str, Any] = {
        "lstm_hidden": hidden,
        "lstm_bias": has_bias,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return model, info


def import_checkpoint(
    ckpt_path: Path,
    out_path: Path,
    *,
    name: str = "imported-resnext50-lstm",
    version: str = "imported",
    weights_dtype: Literal["float32", "float16"] = "float32",
) -> str:
    """Convert the public checkpoint at `ckpt_path` into an artifact at `out_path`.

    Returns the artifact's sha256. Thresholds are the defaults (0.5 review,
    0.9 block) and no calibration is stored: calibrate after importing.
    """
    ckpt_path, out_path = Path(ckpt_path), Path(out_path)
    model, info = convert_state_dict(load_public_state_dict(ckpt_path))
    source = f"imported from {ckpt_path.name[:512]} (sha256 {sha256_file(ckpt_path)})"
    metadata = model_metadata(
        name=name,
        version=version,
        backbone=BACKBONE,
        input_size=INPUT_SIZE,
        lstm_hidden=info["lstm_hidden"],
        lstm_bias=info["lstm_bias"],
        lstm_per_frame=True,
        trained=True,
        weights_dtype=weights_dtype,
        training=TrainingSummary(source=source),
    )
    return export(model, metadata, out_path)


__all__ = [
    "CheckpointError",
    "convert_state_dict",
    "import_checkpoint",
    "load_public_state_dict",
]
