"""A tiny clip classifier with the artifact's interface, for fast tests of model forms.

It has what the real ResNeXt50+LSTM has where the backends care: a `backbone` of
convolutions with batch norms (quantised and fused), channels-last frames, an LSTM over
the clip, the time average and a linear head; it scores a clip in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from detector.architecture import model_metadata
from detector.training.export import save_artifact
from schemas.model import Calibration, Thresholds


class TinyClipClassifier(nn.Module):
    """(N, T, 3, H, W) normalised float → (N,) logits."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=4, padding=2, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.lstm = nn.LSTM(16, 8, batch_first=True)
        self.head = nn.Linear(8, 1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        n, t, c, h, w = clips.shape
        frames = clips.reshape(n * t, c, h, w).contiguous(memory_format=torch.channels_last)
        features = self.pool(self.backbone(frames)).reshape(n, t, -1)
        sequence, _ = self.lstm(features)
        logits: torch.Tensor = self.head(sequence.mean(dim=1))
        return logits.squeeze(-1)


def write_tiny_artifact(
    path: Path, *, seed: int = 0, temperature: float = 1.0, logit: float | None = None
) -> str:
    """A tiny model as a deepscreen artifact (112 px, 20 frames); returns its sha256.

    Its batch norms get running statistics away from the identity and its head a wide
    range, so that scores spread over (0, 1) and int8 has real ranges to calibrate.
    With `logit`, the head ignores the features: every clip gets that logit (a model
    that always flags, or never does, for tests about what happens to its verdict).
    """
    torch.manual_seed(seed)
    model = TinyClipClassifier()
    with torch.no_grad():
        for module in model.backbone:
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
        model.head.weight.mul_(40.0)
        if logit is not None:
            model.head.weight.zero_()
            model.head.bias.fill_(logit)
    metadata = model_metadata(input_size=112, lstm_hidden=8, trained=False, name="tiny-test")
    metadata = metadata.model_copy(
        update={
            "thresholds": Thresholds(review=0.5, block=0.9),
            "calibration": Calibration(method="temperature", temperature=temperature),
        }
    )
    return save_artifact(torch.jit.script(model.eval()), metadata, path)
