"""The allocator hooks: on glibc the mmap threshold is fixed and trimming runs; elsewhere, nothing."""

from __future__ import annotations

import ctypes.util

import pytest

from gateway.heap import Heap


@pytest.mark.skipif(ctypes.util.find_library("c") is None, reason="no C library found")
def test_limit_growth_and_trim_on_glibc() -> None:
    heap = Heap()
    if heap._libc is None:  # noqa: SLF001 - not glibc (musl has no mallopt)
        pytest.skip("the C library has no mallopt/malloc_trim (not glibc)")
    assert heap.limit_growth() is True
    blocks = [bytearray(4 * 1024 * 1024) for _ in range(4)]
    del blocks
    heap.trim()
