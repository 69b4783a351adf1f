"""Train the ResNeXt50+LSTM on cached clips, and write a TorchScript artifact.

The loop is plain PyTorch, shaped like torchvision's classification reference:
`train` builds the model, its objective (`distillation`), AdamW and the
learning-rate schedule (`SequentialLR`: a `LinearLR` warm-up over the first
tenth of the steps, then `CosineAnnealingLR` down to 2 % of the learning rate,
stepped per batch), then alternates `train_one_epoch` and `validate` (ROC-AUC
on a split by source, never by frame) and exports the best epoch's weights.
Binary cross-entropy on the fake logit, bf16 autocast on CUDA and fp32 on the
CPU, channels_last, gradient clipping.

Where a run stands is one `TrainingState`. `save_checkpoint` writes it every
`checkpoint_every` steps and at each epoch's end, with the model, optimiser,
schedule, RNG states and the objective's trainable state; `load_checkpoint`
puts it all back, so `resume` continues where a run stopped, in the middle of
an epoch too: that epoch's order and every batch's augmentation depend only on
the seed, the epoch and the batch's number, so the batches already done are
skipped and the rest are the ones the run would have had. `max_minutes` ends a
run cleanly when its time is up, which is how a CPU-only machine trains at all.

Resumed with the `epochs` (and learning rate) it started with, a run loads the
saved schedule and continues it exactly. Resumed with other `epochs`, to train
longer or stop sooner, the saved schedule no longer fits: torch's
`CosineAnnealingLR` keeps its `T_max`, and past it the rate would climb back up
the cosine. The schedule is then rebuilt for the new length and advanced to
the checkpoint's step, so the rest of the run follows the new curve from that
step on (the rate jumps to where the new curve is: up, when the run was
lengthened) and still ends at 2 % of the learning rate.

Training may use a random contiguous `train_frames`-frame part of each
20-frame clip to go faster; the LSTM reads sequences of any length, and the
model is always exported and scored on full clips. Validation reads the
centred `train_frames` window of each clip, for the same reason.

From scratch (nothing pretrained can be obtained here), a run starts the way
from-scratch ResNets train best: every residual block as the identity
(zero-initialised last BatchNorm scale, Goyal et al. 2017) and BatchNorm
statistics measured on `bn_init_batches` batches of the training faces before
the first step, because the default deep random stack washes out the
low-level blending traces the task needs (measured in MODEL_CARD.md, "A second
attempt").
"""

from __future__ import annotations

import copy
import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

from detector.architecture import (
    BACKBONE,
    BACKBONES,
    CLIP_LENGTH,
    IMAGENET_MEAN,
    IMAGENET_STD,
    model_metadata,
)
from detector.arrays import Clips
from detector.artifact import load, resolve_device
from detector.scoring import normalise
from detector.training.data import ClipIndex, split_by_group
from detector.training.distillation import DistillationLoss, LabelLoss, Objective
from detector.training.evaluation import roc_auc
from detector.training.export import export
from detector.training.model import ClipClassifier
from schemas.model import ModelMetadata, TrainingSummary

CHECKPOINT = "last.ckpt"  # the file in `checkpoint_dir` that `resume` reads


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


@dataclass
class TrainingState:
    """Where a run stands, besides its modules: what checkpoints write and `resume` reads."""

    step: int = 0  # optimisation steps done
    epoch: int = 0  # the epoch in progress, or the next one
    batch_in_epoch: int = 0  # batches of `epoch` already done
    clips_seen: int = 0
    running_loss: float | None = None  # moving average of the loss within `epoch`
    best_auc: float | None = None
    best_state: dict[str, torch.Tensor] | None = None  # the best epoch's weights, on the CPU
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per validation


@dataclass
class Run:
    """What `train` builds from its config: the student, its objective, optimiser and schedule."""

    model: ClipClassifier
    objective: Objective
    distillation: DistillationLoss | None  # the objective, when it has trainable state
    optimiser: torch.optim.Optimizer
    scheduler: LRScheduler
    device: torch.device
    total_steps: int


class _Batches:
    """Seeded shuffled batches of (uint8 clips, labels) from the cache, with flips.

    An epoch's order depends on (seed, epoch), a batch's crops and flips on
    (seed, epoch, batch number): skipping batches changes none of the others.
    """

    def __init__(self, index: ClipIndex, rows: NDArray[np.intp], config: TrainConfig) -> None:
        self._index = index
        self._rows = rows
        self._config = config

    def __len__(self) -> int:
        return math.ceil(len(self._rows) / self._config.batch_size)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seed = self._config.seed
        order = np.random.default_rng([seed, epoch]).permutation(self._rows)
        size = self._config.batch_size
        for number in range(skip, len(self)):
            chosen = order[number * size : (number + 1) * size]
            rng = np.random.default_rng([seed, epoch, number])
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
    """Train on `index`, checkpoint into `checkpoint_dir`, export the best epoch to `out`.

    `resume` is a checkpoint (`checkpoint_dir / "last.ckpt"` of an earlier run
    on the same cache): the run continues from its step, mid-epoch included,
    with the schedule rebuilt for this call's `epochs` when they differ (see
    the module docstring).
    """
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    train_rows, validation_rows = split_by_group(index.groups, config.validation_share, config.seed)
    if len(train_rows) == 0:
        raise ValueError("no training clips after the validation split")
    batches = _Batches(index, train_rows, config)
    run = _build(config, device, total_steps=max(1, config.epochs * len(batches)))
    if resume is not None:
        state = load_checkpoint(resume, run, config)
    else:
        state = TrainingState()
        _measure_starting_statistics(run, batches, config)

    checkpoint = checkpoint_dir / CHECKPOINT
    deadline = (
        time.monotonic() + config.max_minutes * 60 if config.max_minutes is not None else None
    )
    stopped_early = False
    while state.epoch < config.epochs and not stopped_early:
        stopped_early = train_one_epoch(
            run, batches, state, config, checkpoint=checkpoint, deadline=deadline,
            on_progress=on_progress,
        )  # fmt: skip
        auc = validate(run.model, index, validation_rows, config, device)
        on_progress(_end_epoch(run, state, auc, complete=not stopped_early))
        save_checkpoint(checkpoint, run, state, config)

    final = copy.deepcopy(run.model).to("cpu")
    if state.best_state is not None:
        final.load_state_dict(state.best_state)
    result = TrainResult(
        steps=state.step, clips_seen=state.clips_seen, epochs_completed=state.epoch,
        stopped_early=stopped_early, best_validation_auc=state.best_auc, history=state.history,
    )  # fmt: skip
    result.artifact_sha256 = export(final, _metadata(config, result, summary or {}), out)
    return result


def train_one_epoch(
    run: Run,
    batches: _Batches,
    state: TrainingState,
    config: TrainConfig,
    *,
    checkpoint: Path,
    deadline: float | None = None,
    on_progress: Callable[[Progress], None] = lambda progress: None,
) -> bool:
    """Train on the batches of `state.epoch` not done yet; True when `deadline` stopped it.

    `state` advances batch by batch; every `config.checkpoint_every` steps it
    is saved to `checkpoint` (before `on_progress` hears of the step).
    """
    run.model.train()
    for clips, labels in batches.epoch(state.epoch, skip=state.batch_in_epoch):
        x = _normalised(clips, run.device)
        loss = training_step(run.model, run.optimiser, x, labels.to(run.device), run.objective)
        run.scheduler.step()
        state.step += 1
        state.batch_in_epoch += 1
        state.clips_seen += len(labels)
        running = state.running_loss
        state.running_loss = loss if running is None else 0.9 * running + 0.1 * loss
        if state.step % config.checkpoint_every == 0:
            save_checkpoint(checkpoint, run, state, config)
        on_progress(Progress(state.epoch, state.step, run.total_steps, state.running_loss))
        if deadline is not None and time.monotonic() > deadline:
            return True
    return False


def validate(
    model: nn.Module,
    index: ClipIndex,
    rows: NDArray[np.intp],
    config: TrainConfig,
    device: torch.device,
) -> float | None:
    """ROC-AUC of `model` on the centred `train_frames` window of `rows`' clips.

    None without validation clips or when they are all of one class.
    """
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
                logits = model(_normalised(clips, device))
            scores.append(logits.float().cpu().numpy())
            labels.append(index.labels[chosen])
    every_label = np.concatenate(labels)
    if every_label.min() == every_label.max():
        return None
    return roc_auc(every_label, np.concatenate(scores))


def save_checkpoint(path: Path, run: Run, state: TrainingState, config: TrainConfig) -> None:
    """Write `run`'s modules, optimiser, schedule, RNG states and `state` to `path`, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    saved: dict[str, Any] = {
        "model": run.model.state_dict(),
        "optimiser": run.optimiser.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "schedule": _schedule_key(config, run.total_steps),
        "objective": run.distillation.trainable_state() if run.distillation else {},
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
        "config": asdict(config),
        **{f.name: getattr(state, f.name) for f in fields(state)},
    }
    temporary = path.with_suffix(".tmp")
    torch.save(saved, temporary)
    temporary.replace(path)


def load_checkpoint(path: Path, run: Run, config: TrainConfig) -> TrainingState:
    """Put a checkpoint's modules, optimiser, schedule and RNG states into `run`; its state.

    The saved schedule is kept when it was made for this run's length and
    learning rate; otherwise `run.scheduler` is rebuilt for them and advanced
    to the checkpoint's step.
    """
    saved = torch.load(path, map_location="cpu", weights_only=True)  # best_state stays there
    state = TrainingState(
        **{f.name: saved[f.name] for f in fields(TrainingState) if f.name in saved}
    )
    run.model.load_state_dict(saved["model"])
    if run.distillation is not None:
        run.distillation.load_state_dict({**run.distillation.state_dict(), **saved["objective"]})
    run.optimiser.load_state_dict(saved["optimiser"])
    if saved.get("schedule") == _schedule_key(config, run.total_steps):
        run.scheduler.load_state_dict(saved["scheduler"])
    else:
        run.scheduler = learning_rate_schedule(run.optimiser, config, run.total_steps, state.step)
    torch.set_rng_state(saved["torch_rng"])
    if run.device.type == "cuda" and saved.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(saved["cuda_rng"], run.device)
    return state


def learning_rate_schedule(
    optimiser: torch.optim.Optimizer, config: TrainConfig, total_steps: int, done: int = 0
) -> LRScheduler:
    """Linear warm-up over a tenth of `total_steps`, then cosine decay to 2 % of the rate.

    Starts the optimiser's rate afresh from `config.learning_rate` and steps
    the schedule `done` times, to where a run `done` steps in would be.
    """
    for group in optimiser.param_groups:
        group["lr"] = config.learning_rate
        group.pop("initial_lr", None)
    warmup = max(1, total_steps // 10)
    scheduler = SequentialLR(
        optimiser,
        [
            LinearLR(optimiser, start_factor=1 / warmup, total_iters=warmup),
            CosineAnnealingLR(
                optimiser, T_max=max(1, total_steps - warmup), eta_min=0.02 * config.learning_rate
            ),
        ],
        milestones=[warmup],
    )
    with warnings.catch_warnings():
        # advancing the schedule without optimisation steps is the point here
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step\\(\\)` before")
        for _ in range(done):
            scheduler.step()
    return scheduler


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


def _build(config: TrainConfig, device: torch.device, total_steps: int) -> Run:
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
    scheduler = learning_rate_schedule(optimiser, config, total_steps)
    return Run(model, objective, distillation, optimiser, scheduler, device, total_steps)


def _measure_starting_statistics(run: Run, batches: _Batches, config: TrainConfig) -> None:
    """A fresh run's BatchNorm statistics (from scratch) and teacher feature scales."""
    from_scratch = config.backbone_weights is None  # pretrained BatchNorm statistics are kept
    if not from_scratch and run.distillation is None:
        return
    first = list(itertools.islice(batches.epoch(0), config.bn_init_batches))

    def prepare(clips: torch.Tensor) -> torch.Tensor:
        return _normalised(clips, run.device)

    if from_scratch:
        initialise_batch_norm(run.model, first, len(first), prepare)
    if run.distillation is not None:
        run.distillation.measure((prepare(clips) for clips, _ in first), len(first))


def _end_epoch(run: Run, state: TrainingState, auc: float | None, *, complete: bool) -> Progress:
    """Record a validation in `state`, keep the best weights, move on when `complete`."""
    loss = state.running_loss if state.running_loss is not None else float("nan")
    progress = Progress(state.epoch, state.step, run.total_steps, loss, auc)
    state.history.append(
        {
            "epoch": state.epoch,
            "step": state.step,
            "loss": loss,
            "validation_auc": auc if auc is not None else float("nan"),
        }
    )
    # Without a usable validation AUC the latest weights are the best we know.
    if auc is None or state.best_auc is None or auc > state.best_auc:
        state.best_auc = auc if auc is not None else state.best_auc
        state.best_state = {
            k: v.detach().to("cpu").clone() for k, v in run.model.state_dict().items()
        }
    if complete:
        state.epoch += 1
        state.batch_in_epoch = 0
        state.running_loss = None
    return progress


def _schedule_key(config: TrainConfig, total_steps: int) -> dict[str, float]:
    """What the saved schedule was made for: a resumed run keeps it only if they match."""
    return {"total_steps": total_steps, "learning_rate": config.learning_rate}


def _normalised(clips: torch.Tensor, device: torch.device) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=device).reshape(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).reshape(1, 1, 3, 1, 1)
    return normalise(clips.to(device, non_blocking=True), mean, std)


def _centred(clip: Clips, config: TrainConfig) -> Clips:
    start = max(0, (len(clip) - config.train_frames) // 2)
    return clip[start : start + config.train_frames]


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
