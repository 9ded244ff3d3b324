"""onnxruntime calls that stop when their job's :class:`~.base.StopSignal` fires.

A model call on a long sentence takes up to a second or more; when its client has left,
finishing it is CPU spent for nobody (measured: a server stayed busy up to 4 s after a
client with 3,000 pipelined requests left). onnxruntime checks a run's
``RunOptions.terminate`` between graph nodes, so setting it from another thread ends a
running ``session.run`` within milliseconds; it then raises, and that is reported here
as :class:`~.base.Cancelled`.

Each call gets RunOptions of its own, hooked to the signal only while the call runs:
options are never shared between calls, and a job's signal holds no hooks once its
calls have returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy.typing as npt
import onnxruntime

from . import devices
from .base import Cancelled, StopSignal

__all__ = ["cpu_session", "run", "session"]


def cpu_session(model: bytes | str, threads: int, *, arena: bool = False,
                ) -> onnxruntime.InferenceSession:
    """:func:`session` on the CPU."""
    return session(model, threads, arena=arena)


def session(model: bytes | str, threads: int, *, device: str = "cpu", arena: bool = False,
            optimized_to: str | None = None, preoptimized: bool = False,
            ) -> onnxruntime.InferenceSession:
    """A session as the server runs every model (a whole graph or a part, from a path or
    bytes) on ``device`` (``cpu`` or ``cuda:N``, :mod:`.devices`): ``threads`` per call,
    no spinning, no memory patterns, and no CPU arena unless ``arena`` (see below why
    Kokoro's model wants one). On CUDA these settings govern the CPU side (inputs,
    outputs, the nodes onnxruntime leaves on the CPU); a session that did not get CUDA
    raises :class:`RuntimeError` instead of running on the CPU unnoticed.

    ``optimized_to``: also write the graph as onnxruntime optimized it, to that path;
    ``preoptimized``: ``model`` is such a graph, run as it is (no optimization at load,
    which is most of a large graph's session time: joe's encoder 0.31 s -> 0.07 s). An
    optimized graph holds for this onnxruntime and CPU only (see :mod:`.piper_build`)."""
    options = onnxruntime.SessionOptions()
    if optimized_to is not None:
        options.optimized_model_filepath = optimized_to
        options.log_severity_level = 3  # not its warning that the graph fits this CPU only
    if preoptimized:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    # Spinning threads burn a core while waiting for work; with several workers
    # sharing few cores that costs throughput (measured: 15.8 -> 18.5+ audio-s/s).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # The CPU arena keeps every block it ever grew, per session, for the life of
    # the session: a long sentence raised RSS for good, and an evicted voice's
    # memory went back to the arena's malloc heap, not to the system. Plain malloc
    # lets freed tensors go; measured on the joe voice, three long paragraphs took
    # RSS +419 MiB with the arena, +156 MiB without, at no measurable speed cost.
    #
    # Kokoro's model is the exception: its calls allocate far more in large tensors (a
    # 119-token sentence faulted in about 2 million fresh pages per call under the fixed
    # 1 MiB mmap threshold the server once set, see :mod:`.native_memory`), so without
    # the arena a third of its time went to the kernel: 7.3-9.8 s per call (3.1-3.5 s
    # system) against 4.3-5.2 s (0.0-0.1 s system) with it, at 436 against 325 MiB peak
    # RSS.
    options.enable_cpu_mem_arena = arena
    # A memory pattern is planned and kept per input shape, and nearly every
    # sentence has a shape of its own: patterns pile up and each call takes one
    # block sized for the whole call instead of tensors freed as they die.
    # Measured (three long paragraphs, then short sentences): +305 MiB for good
    # with patterns, -2 MiB without.
    options.enable_mem_pattern = False
    return devices.check_session(onnxruntime.InferenceSession(
        model, sess_options=options, **devices.session_kwargs(device)), device)


def run(session: onnxruntime.InferenceSession, feeds: Mapping[str, npt.NDArray[Any]],
        stop: StopSignal | None = None, outputs: Sequence[str] | None = None,
        ) -> list[Any]:
    """``session.run(outputs, feeds)``, stopped part-way (raising
    :class:`~.base.Cancelled`) when ``stop`` fires before or during the call."""
    if stop is None:
        return list(session.run(outputs, dict(feeds)))
    stop.check()
    options = onnxruntime.RunOptions()

    def terminate() -> None:
        options.terminate = True

    with stop.hooked(terminate):
        try:
            return list(session.run(outputs, dict(feeds), options))
        except Exception as err:
            if stop.is_set():
                raise Cancelled("model call stopped: the request ended") from err
            raise
