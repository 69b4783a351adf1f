"""The batcher's statistics stay bounded however long the process runs."""

from __future__ import annotations

import numpy as np

from detector.arrays import Clips, Scores
from detector.batching import SIZES_KEPT, BatchingScorer
from detector.scoring import InMemoryScorer
from schemas.model import ModelInfo, ModelMetadata


class Zeros:
    """A `ClipScorer` that scores anything 0 at once (no shape checks, no pixels)."""

    def __init__(self) -> None:
        self._twin = InMemoryScorer()

    @property
    def metadata(self) -> ModelMetadata:
        return self._twin.metadata

    @property
    def info(self) -> ModelInfo:
        return self._twin.info

    def score(self, clips: Clips) -> Scores:
        return np.zeros(len(clips), dtype=np.float32)

    def close(self) -> None:
        pass


def test_only_the_most_recent_batch_sizes_are_kept_while_the_totals_count_everything() -> None:
    batcher = BatchingScorer(Zeros(), max_batch=2, max_wait_s=0.0)
    clips = np.zeros((1, 1, 1, 1, 3), dtype=np.uint8)
    calls = SIZES_KEPT + 50
    for _ in range(calls):
        batcher.score(clips)
    batcher.score(np.zeros((3, 1, 1, 1, 3), dtype=np.uint8))  # split: 2 then 1
    batcher.close()
    assert batcher.stats.batches == calls + 2
    assert batcher.stats.clips == calls + 3
    assert len(batcher.stats.sizes) == SIZES_KEPT
    assert batcher.stats.sizes[-2:] == [2, 1]
    assert isinstance(batcher.stats.sizes, list)  # what the benchmarks put in their JSON
