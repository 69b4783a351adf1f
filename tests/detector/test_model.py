from __future__ import annotations

import pytest
import torch

from detector.model import ResNeXtLSTM


@pytest.mark.parametrize("size", [112, 224])
def test_clips_of_shape_n_t_c_h_w_give_one_logit_each(size: int) -> None:
    model = ResNeXtLSTM(lstm_hidden=32).eval()
    with torch.inference_mode():
        logits = model(torch.randn(2, 20, 3, size, size))
    assert logits.shape == (2,)
    assert torch.isfinite(logits).all()


def test_frame_features_are_2048_wide_per_frame() -> None:
    model = ResNeXtLSTM(lstm_hidden=32).eval()
    with torch.inference_mode():
        features = model.frame_features(torch.randn(1, 20, 3, 112, 112))
    assert features.shape == (1, 20, 2048)


def test_the_score_depends_on_frame_order() -> None:
    """The LSTM reads the clip as a sequence, not as a bag of frames."""
    torch.manual_seed(0)
    model = ResNeXtLSTM(lstm_hidden=32).eval()
    clip = torch.randn(1, 20, 3, 112, 112)
    with torch.inference_mode():
        forward, backward = model(clip), model(clip.flip(1))
    assert not torch.allclose(forward, backward)
