"""Sub-sentence streaming for Piper voices: a graph's parts, decoded in windows of frames.

A Piper (VITS) graph runs, for one sentence: a text encoder and duration predictor
(phoneme ids → a prior sample ``z_p`` and a frame mask), a normalising flow (``z_p`` →
``z``, frame by frame with a limited reach in time), and a generator (``z`` → audio,
256 samples per frame, also of limited reach). Everything after the encoder is made of
convolutions, so ``z_p`` can be turned into audio a window of frames at a time, with
enough context frames on each side that the window's own frames come out exactly as in
the whole sentence. The first window (16 frames, ~0.19 s of audio) then leaves after the
encoder plus one small window instead of after the whole sentence. Where the graph is
cut is found by :mod:`chorus.server.engines.piper_graph`; the parts are built, their
reach measured and their windows verified by :mod:`chorus.server.engines.piper_build`.

**Why bit for bit is possible.** onnxruntime (MLAS) computes a convolution as a matrix
product whose K dimension is summed in slices of 128; only when the number of output
positions is 64 or fewer does it switch to larger slices, which rounds differently.
Every part therefore runs on at least :data:`MIN_GEMM_SPAN` positions (windows are
widened to that, or to the whole sentence when it is shorter), and the result equals
the whole-sentence computation exactly with one thread per call, the server default.
With more threads per call MLAS partitions the work between threads by length and
windows match to ~100 dB instead (102 dB measured on joe with two threads).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from chorus.common.server_options import DEFAULT_STREAM_WINDOWS

from .backends import Part
from .base import StopSignal
from .piper_graph import CONDITIONING_INPUTS, SplitLayout

__all__ = [
    "DEFAULT_WINDOWS",
    "MIN_GEMM_SPAN",
    "Encoded",
    "Sentence",
    "SplitGraph",
    "plan_windows",
]

DEFAULT_WINDOWS = DEFAULT_STREAM_WINDOWS
"""Frames per window (the ``--stream-windows`` default): a small first one for early audio,
then growing ones (the last repeats) so that context frames and per-call costs add little
in total. Measured on the joe voice (the bench's 199-character sentence and
1000-character paragraph, one thread, a noisy shared machine): 16,32,64,128,256 cost
1.25-1.39x the whole-sentence compute, 16,32,128,512 1.17x, 16,32,96,384 1.15-1.20x,
16,48,96,384 1.09x. The second window is 3x the first so that four requests started
together on two workers still have it ready before their first window has played; later
growth stays at most 4x, so each window is ready long before the audio before it has
played."""

MIN_GEMM_SPAN = 65
"""Fewest frame positions a part runs on, so that MLAS sums as for the whole sentence."""

FloatArray = npt.NDArray[np.float32]


def plan_windows(frames: int, sizes: Sequence[int]) -> list[tuple[int, int]]:
    """Cut ``frames`` into windows of ``sizes`` (the last size repeats).

    A remainder shorter than the first size is merged into the window before it, so no
    window is tiny (tiny windows cost their full context for little audio).
    """
    if not sizes:
        return [(0, frames)]
    windows: list[tuple[int, int]] = []
    start = 0
    while start < frames:
        size = sizes[min(len(windows), len(sizes) - 1)]
        end = min(frames, start + size)
        if frames - end < sizes[0]:
            end = frames
        windows.append((start, end))
        start = end
    return windows


@dataclass
class Encoded:
    """One sentence after the encoder part: what the windows are cut from."""

    arrays: dict[str, FloatArray]
    """The encoder part's outputs by name, time last."""
    conditioning: dict[str, npt.NDArray[Any]]
    frames: int


def _widen(start: int, end: int, frames: int, minimum: int) -> tuple[int, int]:
    """Clip ``[start, end)`` to the sentence, then grow it to ``minimum`` frames (more on
    the right, where the audio still to come is) unless the sentence is shorter."""
    return _widen_within(start, end, 0, frames, minimum)


def _widen_within(start: int, end: int, low: int, high: int,
                  minimum: int) -> tuple[int, int]:
    """Clip ``[start, end)`` to ``[low, high)``, then grow it to ``minimum`` frames within
    it (more on the right) unless the range is shorter."""
    start, end = max(low, start), min(high, end)
    missing = minimum - (end - start)
    if missing > 0:
        left = min(start - low, missing // 2)
        start -= left
        end = min(high, end + missing - left)
        start = max(low, min(start, end - minimum))
    return start, end


@dataclass(frozen=True)
class SplitGraph:
    """A voice's graph parts (each run by a backend, see :mod:`.backends`), rendering
    sentences in windows.

    A window ``[start, end)`` of frames needs the decoder's last part to run on the
    window plus the decoder's reach on each side; that needs ``z`` to be exact over that
    range plus the first decoder part's reach; and ``z`` is exact over the range a flow
    call covers, less the flow's reach at each end that is not the sentence's end.
    """

    layout: SplitLayout
    sessions: dict[str, Part]
    min_span: int = MIN_GEMM_SPAN

    @property
    def has_flow(self) -> bool:
        return "flow" in self.layout.part_inputs

    def run(self, part: str, feeds: dict[str, npt.NDArray[Any]],
            stop: StopSignal | None = None) -> list[FloatArray]:
        """One part on its inputs taken from ``feeds`` (extra entries are ignored)."""
        names = self.layout.part_inputs[part]
        return self.sessions[part].run({name: feeds[name] for name in names}, stop)

    def encode(self, feeds: dict[str, npt.NDArray[Any]],
               stop: StopSignal | None = None) -> Encoded:
        """Run the encoder part on one sentence's model inputs."""
        outputs = self.run("encoder", feeds, stop)
        arrays = dict(zip(self.layout.encoder_outputs, outputs, strict=True))
        frames = int(outputs[0].shape[-1])
        conditioning = {k: v for k, v in feeds.items() if k in CONDITIONING_INPUTS}
        return Encoded(arrays, conditioning, frames)

    def needs(self, frames: int, start: int, end: int) -> tuple[tuple[int, int],
                                                               tuple[int, int]]:
        """(frames the last decoder part runs on, frames of ``z`` that must be exact)."""
        layout = self.layout
        reach = layout.dec_context
        if layout.upsampled:
            dec = _widen(start - reach, end + reach, frames,
                         -(-self.min_span // max(1, layout.upsample)))
            need = (max(0, dec[0] - layout.dec1_context),
                    min(frames, dec[1] + layout.dec1_context))
            return dec, need
        dec = _widen(start - reach, end + reach, frames, self.min_span)
        return dec, dec

    def flow_span(self, frames: int, need: tuple[int, int]) -> tuple[int, int]:
        """The frames a flow call runs on so that ``z`` is exact over ``need``."""
        reach = self.layout.flow_context if self.has_flow else 0
        return _widen(need[0] - reach, need[1] + reach, frames, self.min_span)

    def z(self, encoded: Encoded, span: tuple[int, int],
          stop: StopSignal | None = None) -> FloatArray:
        """``z`` over the frames of ``span`` (exact as :meth:`flow_span` promises)."""
        feeds: dict[str, npt.NDArray[Any]] = dict(encoded.conditioning)
        for name, array in encoded.arrays.items():
            feeds[name] = array[..., span[0]:span[1]]
        if self.has_flow:
            return self.run("flow", feeds, stop)[0]
        return feeds[self.layout.z]

    def decode(self, encoded: Encoded, z: FloatArray, span: tuple[int, int], start: int,
               end: int, stop: StopSignal | None = None) -> FloatArray:
        """Raw audio of frames ``[start, end)`` from ``z`` over ``span``."""
        layout = self.layout
        (d0, d1), need = self.needs(encoded.frames, start, end)
        if need[0] < span[0] or need[1] > span[1]:
            raise ValueError(f"z over {span} cannot decode frames {start}-{end}")
        feeds: dict[str, npt.NDArray[Any]] = dict(encoded.conditioning)
        if layout.upsampled:
            a, b = _widen_within(need[0], need[1], span[0], span[1], self.min_span)
            feeds[layout.z] = z[..., a - span[0]:b - span[0]]
            up = self.run("dec1", feeds, stop)[0]
            u = layout.upsample
            feeds[layout.upsampled] = up[..., (d0 - a) * u:(d1 - a) * u]
            audio = self.run("dec2", feeds, stop)[0]
        else:
            feeds[layout.z] = z[..., d0 - span[0]:d1 - span[0]]
            audio = self.run("dec", feeds, stop)[0]
        flat = audio.reshape(-1)
        return flat[(start - d0) * layout.hop:(end - d0) * layout.hop]

    def render(self, encoded: Encoded, start: int, end: int,
               stop: StopSignal | None = None) -> FloatArray:
        """Raw audio (model output, not scaled) of frames ``[start, end)``, alone."""
        span = self.flow_span(encoded.frames, self.needs(encoded.frames, start, end)[1])
        return self.decode(encoded, self.z(encoded, span, stop), span, start, end, stop)

    def whole(self, feeds: dict[str, npt.NDArray[Any]],
              stop: StopSignal | None = None) -> FloatArray:
        """Raw audio of a whole sentence through the parts (equal to the whole graph)."""
        encoded = self.encode(feeds, stop)
        return self.render(encoded, 0, encoded.frames, stop)


SHARED_FLOW_FROM = 2
"""Windows from this one on share one flow call over the rest of the sentence."""

FLOW_WEIGHT = 0.2
"""Cost of a flow frame relative to a decoder frame (measured on joe, one thread: the
decoder ~0.75 ms a frame, the flow ~0.1-0.14 ms a frame). Only estimates use it."""

FLOW_CALL_FRAMES = 5
"""Fixed cost of a flow call in decoder frames (~4 ms measured, see :data:`FLOW_WEIGHT`)."""


class Sentence:
    """One sentence's windows after its encoder pass; ``render`` is thread-safe.

    The first windows run the flow over their own frames only (small calls: early
    audio). The others share one flow call over the rest of the sentence, made by the
    first of them to run (the others wait for it), so that the flow's wide reach is not
    paid again for every window.

    Its model calls stop when ``stop`` fires (its request ended).
    """

    def __init__(self, graph: SplitGraph, encoded: Encoded,
                 windows: list[tuple[int, int]], stop: StopSignal | None = None) -> None:
        self.graph = graph
        self.encoded = encoded
        self.windows = windows
        self.stop = stop
        self._lock = threading.Lock()
        self._claimed = False
        self._ready = threading.Event()
        self._rest: tuple[FloatArray, tuple[int, int]] | None = None

    def __len__(self) -> int:
        return len(self.windows)

    def cost(self, index: int) -> float:
        """Expected work of window ``index`` in decoder frames (see :data:`FLOW_WEIGHT`):
        the frames it decodes with their context, and its flow call; the shared flow
        call is counted on the first window that shares it, which usually makes it."""
        frames = self.encoded.frames
        start, end = self.windows[index]
        (d0, d1), need = self.graph.needs(frames, start, end)
        work = float(d1 - d0)
        if self.graph.has_flow and index <= SHARED_FLOW_FROM:
            if index == SHARED_FLOW_FROM:
                need = self.graph.needs(frames, start, frames)[1]
            f0, f1 = self.graph.flow_span(frames, need)
            work += FLOW_WEIGHT * (f1 - f0) + FLOW_CALL_FRAMES
        return work

    def render(self, index: int) -> FloatArray:
        """Raw audio of window ``index``."""
        start, end = self.windows[index]
        if index < SHARED_FLOW_FROM or not self.graph.has_flow:
            return self.graph.render(self.encoded, start, end, self.stop)
        z, span = self._shared_z()
        return self.graph.decode(self.encoded, z, span, start, end, self.stop)

    def _shared_z(self) -> tuple[FloatArray, tuple[int, int]]:
        with self._lock:
            mine = not self._claimed
            self._claimed = True
        if mine:
            try:
                frames = self.encoded.frames
                first = self.windows[SHARED_FLOW_FROM][0]
                need = self.graph.needs(frames, first, frames)[1]
                span = self.graph.flow_span(frames, need)
                self._rest = (self.graph.z(self.encoded, span, self.stop), span)
            finally:
                self._ready.set()
        else:
            self._ready.wait()
        if self._rest is None:
            if self.stop is not None:
                self.stop.check()  # it was stopped, not broken
            raise RuntimeError("the shared flow call of this sentence failed")
        return self._rest
