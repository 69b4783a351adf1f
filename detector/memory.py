"""Give the heap memory a decoded video freed back to the system.

A window of decoded frames is large (20 RGB frames of 1080p hold 124 MB) and
short-lived. glibc's allocator keeps what such buffers free in its arenas for
reuse; with several videos decoded at once from several threads, the process
grew by about 300 MB over the shared clips with nothing live to show for it
(bench/README.md). Trimming after each video keeps the resident size at what
is in use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "malloc_trim") else None  # glibc only (not musl, macOS)


def release_freed_memory() -> bool:
    """Return the allocator's free heap memory to the system; False where it cannot."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
