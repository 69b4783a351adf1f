"""Small clip caches, and interrupted and recorded training runs, for the lifecycle's tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from detector.arrays import Clips
from detector.training.data import ClipCache, ClipIndex, LabelledClip
from detector.training.trainer import Progress


def clip_cache(directory: Path, clips: Iterable[tuple[Clips, int, str]]) -> ClipIndex:
    """A clip cache of (pixels, label, group) written to `directory`, opened as an index."""
    cache = ClipCache(directory)
    for pixels, label, group in clips:
        cache.add(LabelledClip(pixels, label, group))
    cache.flush()
    return ClipIndex.open(directory)


class Crash(Exception):
    """Stands for the process dying: `train` stops where it is, and its checkpoints stay."""


def recorder(
    events: list[Progress], crash_at_step: int | None = None
) -> Callable[[Progress], None]:
    """Collect every progress report (step by step, then each epoch's), crashing at a step."""

    def on_progress(progress: Progress) -> None:
        events.append(progress)
        if progress.step == crash_at_step:
            raise Crash

    return on_progress
