"""Training objectives: labels alone, or labels plus what a trained teacher model says.

Why distillation: a ResNeXt50 from scratch gets one bit per clip from a label, while a
teacher that has learned the task (a MobileNetV2 started from ImageNet weights, say) can
pass on much more: for every frame its features, 1280 numbers, and for every clip its
probability (a soft label); the runs that led here are in MODEL_CARD.md. The student
keeps its own architecture; the adapter that maps its features onto the teacher's is
used only in training and is not part of the exported model.

    loss = BCE(student logit, label)
         + weight * (MSE(adapter(student features), standardised teacher features)
                     + BCE(student logit, sigmoid(teacher logit)))

Shapes: clips (N, T, C, H, W) normalised; features (N, T, F); logits (N,).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch
from torch import nn

from detector.training.model import ClipClassifier


class Objective(Protocol):
    def __call__(
        self, model: ClipClassifier, clips: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor: ...


class LabelLoss:
    """Binary cross-entropy of the clip logit against the label (1 = fake)."""

    def __call__(
        self, model: ClipClassifier, clips: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        logits = model(clips)
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)


class DistillationLoss(nn.Module):
    """Labels plus a frozen teacher's per-frame features and per-clip probabilities.

    `teacher` is a loaded deepscreen artifact (TorchScript `ClipClassifier` with
    `frame_features` and `classify`). Call `measure` on a few batches before
    training: it sets the per-dimension mean and standard deviation that put the
    teacher's features on a common scale.
    """

    def __init__(
        self, teacher: Any, student_width: int, teacher_width: int, weight: float = 1.0
    ) -> None:
        super().__init__()
        self.teacher = teacher
        self.teacher.eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.adapter = nn.Linear(student_width, teacher_width)
        self.weight = weight
        self.register_buffer("feature_mean", torch.zeros(teacher_width))
        self.register_buffer("feature_std", torch.ones(teacher_width))

    def targets(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's standardised (N, T, F) features and (N,) logits for `clips`."""
        with torch.no_grad():
            features = self.teacher.frame_features(clips).float()
            logits = self.teacher.classify(features).float()
        standardised = (features - self.feature_mean) / self.feature_std
        return standardised, logits

    def measure(self, batches: Iterable[torch.Tensor], count: int) -> None:
        """Per-dimension mean and std of the teacher's features over `count` batches."""
        seen = []
        with torch.no_grad():
            for number, clips in enumerate(batches):
                if number >= count:
                    break
                seen.append(self.teacher.frame_features(clips).float().flatten(0, 1))
        if not seen:
            raise ValueError("no batches to measure the teacher's features on")
        stacked: torch.Tensor = torch.cat(seen)
        self.register_buffer("feature_mean", stacked.mean(dim=0))
        self.register_buffer("feature_std", stacked.std(dim=0).clamp_min(1e-3))

    def forward(
        self, model: ClipClassifier, clips: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        target_features, teacher_logits = self.targets(clips)
        features = model.frame_features(clips)
        logits = model.classify(features).float()
        label_loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
        feature_loss = nn.functional.mse_loss(self.adapter(features).float(), target_features)
        soft_loss = nn.functional.binary_cross_entropy_with_logits(
            logits, torch.sigmoid(teacher_logits)
        )
        return label_loss + self.weight * (feature_loss + soft_loss)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint must keep to resume: the adapter and the feature statistics."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}
