"""What every deepscreen model is, in numbers: clip length, backbones, normalisation.

Serving (loading and scoring an artifact) and the lifecycle (building,
training, importing) both need these facts; they live here, apart from the
torchvision model code, so that loading a model never imports torchvision or
the training recipe. `model_metadata` is the one place a `ModelMetadata` for a
model of ours is put together.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from schemas.model import ModelMetadata, Thresholds, TrainingSummary

CLIP_LENGTH = 20  # frames a clip holds; the model, the sampler and the cropper agree on it
INPUT_SIZES = (112, 224)
BACKBONE = "resnext50_32x4d"  # the default
BACKBONES = {"resnext50_32x4d": 2048, "mobilenet_v2": 1280}  # name → per-frame feature width
# The name a trained model of each backbone gets unless its trainer names it.
MODEL_NAMES = {"resnext50_32x4d": "deepscreen-resnext50-lstm",
               "mobilenet_v2": "deepscreen-mobilenet-v2-lstm"}  # fmt: skip
UNTRAINED_NAME = "deepscreen-reference-untrained"
FEATURES = BACKBONES[BACKBONE]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_THRESHOLDS = Thresholds(review=0.5, block=0.9)

WeightsDtype = Literal["float32", "float16"]


def architecture_of(backbone: str) -> str:
    return f"{backbone}+lstm"


ARCHITECTURE = architecture_of(BACKBONE)


def model_metadata(
    *,
    input_size: int,
    lstm_hidden: int,
    trained: bool,
    backbone: str = BACKBONE,
    name: str | None = None,
    version: str | None = None,
    lstm_bias: bool = True,
    lstm_per_frame: bool = False,
    weights_dtype: WeightsDtype = "float32",
    training: TrainingSummary | None = None,
    created_at: datetime | None = None,
) -> ModelMetadata:
    """The metadata of a CNN+LSTM clip classifier of ours (ImageNet normalisation).

    Thresholds start at their defaults and no calibration is stored: calibration
    (`detector.training.calibration`) sets both on data.
    """
    if input_size not in INPUT_SIZES:
        raise ValueError(f"input_size must be one of {INPUT_SIZES}; got {input_size}")
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
    return ModelMetadata(
        name=name or (MODEL_NAMES[backbone] if trained else UNTRAINED_NAME),
        version=version or ("1.0.0" if trained else "0.0.0"),
        architecture=architecture_of(backbone),
        backbone=backbone,
        lstm_hidden=lstm_hidden,
        lstm_bias=lstm_bias,
        lstm_per_frame=lstm_per_frame,
        clip_length=CLIP_LENGTH,
        input_size=input_size,  # type: ignore[arg-type,unused-ignore]
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        thresholds=DEFAULT_THRESHOLDS,
        trained=trained,
        weights_dtype=weights_dtype,
        training=training,
        created_at=created_at or datetime.now(UTC),
    )
