"""Distillation: a student learns a frozen teacher's features and probabilities besides labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detector.architecture import model_metadata
from detector.artifact import load
from detector.training.data import ClipIndex
from detector.training.distillation import DistillationLoss, LabelLoss
from detector.training.export import export
from detector.training.model import ClipClassifier
from detector.training.trainer import Progress, TrainConfig, train, training_step
from tests.support.training import Crash, clip_cache, recorder


def light(seed: int) -> ClipClassifier:
    torch.manual_seed(seed)
    return ClipClassifier(lstm_hidden=8, backbone="mobilenet_v2")


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A (random) MobileNetV2+LSTM artifact, exported and loaded like any deepscreen model.

    Its BatchNorm statistics are measured on clips like the tests', so its features
    vary with the input instead of saturating.
    """
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    metadata = model_metadata(input_size=112, lstm_hidden=8, trained=True).model_copy(
        update={"architecture": "mobilenet_v2+lstm", "backbone": "mobilenet_v2"}
    )
    model = light(0).train()
    with torch.no_grad():
        for seed in range(10, 14):
            model.frame_features(clips(seed))
    export(model.eval(), metadata, path)
    return path


@pytest.fixture(scope="module")
def teacher(teacher_path: Path) -> torch.jit.ScriptModule:
    return load(teacher_path, "cpu").module


def clips(seed: int, n: int = 4, frames: int = 2) -> torch.Tensor:
    return torch.randn(n, frames, 3, 112, 112, generator=torch.Generator().manual_seed(seed))


def test_measured_statistics_put_the_teachers_features_on_a_unit_scale(
    teacher: torch.jit.ScriptModule,
) -> None:
    loss = DistillationLoss(teacher, 1280, 1280)
    batches = [clips(seed) for seed in range(3)]
    loss.measure(iter(batches), count=3)
    features = torch.cat([loss.targets(batch)[0].flatten(0, 1) for batch in batches])
    assert features.mean(dim=0).abs().max() < 1e-3
    varying = loss.feature_std > 1e-3  # dimensions the teacher never varies stay at 0
    assert torch.allclose(features.std(dim=0)[varying], torch.ones(int(varying.sum())), atol=1e-3)


def test_the_teacher_stays_frozen_while_the_student_and_adapter_learn(
    teacher: torch.jit.ScriptModule,
) -> None:
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = light(1).train()
    loss = DistillationLoss(teacher, 1280, 1280)
    loss.measure(iter([clips(0)]), count=1)
    optimiser = torch.optim.AdamW([*student.parameters(), *loss.adapter.parameters()], lr=1e-3)
    batch, labels = clips(0), torch.tensor([0.0, 1.0, 0.0, 1.0])
    adapter_before = loss.adapter.weight.detach().clone()
    for _ in range(3):
        training_step(student, optimiser, batch, labels, loss)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not torch.equal(adapter_before, loss.adapter.weight)
    assert set(loss.trainable_state()) == {
        "adapter.weight", "adapter.bias", "feature_mean", "feature_std"
    }  # fmt: skip


def test_a_few_steps_bring_the_students_features_close_to_the_teachers(
    teacher: torch.jit.ScriptModule,
) -> None:
    student = light(2).train()
    loss = DistillationLoss(teacher, 1280, 1280, weight=1.0)
    batch, labels = clips(5), torch.tensor([0.0, 1.0, 0.0, 1.0])
    loss.measure(iter([batch]), count=1)
    optimiser = torch.optim.AdamW([*student.parameters(), *loss.adapter.parameters()], lr=1e-3)

    def feature_gap() -> float:
        student.dropout.eval()  # BatchNorm keeps using this batch's statistics, as in training
        with torch.no_grad():
            target, _ = loss.targets(batch)
            gap = torch.nn.functional.mse_loss(loss.adapter(student.frame_features(batch)), target)
        student.dropout.train()
        return float(gap)

    start = feature_gap()
    for _ in range(12):
        training_step(student, optimiser, batch, labels, loss)
    assert feature_gap() < 0.5 * start


def test_label_loss_is_binary_cross_entropy_on_the_clip_logit() -> None:
    student = light(3).eval()
    batch, labels = clips(1), torch.tensor([1.0, 0.0, 1.0, 0.0])
    with torch.no_grad():
        expected = torch.nn.functional.binary_cross_entropy_with_logits(student(batch), labels)
        assert torch.allclose(LabelLoss()(student, batch, labels), expected)


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory: pytest.TempPathFactory) -> ClipIndex:
    rng = np.random.default_rng(0)
    return clip_cache(
        tmp_path_factory.mktemp("clips"),
        (
            (rng.integers(0, 256, (20, 112, 112, 3), dtype=np.uint8), i % 2, f"source-{i // 2}")
            for i in range(16)
        ),
    )


@pytest.mark.usefixtures("deterministic")
def test_distillation_interrupted_after_one_epoch_resumes_to_the_same_losses_and_weights(
    small_cache: ClipIndex, teacher_path: Path, tmp_path: Path
) -> None:
    config = TrainConfig(
        lstm_hidden=8, epochs=2, batch_size=4, train_frames=2, validation_share=0.25,
        backbone="mobilenet_v2", teacher=str(teacher_path), weights_dtype="float32",
        bn_init_batches=2, device="cpu",
    )  # fmt: skip
    whole: list[Progress] = []
    train(
        small_cache, tmp_path / "whole.pt", config, checkpoint_dir=tmp_path / "whole",
        on_progress=recorder(whole),
    )  # fmt: skip
    per_epoch = whole[-1].step // 2  # 3 batches
    with pytest.raises(Crash):  # in the second epoch's first step
        train(
            small_cache, tmp_path / "crashed.pt", config, checkpoint_dir=tmp_path / "ckpt",
            on_progress=recorder([], crash_at_step=per_epoch + 1),
        )  # fmt: skip
    checkpoint = tmp_path / "ckpt" / "last.ckpt"
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["step"] == per_epoch
    assert set(saved["objective"]) == {"adapter.weight", "adapter.bias", "feature_mean",
                                       "feature_std"}  # fmt: skip
    assert saved["objective"]["feature_std"].shape == (1280,)
    resumed: list[Progress] = []
    train(
        small_cache, tmp_path / "resumed.pt", config, checkpoint_dir=tmp_path / "ckpt",
        resume=checkpoint, on_progress=recorder(resumed),
    )  # fmt: skip
    # Only the second epoch ran, with the uninterrupted run's losses, to its weights:
    # the student's and the adapter's (the teacher's feature scale was kept, not remeasured).
    assert resumed[0].step == per_epoch + 1
    assert resumed == [p for p in whole if p.step > per_epoch]
    final = torch.load(checkpoint, weights_only=True)
    expected = torch.load(tmp_path / "whole" / "last.ckpt", weights_only=True)
    for part in ("model", "objective"):
        assert final[part].keys() == expected[part].keys()
        assert all(torch.equal(final[part][k], expected[part][k]) for k in expected[part])
    exported = load(tmp_path / "resumed.pt", "cpu").module
    assert not any(key.startswith(("adapter", "teacher")) for key in exported.state_dict())


def test_a_teacher_for_another_input_size_is_refused(
    small_cache: ClipIndex, teacher_path: Path, tmp_path: Path
) -> None:
    config = TrainConfig(input_size=224, backbone="mobilenet_v2", teacher=str(teacher_path))
    with pytest.raises(ValueError, match="112 px"):
        train(small_cache, tmp_path / "m.pt", config, checkpoint_dir=tmp_path / "ckpt")
