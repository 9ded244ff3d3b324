"""How freed native memory (onnxruntime tensors, voice weights) gets back to the system.

onnxruntime allocates a model call's tensors with plain ``malloc`` (the CPU arena is
off, see :meth:`~chorus.server.engines.piper.PiperEngine.session`). glibc serves
blocks above its mmap threshold with ``mmap`` and unmaps them when freed, but raises
that threshold to the size of every mmapped block freed (up to 32 MiB), so after the
first long sentence the next ones' tensors of a few MiB land in the worker threads'
heaps, where freed pages stay resident and fragment. Measured on the joe voice (three
ever longer paragraphs, then short sentences again): RSS +305 MiB for good with glibc's
defaults, +0.1 MiB with a fixed threshold of 256 KiB, +2 MiB with this module's 1 MiB
and onnxruntime's memory patterns off.

A fixed threshold (``mallopt(M_MMAP_THRESHOLD)`` also turns the adjustment off) makes
every tensor above it an ``mmap`` of its own that is returned when freed; small
objects stay in the heaps. Both calls are no-ops where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

__all__ = ["MMAP_THRESHOLD", "release_memory", "return_large_blocks_when_freed"]

_LOGGER = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number (malloc.h)."""

MMAP_THRESHOLD = 1 << 20
"""Blocks from 1 MiB up are mmapped: the large activation tensors of a model call, not
the interpreter's small objects. Measured with other work on the machine: CPU time per
paragraph 19.0-20.0 s against 16.2-19.1 s with glibc's defaults; the fresh pages cost a
few per cent at most."""


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None
    return libc


_LIBC = _load_libc()


def return_large_blocks_when_freed() -> None:
    """Fix glibc's mmap threshold (see the module docstring); call before models run."""
    if _LIBC is not None and not _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        _LOGGER.warning("mallopt(M_MMAP_THRESHOLD) refused; memory freed after long "
                        "sentences may stay resident")


def release_memory() -> None:
    """Hand the memory of voices that left the store back to the system.

    A voice's sessions hold their weights in many malloc'd blocks; once freed, glibc
    keeps them in its per-thread heaps (worker threads each have one) and RSS does not
    fall. ``malloc_trim(0)`` returns the free pages of every heap.
    """
    gc.collect()  # sessions caught in reference cycles go now, not at some later GC
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
