"""Importing the public ResNeXt50+LSTM project's checkpoints: same P(fake), clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models

from detector.artifact import LoadedModel, load, read_metadata
from detector.training.checkpoint_import import (
    CheckpointError,
    convert_state_dict,
    import_checkpoint,
    load_public_state_dict,
)

SMALL_HIDDEN = 64
TOLERANCE = 1e-5


class Model(nn.Module):
    """The public project's model, as its code defines it (but built without downloads).

    Its `linear1` is `nn.Linear(2048, num_classes)`, which only runs with the default
    `hidden_dim=2048`; here it takes `hidden_dim` inputs so small models run too.
    `nn.LSTM(latent_dim, hidden_dim, lstm_layers, bidirectional)` is kept as is: the
    fourth positional argument is `bias`, and the LSTM is not batch_first.
    """

    def __init__(
        self,
        num_classes: int,
        latent_dim: int = 2048,
        lstm_layers: int = 1,
        hidden_dim: int = 2048,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        model = models.resnext50_32x4d(weights=None)
        self.model = nn.Sequential(*list(model.children())[:-2])
        self.lstm = nn.LSTM(latent_dim, hidden_dim, lstm_layers, bidirectional)
        self.relu = nn.LeakyReLU()
        self.dp = nn.Dropout(0.4)
        self.linear1 = nn.Linear(hidden_dim, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size, seq_length, c, h, w = x.shape
        x = x.view(batch_size * seq_length, c, h, w)
        fmap = self.model(x)
        x = self.avgpool(fmap)
        x = x.view(batch_size, seq_length, 2048)
        x_lstm, _ = self.lstm(x, None)
        return fmap, self.dp(self.linear1(torch.mean(x_lstm, dim=1)))


def public_model(seed: int, hidden_dim: int = 2048, bidirectional: bool = False) -> Model:
    """A public model with random weights, batch-norm statistics included (eval mode)."""
    torch.manual_seed(seed)
    model = Model(2, hidden_dim=hidden_dim, bidirectional=bidirectional)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
        model.linear1.weight.mul_(4.0)  # logits far enough apart to tell scores apart
    return model.eval()


def clips(n: int, t: int, seed: int) -> torch.Tensor:
    """Normalised-looking clips whose frames differ in contrast and colour."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, t, 3, 112, 112, generator=g)
    scale = torch.empty(n, t, 1, 1, 1).uniform_(0.2, 3.0, generator=g)
    shift = torch.empty(n, t, 3, 1, 1).uniform_(-2.0, 2.0, generator=g)
    return noise * scale + shift


def public_p_fake(model: Model, clip: torch.Tensor) -> torch.Tensor:
    """What the public project reports for one clip (batch 1): softmax class 0 = fake."""
    with torch.inference_mode():
        return torch.softmax(model(clip)[1], dim=1)[0, 0]


@pytest.fixture(scope="module")
def small_public() -> Model:
    return public_model(seed=3, hidden_dim=SMALL_HIDDEN)


@pytest.fixture(scope="module")
def small_checkpoint(small_public: Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("public") / "model_small.pt"
    torch.save(small_public.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def imported(small_checkpoint: Path) -> LoadedModel:
    out = small_checkpoint.with_name("imported.pt")
    digest = import_checkpoint(small_checkpoint, out)
    loaded = load(out, "cpu")
    assert loaded.info.sha256 == digest
    return loaded


def test_one_clip_gets_the_public_models_p_fake(small_public: Model, imported: LoadedModel) -> None:
    clip = clips(1, 20, seed=11)
    with torch.inference_mode():
        ours = torch.sigmoid(imported.module(clip))
    assert ours.shape == (1,)
    expected = public_p_fake(small_public, clip)
    assert abs(ours[0].item() - expected.item()) <= TOLERANCE, (ours, expected)
    assert 0.01 < expected.item() < 0.99  # a score, not a saturated 0 or 1


def test_clips_in_one_batch_score_as_the_public_model_scores_each_alone(
    small_public: Model, imported: LoadedModel
) -> None:
    batch = clips(3, 4, seed=12)
    with torch.inference_mode():
        ours = torch.sigmoid(imported.module(batch))
    expected = torch.stack([public_p_fake(small_public, batch[i : i + 1]) for i in range(3)])
    assert torch.allclose(ours, expected, atol=TOLERANCE, rtol=0), (ours, expected)
    assert (expected.max() - expected.min()).item() > 1e-3  # the clips are told apart


def test_the_public_lstm_sees_each_frame_alone(small_checkpoint: Path, small_public: Model) -> None:
    model, _ = convert_state_dict(load_public_state_dict(small_checkpoint))
    clip = clips(1, 4, seed=13)
    expected = public_p_fake(small_public, clip).item()
    with torch.inference_mode():
        per_frame = torch.sigmoid(model(clip)).item()
        model.per_frame_lstm = False  # read the clip as one sequence: not what it computes
        sequence = torch.sigmoid(model(clip)).item()
    assert abs(per_frame - expected) <= TOLERANCE
    assert abs(sequence - expected) > 100 * TOLERANCE


def test_the_artifact_says_what_it_is(imported: LoadedModel, small_checkpoint: Path) -> None:
    metadata = imported.metadata
    assert metadata.lstm_per_frame is True
    assert metadata.lstm_bias is False  # nn.LSTM(..., bidirectional=False) means bias=False
    assert metadata.trained is True
    assert metadata.lstm_hidden == SMALL_HIDDEN
    assert metadata.input_size == 112 and metadata.clip_length == 20
    assert metadata.labels == ("real", "fake")
    assert metadata.mean == pytest.approx((0.485, 0.456, 0.406))
    assert metadata.std == pytest.approx((0.229, 0.224, 0.225))
    assert (metadata.thresholds.review, metadata.thresholds.block) == (0.5, 0.9)
    assert metadata.calibration.method == "none"  # calibrate after importing
    assert metadata.training is not None and metadata.training.source is not None
    assert metadata.training.source.startswith(f"imported from {small_checkpoint.name} (sha256 ")


def test_the_published_default_shapes_are_inferred() -> None:
    public = public_model(seed=4)  # hidden_dim=2048, as the published checkpoints
    state = public.state_dict()
    assert "lstm.bias_ih_l0" not in state and state["lstm.weight_hh_l0"].shape == (8192, 2048)
    model, info = convert_state_dict(state)
    assert info["lstm_hidden"] == 2048 and info["lstm_bias"] is False
    assert info["parameters"] == sum(p.numel() for p in public.parameters()) - 2048 - 1
    assert model.per_frame_lstm and not model.training
    clip = clips(1, 4, seed=14)
    with torch.inference_mode():
        ours = torch.sigmoid(model(clip)).item()
    assert abs(ours - public_p_fake(public, clip).item()) <= TOLERANCE


def test_an_lstm_with_biases_imports_too() -> None:
    # The public signature's 4th argument is `bias`: "bidirectional=True" gives biases.
    public = public_model(seed=5, hidden_dim=32, bidirectional=True)
    assert "lstm.bias_ih_l0" in public.state_dict()
    model, info = convert_state_dict(public.state_dict())
    assert info["lstm_bias"] is True
    clip = clips(1, 4, seed=15)
    with torch.inference_mode():
        ours = torch.sigmoid(model(clip)).item()
    assert abs(ours - public_p_fake(public, clip).item()) <= TOLERANCE


@pytest.fixture(scope="module")
def small_state(small_public: Model) -> dict[str, torch.Tensor]:
    return dict(small_public.state_dict())


def test_a_missing_key_is_named(small_state: dict[str, torch.Tensor]) -> None:
    state = dict(small_state)
    del state["model.4.0.conv2.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys: model\.4\.0\.conv2\.weight"):
        convert_state_dict(state)


def test_a_missing_lstm_is_named(small_state: dict[str, torch.Tensor]) -> None:
    state = {k: v for k, v in small_state.items() if not k.startswith("lstm.")}
    with pytest.raises(CheckpointError, match=r"lstm\.weight_hh_l0"):
        convert_state_dict(state)


def test_an_extra_key_is_named(small_state: dict[str, torch.Tensor]) -> None:
    state = dict(small_state)
    state["linear2.weight"] = torch.zeros(2, 2)
    with pytest.raises(CheckpointError, match=r"unexpected keys: linear2\.weight"):
        convert_state_dict(state)


def test_a_second_lstm_layer_is_refused(small_state: dict[str, torch.Tensor]) -> None:
    state = dict(small_state)
    state["lstm.weight_ih_l1"] = torch.zeros(4 * SMALL_HIDDEN, SMALL_HIDDEN)
    state["lstm.weight_hh_l1"] = torch.zeros(4 * SMALL_HIDDEN, SMALL_HIDDEN)
    with pytest.raises(CheckpointError, match=r"unexpected keys: lstm\.weight_hh_l1"):
        convert_state_dict(state)


def test_a_wrong_shape_is_named(small_state: dict[str, torch.Tensor]) -> None:
    state = dict(small_state)
    state["linear1.weight"] = torch.zeros(3, SMALL_HIDDEN)  # three classes
    with pytest.raises(
        CheckpointError,
        match=r"shape mismatches: linear1\.weight: checkpoint \(3, 64\), expected \(2, 64\)",
    ):
        convert_state_dict(state)
    state = dict(small_state)
    state["lstm.weight_ih_l0"] = torch.zeros(4 * SMALL_HIDDEN, 1024)
    with pytest.raises(CheckpointError, match=r"lstm\.weight_ih_l0: checkpoint \(256, 1024\)"):
        convert_state_dict(state)
    state = dict(small_state)
    state["lstm.weight_hh_l0"] = torch.zeros(SMALL_HIDDEN, SMALL_HIDDEN)
    with pytest.raises(CheckpointError, match=r"lstm\.weight_hh_l0 has shape \(64, 64\)"):
        convert_state_dict(state)


def test_data_parallel_and_wrapped_checkpoints_are_accepted(
    small_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    variants = {
        "parallel.pt": {f"module.{k}": v for k, v in small_state.items()},
        "wrapped.pt": {"state_dict": small_state, "epoch": 20},
        "trainer.pt": {"model_state_dict": {f"module.{k}": v for k, v in small_state.items()}},
    }
    for name, content in variants.items():
        torch.save(content, tmp_path / name)
        loaded = load_public_state_dict(tmp_path / name)
        assert loaded.keys() == small_state.keys(), name
        assert all(torch.equal(loaded[k], small_state[k]) for k in small_state), name


def test_an_imported_data_parallel_checkpoint_is_a_model(
    small_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in small_state.items()}}, tmp_path / "c.pt"
    )
    digest = import_checkpoint(tmp_path / "c.pt", tmp_path / "out.pt", version="87-acc")
    assert len(digest) == 64
    metadata = read_metadata(tmp_path / "out.pt")
    assert metadata.version == "87-acc" and metadata.lstm_hidden == SMALL_HIDDEN


class Pickled:
    pass


@pytest.mark.parametrize("content", [[1, 2, 3], {}, {"weights": "not a tensor"}, Pickled()])
def test_a_file_that_is_not_a_state_dict_is_refused(content: object, tmp_path: Path) -> None:
    torch.save(content, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError):
        load_public_state_dict(tmp_path / "bad.pt")


def test_garbage_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable weights-only checkpoint"):
        load_public_state_dict(tmp_path / "bad.pt")
