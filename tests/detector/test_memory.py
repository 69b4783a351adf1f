"""Freed heap memory goes back to the system after a video, not only back to the allocator."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np

from detector.memory import release_freed_memory


def _resident_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def test_memory_freed_under_a_live_buffer_is_returned_to_the_system() -> None:
    # 100 KiB buffers come from the heap, not from mappings of their own; the last one,
    # kept alive, pins the heap's top, so freeing the others alone does not shrink it.
    buffers = [np.ones(100 * 1024, dtype=np.uint8) for _ in range(2000)]
    kept = buffers[-1]
    del buffers
    held = _resident_mib()

    assert release_freed_memory()

    assert held - _resident_mib() > 100, "the 200 MB freed stayed resident"
    assert kept.sum() == 100 * 1024
