"""How freed native memory (onnxruntime tensors, voice weights) gets back to the system.

onnxruntime allocates a model call's tensors with plain ``malloc`` (the CPU arena is
off for Piper, see :func:`~chorus.server.engines.onnx_runs.cpu_session`). glibc serves
blocks above its mmap threshold with ``mmap`` and unmaps them when freed, but raises
that threshold to the size of every mmapped block freed (up to 32 MiB), so after the
first sentences a call's tensors of a few MiB land in the worker threads' heaps, where
freed pages stay resident: after ever longer paragraphs, RSS stayed +305 MiB for good
(joe voice, then short sentences again).

A fixed threshold (``mallopt(M_MMAP_THRESHOLD)``, 1 MiB) fixed that by making every
large tensor an ``mmap`` of its own, but each call then faults in its tensors' pages
afresh: on a 2-core VM of 2026-12-06, 7 requests of 199 characters took 3.6-3.9 s of
system time against 0.4-0.8 s with glibc's defaults, and a request 842-931 ms against
525-671 ms (raw piper-tts: 533 ms). So the heaps keep their pages while the server
works, and :func:`trim_heaps` hands the free ones back once it has been idle for a
moment (the scheduler calls it; see :class:`~chorus.server.scheduler.Scheduler`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

__all__ = ["release_memory", "trim_heaps"]

_LOGGER = logging.getLogger(__name__)


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "malloc_trim"):
        return None
    return libc


_LIBC = _load_libc()


def trim_heaps() -> None:
    """Return the free pages of every malloc heap (each worker thread has one) to the
    system: ``malloc_trim(0)`` releases whole free pages inside the heaps, not only at
    their tops. A no-op where the C library is not glibc. Costs a walk over the heaps'
    free blocks; the pages it returns are faulted in again by the next calls."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def release_memory() -> None:
    """Hand the memory of voices that left the store back to the system.

    A voice's sessions hold their weights in many malloc'd blocks; once freed, glibc
    keeps them in its per-thread heaps (worker threads each have one) and RSS does not
    fall. ``malloc_trim(0)`` returns the free pages of every heap.
    """
    gc.collect()  # sessions caught in reference cycles go now, not at some later GC
    trim_heaps()
