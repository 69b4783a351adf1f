"""Training: loss goes down on learnable data, checkpoints resume, splits respect sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import mobilenet_v2

from detector.architecture import model_metadata
from detector.artifact import load, read_metadata
from detector.scoring import normalisation_tensors, normalise
from detector.training.data import ClipIndex, split_by_group
from detector.training.model import ClipClassifier
from detector.training.trainer import (
    Progress,
    TrainConfig,
    initialise_batch_norm,
    train,
    validate,
)
from tests.support.training import Crash, clip_cache, recorder


@pytest.fixture(scope="module")
def learnable(tmp_path_factory: pytest.TempPathFactory) -> ClipIndex:
    """Fakes are brighter than reals: a tiny model can learn that in a few steps."""
    rng = np.random.default_rng(0)

    def clip(label: int) -> np.ndarray:
        base = 170 if label else 60
        return np.clip(rng.normal(base, 20, (20, 112, 112, 3)), 0, 255).astype(np.uint8)

    clips = ((clip(i % 2), i % 2, f"source-{i // 2}") for i in range(24))
    return clip_cache(tmp_path_factory.mktemp("clips"), clips)


CONFIG = TrainConfig(
    lstm_hidden=8, epochs=2, batch_size=4, train_frames=2, learning_rate=2e-3,
    validation_share=0.25, checkpoint_every=1000, weights_dtype="float32",
)  # fmt: skip


def mean_loss(model: torch.nn.Module, index: ClipIndex) -> float:
    """Binary cross-entropy of `model` over every clip (2 frames each), in eval mode."""
    [(clips, labels)] = as_batches(index)
    with torch.inference_mode():
        logits = model.eval()(prepare(clips))
    return float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels))


def as_batches(index: ClipIndex, frames: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    clips = torch.from_numpy(np.stack([index.pixels(i)[:frames] for i in range(len(index))]))
    return [(clips, torch.from_numpy(index.labels.astype(np.float32)))]


def prepare(clips: torch.Tensor) -> torch.Tensor:
    mean, std = normalisation_tensors(
        model_metadata(input_size=112, lstm_hidden=8, trained=False), torch.device("cpu")
    )
    return normalise(clips, mean, std)


def starting_point(config: TrainConfig, index: ClipIndex) -> ClipClassifier:
    """The network a fresh train() run starts from (before its first step)."""
    model = ClipClassifier(lstm_hidden=config.lstm_hidden, zero_init_residual=True)
    initialise_batch_norm(model, as_batches(index), 1, prepare)
    return model


def test_batch_norm_statistics_start_from_the_training_faces(learnable: ClipIndex) -> None:
    model = ClipClassifier(lstm_hidden=8, zero_init_residual=True)
    stem = model.backbone[1]  # the BatchNorm after the first convolution
    assert isinstance(stem, torch.nn.BatchNorm2d)
    initialise_batch_norm(model, as_batches(learnable), 1, prepare)
    with torch.inference_mode():
        conv = model.backbone[0](prepare(as_batches(learnable)[0][0]).flatten(0, 1))
    measured_mean = conv.mean(dim=(0, 2, 3))
    measured_var = conv.var(dim=(0, 2, 3))
    assert torch.allclose(stem.running_mean, measured_mean, atol=1e-4)
    assert torch.allclose(stem.running_var, measured_var, rtol=1e-2)
    assert stem.momentum == 0.1  # training goes on with the usual moving average


@pytest.mark.slow
def test_a_few_steps_on_learnable_data_lower_the_loss_and_export_an_artifact(
    learnable: ClipIndex, tmp_path: Path
) -> None:
    config = CONFIG.__class__(
        **{**CONFIG.__dict__, "epochs": 8, "validation_share": 0.0, "learning_rate": 3e-3}
    )
    torch.manual_seed(config.seed)  # train() builds its model from the same seed
    before = mean_loss(starting_point(config, learnable), learnable)
    out = tmp_path / "m.pt"
    result = train(
        learnable, out, config, checkpoint_dir=tmp_path / "ckpt",
        summary={"command": "pytest", "data": "synthetic"},
    )  # fmt: skip
    after = mean_loss(load(out, "cpu").module, learnable)
    assert result.steps == 8 * 6
    assert after < 0.8 * before, f"loss {before:.3f} -> {after:.3f}"
    metadata = read_metadata(out)
    assert metadata.trained is True
    assert metadata.training is not None
    assert metadata.training.steps == result.steps and metadata.training.command == "pytest"
    assert metadata.clip_length == 20
    assert (tmp_path / "ckpt" / "last.ckpt").exists()


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(checkpoint, weights_only=True)["model"]
    return state


# The lighter backbone from scratch (ResNeXt50 takes the same path, ten times slower),
# on the CPU, where `deterministic` makes two runs' floats equal.
RESUMABLE = TrainConfig(
    **{**CONFIG.__dict__, "backbone": "mobilenet_v2", "bn_init_batches": 2, "device": "cpu"}
)


@pytest.mark.usefixtures("deterministic")
@pytest.mark.parametrize(
    ("checkpoint_every", "crash_at_step", "resumed_from_step"),
    [(1000, 5, 4), (3, 4, 3)],  # 4 batches an epoch
    ids=["after-one-epoch", "mid-epoch"],
)
def test_an_interrupted_run_resumes_to_the_same_losses_and_weights(
    learnable: ClipIndex, tmp_path: Path,
    checkpoint_every: int, crash_at_step: int, resumed_from_step: int,
) -> None:  # fmt: skip
    config = TrainConfig(**{**RESUMABLE.__dict__, "checkpoint_every": checkpoint_every})
    whole: list[Progress] = []
    train(
        learnable, tmp_path / "whole.pt", config, checkpoint_dir=tmp_path / "whole",
        on_progress=recorder(whole),
    )  # fmt: skip
    with pytest.raises(Crash):
        train(
            learnable, tmp_path / "crashed.pt", config, checkpoint_dir=tmp_path / "ckpt",
            on_progress=recorder([], crash_at_step),
        )  # fmt: skip
    checkpoint = tmp_path / "ckpt" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["step"] == resumed_from_step
    resumed: list[Progress] = []
    result = train(
        learnable, tmp_path / "resumed.pt", config, checkpoint_dir=tmp_path / "ckpt",
        resume=checkpoint, on_progress=recorder(resumed),
    )  # fmt: skip
    # Only the steps after the checkpoint ran, with the very losses (and validation
    # AUCs) of the uninterrupted run, and they end at the same weights.
    assert resumed[0].step == resumed_from_step + 1
    assert resumed == [p for p in whole if p.step > resumed_from_step]
    assert result.steps == whole[-1].step == 8
    final, expected = weights(checkpoint), weights(tmp_path / "whole" / "last.ckpt")
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    exported = load(tmp_path / "resumed.pt", "cpu").module.state_dict()
    uninterrupted = load(tmp_path / "whole.pt", "cpu").module.state_dict()
    assert all(torch.equal(exported[k], uninterrupted[k]) for k in uninterrupted)


def test_a_run_resumed_with_more_epochs_runs_only_those_and_still_decays_to_the_floor(
    learnable: ClipIndex, tmp_path: Path
) -> None:
    first = train(
        learnable, tmp_path / "a.pt", TrainConfig(**{**RESUMABLE.__dict__, "epochs": 1}),
        checkpoint_dir=tmp_path / "ckpt",
    )  # fmt: skip
    longer: list[Progress] = []
    resumed = train(
        learnable, tmp_path / "b.pt", RESUMABLE, checkpoint_dir=tmp_path / "ckpt",
        resume=tmp_path / "ckpt" / "last.ckpt", on_progress=recorder(longer),
    )  # fmt: skip
    assert (first.epochs_completed, resumed.epochs_completed) == (1, 2)
    assert resumed.steps == 2 * first.steps
    assert longer[0].step == first.steps + 1  # the second epoch only
    assert [entry["epoch"] for entry in resumed.history] == [0, 1]
    # The schedule was rebuilt for two epochs: it ends at 2 % of the rate, where the
    # one-epoch schedule, run past its end, would have climbed back up its cosine.
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    lr = state["optimiser"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(0.02 * RESUMABLE.learning_rate)


def test_the_lighter_backbone_trains_from_imagenet_weights_and_says_so(
    learnable: ClipIndex, tmp_path: Path
) -> None:
    torch.manual_seed(1)
    published = mobilenet_v2(weights=None)
    torch.save(published.state_dict(), tmp_path / "imagenet.pth")
    config = CONFIG.__class__(
        **{**CONFIG.__dict__, "epochs": 1, "backbone": "mobilenet_v2",
           "backbone_weights": str(tmp_path / "imagenet.pth")},
    )  # fmt: skip
    train(
        learnable, tmp_path / "m.pt", config, checkpoint_dir=tmp_path / "ckpt",
        summary={"source": "mobilenet_v2 initialised from ImageNet weights imagenet.pth"},
    )  # fmt: skip
    metadata = read_metadata(tmp_path / "m.pt")
    assert metadata.architecture == "mobilenet_v2+lstm" and metadata.backbone == "mobilenet_v2"
    assert metadata.name == "deepscreen-mobilenet-v2-lstm"
    assert metadata.training is not None and "ImageNet" in (metadata.training.source or "")
    # It started from the published weights (one epoch of small steps moves them little).
    trained = load(tmp_path / "m.pt", "cpu").module
    first_conv = trained.state_dict()["backbone.0.0.weight"].float()
    assert torch.allclose(first_conv, published.state_dict()["features.0.0.weight"], atol=0.05)


def test_a_time_budget_stops_training_cleanly(learnable: ClipIndex, tmp_path: Path) -> None:
    config = CONFIG.__class__(**{**CONFIG.__dict__, "max_minutes": 0.0})
    result = train(learnable, tmp_path / "m.pt", config, checkpoint_dir=tmp_path / "ckpt")
    assert result.stopped_early and result.steps == 1
    assert (tmp_path / "m.pt").exists()


def test_validation_is_a_roc_auc_or_none_without_both_classes(learnable: ClipIndex) -> None:
    torch.manual_seed(0)
    model = ClipClassifier(lstm_hidden=8, backbone="mobilenet_v2")
    cpu = torch.device("cpu")
    reals = np.flatnonzero(learnable.labels == 0)
    assert validate(model, learnable, reals, RESUMABLE, cpu) is None
    assert validate(model, learnable, reals[:0], RESUMABLE, cpu) is None
    auc = validate(model, learnable, np.arange(len(learnable)), RESUMABLE, cpu)
    assert auc is not None and 0.0 <= auc <= 1.0


def test_the_split_keeps_every_source_on_one_side() -> None:
    groups = [f"video-{i // 5}" for i in range(500)]  # five clips per source
    train_rows, validation_rows = split_by_group(groups, 0.2, seed=3)
    assert len(train_rows) + len(validation_rows) == 500
    assert {groups[i] for i in train_rows}.isdisjoint({groups[i] for i in validation_rows})
    assert 0.1 < len(validation_rows) / 500 < 0.3
