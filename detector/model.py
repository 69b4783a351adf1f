"""The classifier: ResNeXt50-32x4d per frame, an LSTM over the clip, one logit.

Input (N, T, C, H, W) float, normalised with the artifact's mean/std; output
(N,) logits for "fake". Each frame goes through the backbone independently
(as N*T images, channels_last); the LSTM reads the T per-frame 2048-d
features in order, its outputs are averaged over time, and a linear layer
gives the logit. Temporal averaging makes the score depend on the whole clip,
not only on its last frame.

The backbone is built with `weights=None`: nothing is downloaded, and trained
weights come from our own artifacts.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnext50_32x4d

FEATURES = 2048
ARCHITECTURE = "resnext50_32x4d+lstm"
BACKBONE = "resnext50_32x4d"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNeXtLSTM(nn.Module):
    """ResNeXt50-32x4d + LSTM deepfake classifier: (N, T, 3, H, W) → (N,) logits.

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
        lstm_bias: bool = True,
        per_frame_lstm: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        # `zero_init_residual` starts every residual block as the identity (its last
        # BatchNorm scale is 0): from scratch, the features at the top are then close
        # to the low-level ones, which is where blending traces live.
        resnext = resnext50_32x4d(weights=None, zero_init_residual=zero_init_residual)
        # Everything up to the last residual stage; pooling is ours.
        self.backbone = nn.Sequential(*list(resnext.children())[:-2])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.lstm = nn.LSTM(FEATURES, lstm_hidden, num_layers=1, bias=lstm_bias, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(lstm_hidden, 1)
        self.per_frame_lstm = per_frame_lstm

    def frame_features(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, T, C, H, W) → (N, T, 2048) per-frame features."""
        n, t, c, h, w = clips.shape
        frames = clips.reshape(n * t, c, h, w).contiguous(memory_format=torch.channels_last)
        features: torch.Tensor = self.pool(self.backbone(frames))
        return features.reshape(n, t, -1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        features = self.frame_features(clips)
        if self.per_frame_lstm:
            n, t, f = features.shape
            sequence, _ = self.lstm(features.reshape(n * t, 1, f))
            sequence = sequence.reshape(n, t, -1)
        else:
            sequence, _ = self.lstm(features)
        logits: torch.Tensor = self.head(self.dropout(sequence.mean(dim=1)))
        return logits.squeeze(-1)
