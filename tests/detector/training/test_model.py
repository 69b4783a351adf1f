from __future__ import annotations

import pytest
import torch
from torchvision.models import mobilenet_v2, resnet18

from detector.training.model import ClipClassifier


@pytest.mark.parametrize("size", [112, 224])
def test_clips_of_shape_n_t_c_h_w_give_one_logit_each(size: int) -> None:
    model = ClipClassifier(lstm_hidden=32).eval()
    with torch.inference_mode():
        logits = model(torch.randn(2, 20, 3, size, size))
    assert logits.shape == (2,)
    assert torch.isfinite(logits).all()


def test_frame_features_are_2048_wide_per_frame() -> None:
    model = ClipClassifier(lstm_hidden=32).eval()
    with torch.inference_mode():
        features = model.frame_features(torch.randn(1, 20, 3, 112, 112))
    assert features.shape == (1, 20, 2048)


def test_the_score_depends_on_frame_order() -> None:
    """The LSTM reads the clip as a sequence, not as a bag of frames."""
    torch.manual_seed(0)
    model = ClipClassifier(lstm_hidden=32).eval()
    clip = torch.randn(1, 20, 3, 112, 112)
    with torch.inference_mode():
        forward, backward = model(clip), model(clip.flip(1))
    assert not torch.allclose(forward, backward)


def test_mobilenet_v2_is_a_lighter_backbone_with_the_same_contract() -> None:
    light = ClipClassifier(lstm_hidden=32, backbone="mobilenet_v2").eval()
    with torch.inference_mode():
        assert light.frame_features(torch.randn(1, 4, 3, 112, 112)).shape == (1, 4, 1280)
        assert light(torch.randn(2, 4, 3, 112, 112)).shape == (2,)
    default = ClipClassifier(lstm_hidden=32)
    assert sum(p.numel() for p in light.backbone.parameters()) * 5 < sum(
        p.numel() for p in default.backbone.parameters()
    )


def test_imagenet_weights_are_loaded_into_the_backbone_exactly() -> None:
    torch.manual_seed(3)
    published = mobilenet_v2(weights=None).state_dict()  # torchvision's layout, head included
    model = ClipClassifier(lstm_hidden=8, backbone="mobilenet_v2", imagenet_state=published)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, published[f"features.{key}"])


def test_weights_of_another_network_are_refused() -> None:
    with pytest.raises(RuntimeError, match="state_dict"):
        ClipClassifier(backbone="mobilenet_v2", imagenet_state=resnet18(weights=None).state_dict())
    with pytest.raises(ValueError, match="unknown backbone"):
        ClipClassifier(backbone="vgg16")
