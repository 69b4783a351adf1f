"""What a model artifact says about itself, and what a verdict says about the model.

`ModelMetadata` is stored inside the TorchScript file as `deepscreen.json`, so a
file carries its own preprocessing, label order, thresholds and provenance; the
service refuses a file without it. `ModelInfo` is the short form every verdict
and flag carries, so a moderator can tell which model said what.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

METADATA_FORMAT: Literal[1] = 1
METADATA_FILE = "deepscreen.json"

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class Thresholds(BaseModel):
    """Calibrated P(fake) at or above which a video goes to `review` or is `block`ed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    review: Probability = 0.5
    block: Probability = 0.9

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.block < self.review:
            raise ValueError("block threshold must not be below the review threshold")
        return self


class Calibration(BaseModel):
    """Temperature scaling of the model's logit: P(fake) = sigmoid(logit / temperature)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["none", "temperature"] = "none"
    temperature: float = Field(default=1.0, gt=0.0, le=100.0)
    fitted_on: str | None = Field(default=None, max_length=512)
    target_fpr: dict[str, float] = Field(default_factory=dict, max_length=8)


class TrainingSummary(BaseModel):
    """Provenance of the weights: enough to reproduce them and to know their licence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str | None = Field(default=None, max_length=4096)
    data: str | None = Field(default=None, max_length=2048)
    data_sha256: str | None = Field(default=None, max_length=128)
    licence: str | None = Field(default=None, max_length=512)
    source: str | None = Field(default=None, max_length=1024, description="e.g. imported from")
    seed: int | None = None
    code_version: str | None = Field(default=None, max_length=128)
    steps: int | None = Field(default=None, ge=0)
    clips_seen: int | None = Field(default=None, ge=0)
    metrics: dict[str, float] = Field(default_factory=dict, max_length=64)


class ModelMetadata(BaseModel):
    """The `deepscreen.json` extra file of a TorchScript model artifact.

    The scripted module takes float input of shape (N, T, C, H, W), already
    normalised with `mean`/`std`, T = `clip_length`, H = W = `input_size`, and
    returns one logit per clip for `labels[1]` (fake).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    format: Literal[1] = METADATA_FORMAT
    name: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=64)
    architecture: str = Field(min_length=1, max_length=128)
    backbone: str = Field(min_length=1, max_length=128)
    lstm_hidden: int = Field(ge=1, le=8192)
    lstm_bias: bool = True
    lstm_per_frame: bool = Field(
        default=False, description="the LSTM sees each frame alone (imported public checkpoints)"
    )
    clip_length: int = Field(ge=1, le=256)
    input_size: Literal[112, 224]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    labels: tuple[str, str] = ("real", "fake")
    thresholds: Thresholds = Thresholds()
    calibration: Calibration = Calibration()
    trained: bool
    weights_dtype: Literal["float32", "float16"] = "float32"
    training: TrainingSummary | None = None
    created_at: datetime

    @model_validator(mode="after")
    def _positive_std(self) -> ModelMetadata:
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")
        if self.labels[1] != "fake":
            raise ValueError("labels[1] must be 'fake': the model's logit is for the fake class")
        return self


class ModelInfo(BaseModel):
    """Which model produced a verdict: carried by every verdict and flag."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    name: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=64)
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    architecture: str = Field(min_length=1, max_length=128)
    input_size: int = Field(ge=1)
    trained: bool
    backend: str | None = Field(
        default=None,
        max_length=64,
        description="what ran the artifact: a CPU backend (`torchscript`, `openvino-int8`, ...) "
        "or `torchscript-cuda-<precision>`; absent in verdicts made before it was recorded",
    )
