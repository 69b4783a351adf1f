"""Interrupting and recording training runs, for the resume tests of trainer and distillation."""

from __future__ import annotations

from collections.abc import Callable

from detector.training.trainer import Progress


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
