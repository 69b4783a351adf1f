from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from detector.artifact import load
from detector.batching import BatchingScorer
from detector.scoring import InMemoryScorer, TorchScorer
from detector.training.export import init_reference


def clips(n: int, seed: int, size: int = 112) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 20, size, size, 3), dtype=np.uint8)


def test_clips_of_different_videos_score_the_same_batched_or_one_by_one(
    reference_model: Path,
) -> None:
    scorer = TorchScorer(load(reference_model, "cpu"), max_batch=8)
    videos = [clips(1, seed=1), clips(2, seed=2)]
    alone = np.concatenate([scorer.score(v) for v in videos])
    together = scorer.score(np.concatenate(videos))
    assert np.allclose(alone, together, atol=1e-5)
    assert ((together > 0) & (together < 1)).all()


def test_normalisation_uses_the_artifact_mean_and_std(reference_model: Path) -> None:
    loaded = load(reference_model, "cpu")
    batch = clips(1, seed=3)
    metadata = loaded.metadata
    x = torch.from_numpy(batch).permute(0, 1, 4, 2, 3).float() / 255
    x = (x - torch.tensor(metadata.mean).view(1, 1, 3, 1, 1)) / torch.tensor(metadata.std).view(
        1, 1, 3, 1, 1
    )
    with torch.inference_mode():
        expected = torch.sigmoid(loaded.module(x)).numpy()
    assert np.allclose(TorchScorer(loaded).score(batch), expected, atol=1e-5)


def test_temperature_from_the_metadata_calibrates_the_score(reference_model: Path) -> None:
    loaded = load(reference_model, "cpu")
    hot = loaded.metadata.model_copy(
        update={"calibration": loaded.metadata.calibration.model_copy(update={"temperature": 4.0})}
    )
    batch = clips(1, seed=4)
    logit = TorchScorer(loaded).logits(batch)
    calibrated = TorchScorer(type(loaded)(loaded.module, hot, loaded.info, loaded.device)).score(
        batch
    )
    assert np.allclose(calibrated, 1 / (1 + np.exp(-logit / 4.0)), atol=1e-6)


def test_a_224_pixel_model_scores_224_pixel_clips(tmp_path: Path) -> None:
    path = tmp_path / "m224.pt"
    init_reference(path, input_size=224, lstm_hidden=32)
    scorer = TorchScorer(load(path, "cpu"))
    assert scorer.score(clips(1, seed=5, size=224)).shape == (1,)
    with pytest.raises(ValueError, match="224"):
        scorer.score(clips(1, seed=5, size=112))


def test_clips_of_the_wrong_shape_or_type_are_refused() -> None:
    scorer = InMemoryScorer()
    with pytest.raises(ValueError):
        scorer.score(clips(1, seed=0).astype(np.float32))
    with pytest.raises(ValueError):
        scorer.score(clips(1, seed=0)[:, :19])


def test_the_batcher_combines_requests_from_many_threads_into_one_batch() -> None:
    inner = InMemoryScorer()
    batcher = BatchingScorer(inner, max_batch=16, max_wait_s=0.5)
    requests = [clips(2, seed=s) for s in range(4)]
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(4)

    def submit(i: int) -> None:
        start.wait()
        results[i] = batcher.score(requests[i])

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    assert inner.calls == [8]  # four requests of two clips, one call
    for i, request in enumerate(requests):
        assert np.array_equal(results[i], InMemoryScorer().score(request))


def test_a_request_larger_than_the_batch_is_split_and_reassembled_in_order() -> None:
    inner = InMemoryScorer()
    batcher = BatchingScorer(inner, max_batch=3, max_wait_s=0.0)
    request = clips(7, seed=9)
    assert np.array_equal(batcher.score(request), InMemoryScorer().score(request))
    batcher.close()
    assert inner.calls == [3, 3, 1]


def test_a_failing_batch_fails_its_callers_and_the_batcher_goes_on() -> None:
    failures = iter([True, False])

    def flaky(clip: np.ndarray) -> float:
        if next(failures, False):
            raise RuntimeError("CUDA error: out of memory")
        return 0.5

    batcher = BatchingScorer(InMemoryScorer(rule=flaky), max_batch=4, max_wait_s=0.0)
    with pytest.raises(RuntimeError, match="out of memory"):
        batcher.score(clips(1, seed=0))
    assert batcher.score(clips(1, seed=1)).tolist() == [0.5]
    batcher.close()


def test_an_empty_request_is_answered_without_scoring() -> None:
    inner = InMemoryScorer()
    batcher = BatchingScorer(inner)
    assert batcher.score(np.zeros((0, 20, 112, 112, 3), dtype=np.uint8)).shape == (0,)
    batcher.close()
    assert inner.calls == []
