"""Clips → calibrated P(fake): the only place the model runs.

`ClipScorer` is the port; `TorchScorer` runs a loaded artifact on the GPU or
CPU, `InMemoryScorer` is its twin for unit tests. Clips arrive as uint8
(N, T, H, W, C) and are moved to the device as bytes; conversion, scaling
and normalisation happen there, which moves a quarter of the data a float
copy would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal, Protocol

import numpy as np
import torch

from detector.architecture import model_metadata
from detector.arrays import Clips, Scores
from detector.artifact import LoadedModel, model_info
from detector.config import BatchingConfig
from schemas.model import ModelInfo, ModelMetadata

Precision = Literal["auto", "fp32", "bf16", "fp16"]


class ClipScorer(Protocol):
    """Scores face clips of shape (N, T, H, W, 3) uint8 RGB; returns (N,) P(fake) in [0, 1]."""

    @property
    def metadata(self) -> ModelMetadata: ...

    @property
    def info(self) -> ModelInfo: ...

    def score(self, clips: Clips) -> Scores: ...

    def close(self) -> None:
        """Release what scoring holds (a batching thread); scores after this are refused."""
        ...


class TorchScorer:
    """A loaded TorchScript artifact: batched, `inference_mode`, autocast on CUDA."""

    def __init__(
        self,
        model: LoadedModel,
        max_batch: int = BatchingConfig.batch_size,
        precision: Precision = "auto",
    ) -> None:
        self._model = model
        self._max_batch = max_batch
        device = model.device
        on_cuda = device.type == "cuda"
        self._autocast_dtype: torch.dtype | None = None
        if on_cuda and precision in ("auto", "bf16"):
            self._autocast_dtype = torch.bfloat16
        elif on_cuda and precision == "fp16":
            self._autocast_dtype = torch.float16
        self._mean, self._std = normalisation_tensors(model.metadata, device)
        self._temperature = model.metadata.calibration.temperature
        self._info = model.info.model_copy(update={"backend": self._backend_name()})

    def _backend_name(self) -> str:
        if self._model.device.type != "cuda":
            return "torchscript"
        names = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}
        return f"torchscript-cuda-{names[self._autocast_dtype]}"

    @property
    def metadata(self) -> ModelMetadata:
        return self._model.metadata

    @property
    def info(self) -> ModelInfo:
        """The artifact's identity, and `backend`: what ran it."""
        return self._info

    @property
    def device(self) -> torch.device:
        return self._model.device

    def score(self, clips: Clips) -> Scores:
        check_clips(clips, self.metadata)
        scores = [
            self._score_batch(clips[i : i + self._max_batch])
            for i in range(0, len(clips), self._max_batch)
        ]
        return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)

    def close(self) -> None:
        pass  # the module is freed with the scorer

    def logits(self, clips: Clips) -> Scores:
        """Uncalibrated logits (for calibration and evaluation)."""
        check_clips(clips, self.metadata)
        step = self._max_batch
        return np.concatenate(
            [self._logits(clips[i : i + step]) for i in range(0, len(clips), step)]
        )

    def _score_batch(self, clips: Clips) -> Scores:
        logits = torch.from_numpy(self._logits(clips))
        return torch.sigmoid(logits / self._temperature).numpy()

    def _logits(self, clips: Clips) -> Scores:
        device = self._model.device
        with torch.inference_mode():
            pixels = torch.from_numpy(np.ascontiguousarray(clips))
            if device.type == "cuda":
                pixels = pixels.pin_memory()
            pixels = pixels.to(device, non_blocking=True)
            x = normalise(pixels, self._mean, self._std)
            if self._autocast_dtype is not None:
                with torch.autocast(device_type="cuda", dtype=self._autocast_dtype):
                    out = self._model.module(x)
            else:
                out = self._model.module(x)
            return np.asarray(out.float().cpu().numpy(), dtype=np.float32)


def normalise(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 clips (N, T, H, W, C) → normalised float (N, T, C, H, W), on their device.

    Training and scoring both call this, so the model sees identical input.
    """
    x = pixels.permute(0, 1, 4, 2, 3).float().div_(255.0)
    return (x - mean) / std


def normalisation_tensors(
    metadata: ModelMetadata, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, 1, 3, 1, 1)
    return (
        torch.tensor(metadata.mean, device=device).reshape(shape),
        torch.tensor(metadata.std, device=device).reshape(shape),
    )


class InMemoryScorer:
    """`ClipScorer` twin for unit tests: score = `rule(clip)`, no model, no torch."""

    def __init__(
        self,
        rule: Callable[[Clips], float] | None = None,
        metadata: ModelMetadata | None = None,
    ) -> None:
        self._rule = rule or (lambda clip: float(clip.mean()) / 255.0)
        self._metadata = metadata or model_metadata(
            input_size=112,
            lstm_hidden=256,
            trained=False,
            name="in-memory",
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        self.calls: list[int] = []

    @property
    def metadata(self) -> ModelMetadata:
        return self._metadata

    @property
    def info(self) -> ModelInfo:
        digest = hashlib.sha256(self._metadata.model_dump_json().encode()).hexdigest()
        return model_info(self._metadata, digest)

    def score(self, clips: Clips) -> Scores:
        check_clips(clips, self._metadata)
        self.calls.append(len(clips))
        return np.array([self._rule(clip) for clip in clips], dtype=np.float32)

    def close(self) -> None:
        pass


def check_clips(clips: Clips, metadata: ModelMetadata) -> None:
    expected = (metadata.clip_length, metadata.input_size, metadata.input_size, 3)
    if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[1:] != expected:
        raise ValueError(
            f"clips must be uint8 (N, {', '.join(map(str, expected))}); "
            f"got {clips.dtype} {clips.shape}"
        )
