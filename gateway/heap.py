"""Giving memory back to the system after large messages (glibc's malloc; a no-op elsewhere).

glibc serves a large allocation with its own mmap and unmaps it when freed, but only above a threshold
that it raises, by default, to the size of every large block freed (up to 32 MiB). After one 25 MB
message, every later one is carved from the heap instead, and a heap rarely shrinks: the daemon's RSS
then stays at its high-water mark. Fixing the threshold keeps message-sized buffers in their own
mappings (returned the moment they are freed), and `trim()` hands back what freed small objects left.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from typing import Any

log = logging.getLogger("parentgate.heap")
# mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Buffers of 256 KiB and more get their own mapping. Fixed, so glibc stops raising it.
MMAP_THRESHOLD = 256 * 1024
# After a large message, the heap is trimmed every TRIM_EVERY seconds for TRIM_FOR seconds: long
# enough for the message to be stored, judged and delivered, and its buffers freed.
TRIM_EVERY = 1.0
TRIM_FOR = 120.0


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc only: both must exist
    except (OSError, AttributeError):
        return None
    return libc


class Heap:
    """The process's allocator, when it is glibc's."""

    def __init__(self) -> None:
        self._libc = _libc()
        self._last_large = float("-inf")

    def note_large(self) -> None:
        """A large message came in: keep trimming for a while (see `keep_trimmed`)."""
        self._last_large = time.monotonic()

    async def keep_trimmed(self) -> None:
        """Until cancelled: trim the heap every TRIM_EVERY seconds while a large message is recent."""
        if self._libc is None:
            return
        while True:
            await asyncio.sleep(TRIM_EVERY)
            if time.monotonic() - self._last_large < TRIM_FOR:
                # malloc_trim walks the heaps (milliseconds): off the event loop.
                await asyncio.to_thread(self.trim)

    def limit_growth(self) -> bool:
        """Fix the mmap threshold (see the module's docstring). True when the allocator took it."""
        if self._libc is None:
            return False
        ok = bool(self._libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
        self._libc.mallopt(M_TRIM_THRESHOLD, 4 * MMAP_THRESHOLD)
        return ok

    def trim(self) -> None:
        """Return the free memory at the top of every heap (and free whole pages inside them)."""
        if self._libc is not None:
            self._libc.malloc_trim(0)
