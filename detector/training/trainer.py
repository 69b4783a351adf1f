"""Train the ResNeXt50+LSTM on cached clips, and write a TorchScript artifact.

The loop is plain PyTorch: AdamW with warm-up and cosine decay, binary
cross-entropy on the fake logit, bf16 autocast on CUDA and fp32 on the CPU,
channels_last, gradient clipping. It checkpoints every `checkpoint_every`
steps and at each epoch's end (model, optimiser, schedule, position, RNG
states), so `resume` continues where a run stopped. Validation (ROC-AUC on a
split by source, never by frame) runs after every epoch; the best epoch's
weights are exported. `max_minutes` ends a run cleanly when its time is up,
which is how a CPU-only machine trains at all.

Training may use a random contiguous `train_frames`-frame part of each
20-frame clip to go faster; the LSTM reads sequences of any length, and the
model is always exported and scored on full clips. Validation reads the
centred `train_frames` window of each clip, for the same reason.

Nothing pretrained can be obtained here, so a fresh run starts the way
from-scratch ResNets train best: every residual block as the identity
(zero-initialised last BatchNorm scale, Goyal et al. 2017) and BatchNorm
statistics measured on `bn_init_batches` batches of the training faces before
the first step. Measured on self-blended UTKFace clips (a linear probe of
the untrained network's pooled features, held-out identities): ROC-AUC 0.52
from the plain random network, 0.60 to 0.63 with this start; the signal was
there in the low-level features (0.71 to 0.74 at the first stage) and the
default deep random stack washed it out.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from detector.arrays import Clips
from detector.architecture import (
    BACKBONE,
    BACKBONES,
    CLIP_LENGTH,
    IMAGENET_MEAN,
    IMAGENET_STD,
    model_metadata,
)
from detector.artifact import load, resolve_device
from detector.training.distillation import DistillationLoss, LabelLoss, Objective
from detector.training.export import export
from detector.training.model import ClipClassifier
from detector.scoring import normalise
from detector.training.data import ClipIndex, split_by_group
from schemas.model import ModelMetadata, TrainingSummary


@dataclass(frozen=True)
class TrainConfig:
    input_size: int = 112
    lstm_hidden: int = 256
    epochs: int = 10
    batch_size: int = 8
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    train_frames: int = CLIP_LENGTH
    validation_share: float = 0.1
    seed: int = 0
    device: str = "auto"
    max_minutes: float | None = None
    checkpoint_every: int = 100
    weights_dtype: str = "float16"
    bn_init_batches: int = 8
    backbone: str = BACKBONE
    # A torchvision ImageNet state dict for `backbone`; None trains from scratch.
    backbone_weights: str | None = None
    # A trained deepscreen artifact to distil from (see `distillation`); None: labels only.
    teacher: str | None = None
    distil_weight: float = 1.0


@dataclass
class Progress:
    epoch: int
    step: int
    total_steps: int
    loss: float
    validation_auc: float | None = None


@dataclass
class TrainResult:
    steps: int
    clips_seen: int
    epochs_completed: int
    stopped_early: bool
    best_validation_auc: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    artifact_sha256: str = ""


def _roc_auc(labels: NDArray[np.int64], scores: NDArray[np.float32]) -> float | None:
    positives, negatives = scores[labels == 1], scores[labels == 0]
    if len(positives) == 0 or len(negatives) == 0:
        return None
    ranks = np.argsort(np.argsort(np.concatenate([positives, negatives]), kind="stable")) + 1.0
    # average ranks of ties
    values = np.concatenate([positives, negatives])
    for value in np.unique(values):
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    u = ranks[: len(positives)].sum() - len(positives) * (len(positives) + 1) / 2
    return float(u / (len(positives) * len(negatives)))


class _Batches:
    """Seeded shuffled batches of (uint8 clips, labels) from the cache, with flips."""

    def __init__(self, index: ClipIndex, rows: NDArray[np.intp], config: TrainConfig) -> None:
        self._index = index
        self._rows = rows
        self._config = config

    def __len__(self) -> int:
        return math.ceil(len(self._rows) / self._config.batch_size)

    def epoch(self, epoch: int, skip: int = 0) -> Any:
        rng = np.random.default_rng([self._config.seed, epoch])
        order = rng.permutation(self._rows)
        size = self._config.batch_size
        for start in range(skip * size, len(order), size):
            chosen = order[start : start + size]
            clips = np.stack([self._clip(i, rng) for i in chosen])
            yield (
                torch.from_numpy(clips),
                torch.from_numpy(self._index.labels[chosen].astype(np.float32)),
            )

    def _clip(self, row: int, rng: np.random.Generator) -> Clips:
        clip = self._index.pixels(int(row))
        frames = self._config.train_frames
        if frames < len(clip):
            start = int(rng.integers(0, len(clip) - frames + 1))
            clip = clip[start : start + frames]
        if rng.random() < 0.5:
            clip = clip[:, :, ::-1]
        return np.ascontiguousarray(clip)


def train(
    index: ClipIndex,
    out: Path,
    config: TrainConfig,
    *,
    checkpoint_dir: Path,
    resume: Path | None = None,
    summary: dict[str, Any] | None = None,
    on_progress: Callable[[Progress], None] = lambda progress: None,
) -> TrainResult:
    """Train on `index`, checkpoint into `checkpoint_dir`, export the best epoch to `out`."""
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    train_rows, validation_rows = split_by_group(index.groups, config.validation_share, config.seed)
    if len(train_rows) == 0:
        raise ValueError("no training clips after the validation split")
    batches = _Batches(index, train_rows, config)
    total_steps = max(1, config.epochs * len(batches))

    imagenet_state = (
        torch.load(config.backbone_weights, map_location="cpu", weights_only=True)
        if config.backbone_weights is not None
        else None
    )
    model = ClipClassifier(
        lstm_hidden=config.lstm_hidden, backbone=config.backbone,
        imagenet_state=imagenet_state, zero_init_residual=imagenet_state is None,
    ).to(device)  # fmt: skip
    model = model.to(memory_format=torch.channels_last)
    objective: Objective = LabelLoss()
    distillation: DistillationLoss | None = None
    if config.teacher is not None:
        teacher = load(Path(config.teacher), str(device))
        if teacher.metadata.input_size != config.input_size:
            raise ValueError(
                f"the teacher reads {teacher.metadata.input_size} px clips, "
                f"the student {config.input_size} px"
            )
        distillation = DistillationLoss(
            teacher.module, BACKBONES[config.backbone], BACKBONES[teacher.metadata.backbone],
            config.distil_weight,
        ).to(device)  # fmt: skip
        objective = distillation
    optimiser = torch.optim.AdamW(
        [*model.parameters(), *(distillation.adapter.parameters() if distillation else [])],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    # Warm-up then cosine decay, as a function of the step alone, so a run resumed
    # with more epochs simply stretches the rest of the curve.
    warmup = max(1, total_steps // 10)

    def learning_rate_factor(done: int) -> float:
        if done < warmup:
            return (done + 1) / warmup
        progress = min(1.0, (done - warmup) / max(1, total_steps - warmup))
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, learning_rate_factor)
    mean = torch.tensor(IMAGENET_MEAN, device=device).reshape(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).reshape(1, 1, 3, 1, 1)

    step = epoch = skip = clips_seen = 0
    best_auc: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = []
    if resume is not None:
        state = torch.load(resume, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        step, epoch, skip = state["step"], state["epoch"], state["batch_in_epoch"]
        clips_seen, best_auc, history = state["clips_seen"], state["best_auc"], state["history"]
        best_state = state["best_state"]
        torch.set_rng_state(state["torch_rng"])
        if distillation is not None:
            distillation.load_state_dict({**distillation.state_dict(), **state["objective"]})
    elif imagenet_state is None or distillation is not None:
        # The first batches, read once, set the starting statistics.
        first = list(itertools.islice(batches.epoch(0), config.bn_init_batches))

        def prepare(clips: torch.Tensor) -> torch.Tensor:
            return normalise(clips.to(device), mean, std)

        if imagenet_state is None:  # pretrained BatchNorm statistics are kept
            initialise_batch_norm(model, first, len(first), prepare)
        if distillation is not None:
            distillation.measure((prepare(clips) for clips, _ in first), len(first))

    def checkpoint(batch_in_epoch: int) -> None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        target = checkpoint_dir / "last.ckpt"
        torch.save(
            {
                "model": model.state_dict(), "optimiser": optimiser.state_dict(),
                "objective": distillation.trainable_state() if distillation else {},
                "schedule": schedule.state_dict(), "step": step, "epoch": epoch,
                "batch_in_epoch": batch_in_epoch, "clips_seen": clips_seen,
                "best_auc": best_auc, "best_state": best_state, "history": history,
                "torch_rng": torch.get_rng_state(), "config": asdict(config),
            },
            target.with_suffix(".tmp"),
        )  # fmt: skip
        target.with_suffix(".tmp").replace(target)

    deadline = (
        time.monotonic() + config.max_minutes * 60 if config.max_minutes is not None else None
    )
    stopped_early = False
    while epoch < config.epochs and not stopped_early:
        model.train()
        running: float | None = None  # moving average of the loss within the epoch
        batch_in_epoch = skip
        for clips, labels in batches.epoch(epoch, skip):
            x = normalise(clips.to(device, non_blocking=True), mean, std)
            value = training_step(model, optimiser, x, labels.to(device), objective)
            schedule.step()
            step += 1
            batch_in_epoch += 1
            clips_seen += len(labels)
            running = value if running is None else 0.9 * running + 0.1 * value
            on_progress(Progress(epoch, step, total_steps, running))
            if step % config.checkpoint_every == 0:
                checkpoint(batch_in_epoch)
            if deadline is not None and time.monotonic() > deadline:
                stopped_early = True
                break
        skip = 0
        auc = _validate(model, index, validation_rows, config, device, mean, std)
        epoch_loss = running if running is not None else float("nan")
        history.append(
            {
                "epoch": epoch,
                "step": step,
                "loss": epoch_loss,
                "validation_auc": auc or float("nan"),
            }
        )
        on_progress(Progress(epoch, step, total_steps, epoch_loss, auc))
        # Without a usable validation AUC the latest weights are the best we know.
        if auc is None or best_auc is None or auc > best_auc:
            best_auc = auc if auc is not None else best_auc
            best_state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
        if not stopped_early:
            epoch += 1
        checkpoint(0 if not stopped_early else batch_in_epoch)

    final = copy.deepcopy(model).to("cpu")
    if best_state is not None:
        final.load_state_dict(best_state)
    result = TrainResult(
        steps=step, clips_seen=clips_seen, epochs_completed=epoch, stopped_early=stopped_early,
        best_validation_auc=best_auc, history=history,
    )  # fmt: skip
    result.artifact_sha256 = export(final, _metadata(config, result, summary or {}), out)
    return result


def training_step(
    model: ClipClassifier,
    optimiser: torch.optim.Optimizer,
    clips: torch.Tensor,
    labels: torch.Tensor,
    objective: Objective,
) -> float:
    """One optimisation step on normalised clips (N, T, C, H, W); returns the batch's loss.

    bf16 autocast on CUDA, fp32 elsewhere; gradients clipped to norm 1.
    """
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=clips.is_cuda):
        loss = objective(model, clips, labels)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    trained = [p for group in optimiser.param_groups for p in group["params"]]
    nn.utils.clip_grad_norm_(trained, 1.0)
    optimiser.step()
    return float(loss.item())


def _validate(
    model: nn.Module, index: ClipIndex, rows: NDArray[np.intp], config: TrainConfig,
    device: torch.device, mean: torch.Tensor, std: torch.Tensor,
) -> float | None:  # fmt: skip
    if len(rows) == 0:
        return None
    model.eval()
    scores, labels = [], []
    with torch.inference_mode():
        for start in range(0, len(rows), config.batch_size):
            chosen = rows[start : start + config.batch_size]
            clips = torch.from_numpy(
                np.stack([_centred(index.pixels(int(i)), config) for i in chosen])
            )
            with torch.autocast(
                device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"
            ):
                logits = model(normalise(clips.to(device), mean, std))
            scores.append(logits.float().cpu().numpy())
            labels.append(index.labels[chosen])
    return _roc_auc(np.concatenate(labels), np.concatenate(scores))


def _centred(clip: Clips, config: TrainConfig) -> Clips:
    start = max(0, (len(clip) - config.train_frames) // 2)
    return clip[start : start + config.train_frames]


def initialise_batch_norm(
    model: ClipClassifier,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    count: int,
    prepare: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    """Set every BatchNorm's running statistics to their average over `count` batches.

    Without it, a network from scratch is evaluated (validation, export) with
    statistics of mean 0 and variance 1 until training has moved them, far from
    what a face clip produces at each layer.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches seen
    model.train()
    with torch.no_grad():
        for number, (clips, _) in enumerate(batches):
            if number >= count:
                break
            model.frame_features(prepare(clips))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum


def _metadata(config: TrainConfig, result: TrainResult, summary: dict[str, Any]) -> ModelMetadata:
    return model_metadata(
        name=summary.get("name"),
        version=summary.get("version", "0.1.0"),
        backbone=config.backbone,
        lstm_hidden=config.lstm_hidden,
        input_size=config.input_size,
        trained=True,
        weights_dtype=config.weights_dtype,  # type: ignore[arg-type]
        training=TrainingSummary(
            command=summary.get("command"),
            data=summary.get("data"),
            data_sha256=summary.get("data_sha256"),
            licence=summary.get("licence"),
            source=summary.get("source"),
            seed=config.seed,
            code_version=summary.get("code_version"),
            steps=result.steps,
            clips_seen=result.clips_seen,
            metrics={
                k: v
                for k, v in {
                    "validation_auc": result.best_validation_auc,
                    "epochs_completed": float(result.epochs_completed),
                    "train_frames": float(config.train_frames),
                }.items()
                if v is not None
            },
        ),
    )
