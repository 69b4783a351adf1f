"""Dynamic batching: clips from many videos scored together.

A GPU scores 64 clips in little more time than 4, but each video has only a
few. `BatchingScorer` wraps a `ClipScorer`: callers on any thread submit
their clips and block on a future, while one worker thread gathers requests
until `max_batch` clips are waiting or `max_wait_s` has passed since the
oldest arrived, scores them in one call, and hands each caller its slice.
It is itself a `ClipScorer`, so the pipeline does not know it is batched.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from detector.arrays import Clips, Scores
from detector.config import BatchingConfig
from detector.scoring import ClipScorer
from schemas.model import ModelInfo, ModelMetadata

SIZES_KEPT = 1024  # batch sizes remembered for reports; the totals count every batch
CLOSE_TIMEOUT_S = 0.5  # `close()` waits this long for the batch being scored


@dataclass
class _Request:
    clips: Clips
    future: Future[Scores] = field(default_factory=Future)
    scored: int = 0  # clips of this request already scored
    parts: list[Scores] = field(default_factory=list)


@dataclass
class BatchStats:
    """Totals since start, and the sizes of the last `SIZES_KEPT` batches (bounded)."""

    batches: int = 0
    clips: int = 0
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=SIZES_KEPT))

    @property
    def sizes(self) -> list[int]:
        """The most recent batch sizes, oldest first."""
        return list(self.recent)

    def record(self, size: int) -> None:
        self.batches += 1
        self.clips += size
        self.recent.append(size)


class BatchingScorer:
    def __init__(
        self,
        scorer: ClipScorer,
        max_batch: int = BatchingConfig.batch_size,
        max_wait_s: float = BatchingConfig.wait_s,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._scorer = scorer
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._requests: queue.Queue[_Request | None] = queue.Queue()
        self._closed = False
        self.stats = BatchStats()
        self._worker = threading.Thread(target=self._run, name="clip-batcher", daemon=True)
        self._worker.start()

    @property
    def metadata(self) -> ModelMetadata:
        return self._scorer.metadata

    @property
    def info(self) -> ModelInfo:
        return self._scorer.info

    def submit(self, clips: Clips) -> Future[Scores]:
        request = _Request(clips)
        if len(clips) == 0:
            request.future.set_result(np.zeros(0, dtype=np.float32))
        elif self._closed:
            request.future.set_exception(RuntimeError("the scorer is closed"))
        else:
            self._requests.put(request)
        return request.future

    def score(self, clips: Clips) -> Scores:
        return self.submit(clips).result()

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Score what is queued, then stop the worker; wait for that `timeout_s` at most.

        Past it the worker (a daemon thread) finishes on its own. Clips submitted
        after `close` are not scored: their futures fail.
        """
        self._closed = True
        self._requests.put(None)
        self._worker.join(timeout_s)
        if not self._worker.is_alive():  # what raced in behind the stop is never scored
            while True:
                try:
                    late = self._requests.get_nowait()
                except queue.Empty:
                    break
                if late is not None:
                    late.future.set_exception(RuntimeError("the scorer is closed"))

    def _run(self) -> None:
        pending: list[_Request] = []
        closing = False
        while not closing or pending:
            if not pending:
                first = self._requests.get()
                if first is None:
                    return
                pending.append(first)
            deadline = time.monotonic() + self._max_wait_s
            while not closing and sum(len(r.clips) for r in pending) < self._max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    request = self._requests.get(timeout=remaining)
                except queue.Empty:
                    break
                if request is None:
                    closing = True
                else:
                    pending.append(request)
            pending = self._score_some(pending)

    def _score_some(self, pending: list[_Request]) -> list[_Request]:
        """Score up to `max_batch` clips from the front of `pending`; return what is left.

        A request larger than the batch is scored across several batches.
        """
        taken: list[tuple[_Request, int, int]] = []  # request, start, stop within it
        room = self._max_batch
        for request in pending:
            take = min(room, len(request.clips) - request.scored)
            taken.append((request, request.scored, request.scored + take))
            room -= take
            if room == 0:
                break
        batch = np.concatenate([r.clips[a:b] for r, a, b in taken])
        try:
            scores = self._scorer.score(batch)
        except Exception as error:  # the callers decide what a failed batch means
            for request, _, _ in taken:
                if not request.future.done():
                    request.future.set_exception(error)
            return [r for r in pending if not r.future.done()]
        self.stats.record(len(batch))
        if self._on_batch:
            self._on_batch(len(batch))
        offset = 0
        for request, start, stop in taken:
            request.parts.append(scores[offset : offset + stop - start])
            request.scored = stop
            offset += stop - start
            if stop == len(request.clips):
                request.future.set_result(np.concatenate(request.parts))
        return [r for r in pending if not r.future.done()]
