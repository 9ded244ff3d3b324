"""Sub-sentence streaming for Piper voices: the stock graph cut into parts, decoded in windows.

A Piper (VITS) graph runs, for one sentence: a text encoder and duration predictor
(phoneme ids → a prior sample ``z_p`` and a frame mask), a normalising flow (``z_p`` →
``z``, frame by frame with a limited reach in time), and a generator (``z`` → audio,
256 samples per frame, also of limited reach). Everything after the encoder is made of
convolutions, so ``z_p`` can be turned into audio a window of frames at a time, with
enough context frames on each side that the window's own frames come out exactly as in
the whole sentence. The first window (16 frames, ~0.19 s of audio) then leaves after the
encoder plus one small window instead of after the whole sentence.

**Where to cut** is read from the graph's structure, not from tensor names (which differ
between exports):

- *decoder input* ``z``: the dominator of the graph output farthest from it, over the
  dataflow from the text inputs (``input``, ``input_lengths``, ``scales``): every path
  from the text to the audio passes through it, and the audio is a function of it alone
  (plus constants and the speaker id). In the stock export that is ``z * mask``.
- *upsampled cut* ``u``: on that dominator chain, the output of the generator's first
  ``ConvTranspose``. Everything before it runs at frame rate and is cheap; everything
  after runs at 8x frame rate and is most of the cost.
- *flow inputs*: the flow is the nodes in the ``/flow/`` scope plus every node fed only
  by them, up to ``z``; its inputs from outside (``z_p`` and the mask) are what the encoder
  part returns. A graph without that scope is cut in two parts only (encoder+flow, then
  decoder), which still streams, with a later first window.

The speaker id (``sid``) is handed to every part whose nodes need it. How far each part
reaches in time (its receptive field) is measured at load by perturbing one frame and
seeing which outputs change; the context used is that plus a margin. Then the windowed
output of a calibration text is compared with the whole graph's: it must match bit for
bit (or, with several onnxruntime threads per call, to at least
:data:`MIN_SNR_DB`), else the voice falls back to whole sentences with one log line.

**Why bit for bit is possible.** onnxruntime (MLAS) computes a convolution as a matrix
product whose K dimension is summed in slices of 128; only when the number of output
positions is 64 or fewer does it switch to larger slices, which rounds differently.
Every part therefore runs on at least :data:`MIN_GEMM_SPAN` positions (windows are
widened to that, or to the whole sentence when it is shorter), and the result equals
the whole-sentence computation exactly with one thread per call, the server default.
With more threads per call MLAS partitions the work between threads by length and
windows match to ~100 dB instead (102 dB measured on joe with two threads).

**Cache.** The parts are written once per model content (sha256) to a cache directory
(``$XDG_CACHE_HOME/chorus/graphs`` by default; the voices volume may be read-only) with
atomic renames, together with the measured contexts and the verification result for the
onnxruntime version, thread count and window plan in use. A later load reads the parts
and skips the analysis, the whole-graph session and the verification (measured on
en_US-joe-medium: ~4 s on a miss; a hit costs a sha256 of the model, ~0.1 s, on top of
creating the part sessions, which takes as long as creating one for the whole graph).
When the directory is not writable, the parts are built in memory at every load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime

from chorus.common.files import write_atomic
from chorus.common.server_options import DEFAULT_STREAM_WINDOWS

from . import onnx_runs
from .base import StopSignal

__all__ = [
    "CONDITIONING_INPUTS",
    "DEFAULT_WINDOWS",
    "MIN_GEMM_SPAN",
    "MIN_SNR_DB",
    "Sentence",
    "SplitError",
    "SplitGraph",
    "SplitLayout",
    "analyze",
    "plan_windows",
    "snr_db",
]

_LOGGER = logging.getLogger(__name__)

FORMAT = 2
"""Version of the cut and of the cache layout; a change makes old cache entries unused."""

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

MIN_SNR_DB = 100.0
"""Windowed audio that is not bit-exact must still be this close to the whole sentence."""

CONTEXT_MARGIN = 2
"""Frames of context added to each measured receptive field."""

CONDITIONING_INPUTS = frozenset({"sid"})
"""Graph inputs that condition the audio without being text (Piper's speaker id)."""

FloatArray = npt.NDArray[np.float32]
SessionFactory = Callable[[bytes | str], onnxruntime.InferenceSession]


class SplitError(Exception):
    """The graph cannot be streamed below sentence level (reason in the message)."""


def snr_db(test: npt.NDArray[Any], reference: npt.NDArray[Any]) -> float:
    """Signal-to-noise ratio of ``test`` against ``reference`` (inf when equal)."""
    ref = reference.astype(np.float64)
    noise = float(np.sum((test.astype(np.float64) - ref) ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(float(np.sum(ref**2)), 1e-30) / noise)


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


# -- graph analysis ---------------------------------------------------------------------


@dataclass(frozen=True)
class SplitLayout:
    """Where a graph is cut, what each part takes, and how far each reaches in time."""

    encoder_outputs: tuple[str, ...]
    """Tensors the encoder part returns: the flow's inputs, or ``z`` in a two-part cut."""
    z: str
    upsampled: str | None
    """The generator's first upsampled tensor, or ``None`` (decoder in one part)."""
    output: str
    part_inputs: dict[str, tuple[str, ...]]
    """Part name (encoder, flow, dec1, dec2 or dec) → its input names in order."""
    flow_context: int = 0
    dec1_context: int = 0
    dec_context: int = 0
    """Frames of context each stage needs on each side (receptive field + margin)."""
    upsample: int = 1
    """Samples of ``upsampled`` per frame."""
    hop: int = 256
    """Audio samples per frame."""

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.part_inputs)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["part_inputs"] = {k: list(v) for k, v in self.part_inputs.items()}
        data["encoder_outputs"] = list(self.encoder_outputs)
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> SplitLayout:
        return SplitLayout(
            encoder_outputs=tuple(data["encoder_outputs"]), z=data["z"],
            upsampled=data["upsampled"], output=data["output"],
            part_inputs={k: tuple(v) for k, v in data["part_inputs"].items()},
            flow_context=int(data["flow_context"]), dec1_context=int(data["dec1_context"]),
            dec_context=int(data["dec_context"]), upsample=int(data["upsample"]),
            hop=int(data["hop"]))


class _Graph:
    """Dataflow facts about an ONNX graph: producers, static and text-dependent tensors."""

    def __init__(self, model: Any) -> None:
        graph = model.graph
        self.nodes = list(graph.node)
        self.initializers = {init.name for init in graph.initializer}
        self.inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.outputs = [o.name for o in graph.output]
        self.producer: dict[str, int] = {}
        seen = set(self.inputs) | self.initializers
        for index, node in enumerate(self.nodes):
            for name in node.input:
                if name and name not in seen:
                    raise SplitError(f"graph is not in topological order at {node.name!r}")
            for name in node.output:
                if name:
                    self.producer[name] = index
                    seen.add(name)
        self.text_inputs = [n for n in self.inputs if n not in CONDITIONING_INPUTS]
        self.static: set[str] = set(self.initializers)
        self.dynamic: set[str] = set(self.text_inputs)
        for node in self.nodes:
            inputs = [n for n in node.input if n]
            if all(n in self.static for n in inputs):
                self.static.update(n for n in node.output if n)
            elif any(n in self.dynamic for n in inputs):
                self.dynamic.update(n for n in node.output if n)

    def dynamic_inputs(self, index: int) -> list[str]:
        return [n for n in self.nodes[index].input if n and n in self.dynamic]

    def dominator_chain(self, output: str) -> list[str]:
        """Dominators of ``output`` over the text dataflow, from ``output`` upwards."""
        root = ""
        idom: dict[str, str] = dict.fromkeys(self.text_inputs, root)
        depth: dict[str, int] = {root: 0, **dict.fromkeys(self.text_inputs, 1)}

        def lca(a: str, b: str) -> str:
            while a != b:
                if depth[a] >= depth[b]:
                    a = idom[a]
                else:
                    b = idom[b]
            return a

        for index, node in enumerate(self.nodes):
            preds = self.dynamic_inputs(index)
            if not preds:
                continue
            dom = preds[0]
            for pred in preds[1:]:
                dom = lca(dom, pred)
            for name in node.output:
                if name:
                    idom[name] = dom
                    depth[name] = depth[dom] + 1
        if output not in idom:
            raise SplitError("the audio output does not depend on the text inputs")
        chain = [output]
        while idom[chain[-1]] != root:
            chain.append(idom[chain[-1]])
        return chain

    def cone(self, outputs: Iterable[str], stops: set[str]) -> tuple[list[int], set[str]]:
        """Nodes computing ``outputs`` from ``stops``, and the other non-static names
        they read (graph inputs they need, or tensors a cut left out)."""
        needed: set[int] = set()
        leaves: set[str] = set()
        todo = [n for n in outputs if n not in stops]
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            index = self.producer.get(name)
            if index is None:
                if name not in self.initializers:
                    leaves.add(name)
                continue
            needed.add(index)
            todo.extend(n for n in self.nodes[index].input
                        if n and n not in stops and n not in seen)
        return sorted(needed), leaves

    def part_inputs(self, outputs: Sequence[str], inputs: Sequence[str]) -> tuple[str, ...]:
        """``inputs`` plus the conditioning inputs the part needs; raises when the part
        would need anything else."""
        _, leaves = self.cone(outputs, set(inputs))
        extra = leaves - CONDITIONING_INPUTS
        if extra:
            raise SplitError(f"a part computing {list(outputs)} also needs {sorted(extra)}")
        return (*inputs, *sorted(leaves & CONDITIONING_INPUTS))


def _flow_inputs(graph: _Graph, z: str) -> list[str] | None:
    """The flow's inputs from outside (see the module docstring), or ``None``."""
    z_nodes, _ = graph.cone([z], set(graph.inputs))
    ancestors = set(z_nodes)
    region: set[int] = set()
    produced: set[str] = set()
    for index in z_nodes:  # sorted: topological
        node = graph.nodes[index]
        dynamic = graph.dynamic_inputs(index)
        scoped = node.name.startswith("/flow/")
        if not dynamic:
            continue
        if scoped or all(name in produced for name in dynamic):
            region.add(index)
            produced.update(n for n in node.output if n)
    if not any(graph.nodes[i].name.startswith("/flow/") for i in region):
        return None
    external: list[str] = []
    for index in sorted(region & ancestors):
        for name in graph.dynamic_inputs(index):
            if name not in produced and name not in external:
                external.append(name)
    if not external or any(name in graph.inputs for name in external):
        return None
    return external


def analyze(model: Any) -> SplitLayout:
    """Find the cut points of a Piper graph; raises :class:`SplitError` when the graph
    does not have the expected shape. Contexts are filled in later by measurement."""
    graph = _Graph(model)
    if not {"input", "input_lengths", "scales"} <= set(graph.inputs):
        raise SplitError(f"unexpected graph inputs {graph.inputs}")
    if len(graph.outputs) < 1:
        raise SplitError("graph has no output")
    output = graph.outputs[0]
    chain = graph.dominator_chain(output)
    z = chain[-1]
    if z == output or z in graph.inputs:
        raise SplitError("no single tensor separates the decoder from the text encoder")
    upsampled = None
    for name in reversed(chain[:-1]):  # from z towards the output
        producer = graph.producer.get(name)
        if producer is not None and graph.nodes[producer].op_type == "ConvTranspose":
            upsampled = name if name != output else None
            break
    flow = _flow_inputs(graph, z)
    parts: dict[str, tuple[str, ...]] = {}
    encoder_outputs = tuple(flow) if flow else (z,)
    parts["encoder"] = graph.part_inputs(encoder_outputs, graph.text_inputs)
    if flow:
        parts["flow"] = graph.part_inputs([z], flow)
    if upsampled:
        parts["dec1"] = graph.part_inputs([upsampled], [z])
        parts["dec2"] = graph.part_inputs([output], [upsampled])
    else:
        parts["dec"] = graph.part_inputs([output], [z])
    return SplitLayout(encoder_outputs=encoder_outputs, z=z, upsampled=upsampled,
                       output=output, part_inputs=parts)


def _part_outputs(layout: SplitLayout, part: str) -> list[str]:
    return {"encoder": list(layout.encoder_outputs), "flow": [layout.z],
            "dec1": [layout.upsampled or ""], "dec2": [layout.output],
            "dec": [layout.output]}[part]


def extract_parts(model: Any, layout: SplitLayout) -> dict[str, bytes]:
    """Serialized ONNX models of each part."""
    import onnx.utils
    from onnx import TensorProto, helper

    extractor = onnx.utils.Extractor(model)
    for name in {*layout.encoder_outputs, layout.z, layout.upsampled or layout.z}:
        if name not in extractor.value_infos:  # exports without intermediate types
            extractor.value_infos[name] = helper.make_tensor_value_info(
                name, TensorProto.FLOAT, None)
    blobs = {}
    for part, inputs in layout.part_inputs.items():
        sub = extractor.extract_model(list(inputs), _part_outputs(layout, part))
        blobs[part] = sub.SerializeToString()
    return blobs


# -- running the parts ------------------------------------------------------------------


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


@dataclass
class SplitGraph:
    """A voice's graph parts as onnxruntime sessions, rendering sentences in windows.

    A window ``[start, end)`` of frames needs the decoder's last part to run on the
    window plus the decoder's reach on each side; that needs ``z`` to be exact over that
    range plus the first decoder part's reach; and ``z`` is exact over the range a flow
    call covers, less the flow's reach at each end that is not the sentence's end.
    """

    layout: SplitLayout
    sessions: dict[str, onnxruntime.InferenceSession]
    exact: bool = True
    """Windows equal the whole graph bit for bit (else to at least MIN_SNR_DB)."""
    min_span: int = MIN_GEMM_SPAN
    notes: list[str] = field(default_factory=list)

    @property
    def has_flow(self) -> bool:
        return "flow" in self.layout.part_inputs

    def _run(self, part: str, feeds: dict[str, npt.NDArray[Any]],
             stop: StopSignal | None = None) -> list[FloatArray]:
        names = self.layout.part_inputs[part]
        result = onnx_runs.run(self.sessions[part], {name: feeds[name] for name in names},
                               stop)
        return [np.asarray(r) for r in result]

    def encode(self, feeds: dict[str, npt.NDArray[Any]],
               stop: StopSignal | None = None) -> Encoded:
        """Run the encoder part on one sentence's model inputs."""
        outputs = self._run("encoder", feeds, stop)
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
            return self._run("flow", feeds, stop)[0]
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
            up = self._run("dec1", feeds, stop)[0]
            u = layout.upsample
            feeds[layout.upsampled] = up[..., (d0 - a) * u:(d1 - a) * u]
            audio = self._run("dec2", feeds, stop)[0]
        else:
            feeds[layout.z] = z[..., d0 - span[0]:d1 - span[0]]
            audio = self._run("dec", feeds, stop)[0]
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


# -- measuring and verifying ------------------------------------------------------------


def _reach(changed: npt.NDArray[np.bool_], at: int, per_frame: int, frames: int) -> int:
    """Frames from ``at`` to the farthest changed output position (in frames)."""
    where = np.nonzero(changed)[0]
    if where.size == 0:
        raise SplitError("a perturbation changed nothing downstream")
    first, last = int(where[0]) // per_frame, int(where[-1]) // per_frame
    if first <= 0 or last >= frames - 1:
        raise SplitError("receptive field too wide to measure on the calibration text")
    return max(at - first, last - at)


def _changed(a: FloatArray, b: FloatArray) -> npt.NDArray[np.bool_]:
    """Time positions (last axis) where any channel differs."""
    diff = a != b
    return np.asarray(diff.reshape(-1, diff.shape[-1]).any(axis=0))


def measure(graph: SplitGraph, feeds: dict[str, npt.NDArray[Any]]) -> SplitLayout:
    """Fill in rates and contexts by running the parts whole on one sentence."""
    layout = graph.layout
    encoded = graph.encode(feeds)
    frames = encoded.frames
    at = frames // 2
    base: dict[str, npt.NDArray[Any]] = {**encoded.conditioning, **encoded.arrays}

    flow_reach = 0
    if "flow" in layout.part_inputs:
        z = graph._run("flow", base)[0]
        for name in layout.encoder_outputs:
            bumped = dict(base)
            bumped[name] = base[name].copy()
            bumped[name][..., at] += 1.0
            flow_reach = max(flow_reach, _reach(
                _changed(z, graph._run("flow", bumped)[0]), at, 1, frames))
        base[layout.z] = z
    z = base[layout.z]
    if z.shape[-1] != frames:
        raise SplitError("decoder input is not at frame rate")
    bumped_z = dict(base)
    bumped_z[layout.z] = z.copy()
    bumped_z[layout.z][..., at] += 1.0

    def decode(feeds: dict[str, npt.NDArray[Any]]) -> tuple[FloatArray | None, FloatArray]:
        if layout.upsampled:
            up = graph._run("dec1", feeds)[0]
            return up, graph._run("dec2", {**feeds, layout.upsampled: up})[0]
        return None, graph._run("dec", feeds)[0]

    up, audio = decode(base)
    up_bumped, audio_bumped = decode(bumped_z)
    samples = audio.reshape(-1).shape[0]
    if samples % frames:
        raise SplitError(f"{samples} audio samples for {frames} frames")
    hop = samples // frames
    dec_reach = _reach(audio.reshape(-1) != audio_bumped.reshape(-1), at, hop, frames)
    upsample, dec1_reach = 1, 0
    if up is not None and up_bumped is not None:
        if up.shape[-1] % frames:
            raise SplitError("upsampled tensor is not a whole multiple of the frames")
        upsample = up.shape[-1] // frames
        dec1_reach = _reach(_changed(up, up_bumped), at, upsample, frames)
    return SplitLayout(
        encoder_outputs=layout.encoder_outputs, z=layout.z, upsampled=layout.upsampled,
        output=layout.output, part_inputs=layout.part_inputs,
        flow_context=flow_reach + CONTEXT_MARGIN if flow_reach else 0,
        dec1_context=dec1_reach + CONTEXT_MARGIN if up is not None else 0,
        dec_context=dec_reach + CONTEXT_MARGIN, upsample=upsample, hop=hop)


def verify(graph: SplitGraph, full: onnxruntime.InferenceSession,
           sentences: Sequence[dict[str, npt.NDArray[Any]]], windows: Sequence[int],
           ) -> float:
    """Worst SNR (dB, inf when bit-exact) of windowed against whole-graph audio; raises
    :class:`SplitError` below :data:`MIN_SNR_DB` or on a length mismatch."""
    worst = math.inf
    full_names = [i.name for i in full.get_inputs()]
    for feeds in sentences:
        expected = np.asarray(full.run(None, {n: feeds[n] for n in full_names})[0]).reshape(-1)
        encoded = graph.encode(feeds)
        sentence = Sentence(graph, encoded, plan_windows(encoded.frames, windows))
        got = np.concatenate([sentence.render(i) for i in range(len(sentence))])
        if got.shape != expected.shape:
            raise SplitError(f"windows gave {got.shape[0]} samples, the graph "
                             f"{expected.shape[0]}")
        worst = min(worst, snr_db(got, expected))
    if worst < MIN_SNR_DB:
        raise SplitError(f"windowed audio differs from the whole graph ({worst:.0f} dB SNR)")
    return worst


# -- building, with the cache -----------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verification_key(threads: int, windows: Sequence[int]) -> str:
    return (f"onnxruntime {onnxruntime.__version__}, {threads} thread(s), "
            f"windows {','.join(map(str, windows))}")


@dataclass
class Builder:
    """Builds (or reads from the cache) a voice's :class:`SplitGraph`."""

    session: SessionFactory
    threads: int
    windows: Sequence[int]
    cache_dir: Path | None
    full_session: Callable[[], onnxruntime.InferenceSession]
    calibration: Callable[[], list[dict[str, npt.NDArray[Any]]]]
    """Model inputs of the calibration sentences (noise 0)."""

    def build(self, model_path: Path) -> SplitGraph:
        key = verification_key(self.threads, self.windows)
        entry = self._entry(model_path)
        meta = self._read_meta(entry) if entry else None
        if meta is not None and entry is not None:
            layout = SplitLayout.from_json(meta["layout"])
            verified = meta.get("verified", {})
            outcome = verified.get(key)
            if outcome is not None and "error" in outcome:
                raise SplitError(f"{outcome['error']} (recorded in {entry})")
            graph = SplitGraph(layout, {part: self.session(str(entry / f"{part}.onnx"))
                                        for part in layout.parts})
            if outcome is not None:
                graph.exact = bool(outcome["exact"])
                graph.notes.append(f"graph parts from {entry}")
                return graph
            self._verify(graph, entry, verified)
            return graph
        import onnx

        model = onnx.load(str(model_path))
        layout = analyze(model)
        blobs = extract_parts(model, layout)
        del model
        graph = SplitGraph(layout, {part: self.session(blob) for part, blob in blobs.items()})
        graph.layout = measure(graph, self.calibration()[-1])
        if entry is not None:
            try:
                entry.mkdir(parents=True, exist_ok=True)
                for part, blob in blobs.items():
                    write_atomic(entry / f"{part}.onnx", blob)
                graph.notes.append(f"graph parts cached in {entry}")
            except OSError as err:
                graph.notes.append(f"graph cache not writable ({err.strerror}); parts "
                                   "built in memory")
                entry = None
        self._verify(graph, entry, {})
        return graph

    def _entry(self, model_path: Path) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"v{FORMAT}-{_sha256(model_path)}"

    @staticmethod
    def _read_meta(entry: Path) -> dict[str, Any] | None:
        try:
            meta = json.loads((entry / "split.json").read_text("utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                return None
            layout = SplitLayout.from_json(meta["layout"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if not all((entry / f"{part}.onnx").is_file() for part in layout.parts):
            return None
        return meta

    def _verify(self, graph: SplitGraph, entry: Path | None,
                verified: dict[str, Any]) -> None:
        """Compare with the whole graph; record the outcome (failures too) in the cache."""
        key = verification_key(self.threads, self.windows)
        try:
            snr = verify(graph, self.full_session(), self.calibration(), self.windows)
        except SplitError as err:
            if entry is not None:
                self._save_meta(entry, graph.layout, {**verified, key: {"error": str(err)}})
            raise
        graph.exact = math.isinf(snr)
        if not graph.exact:
            graph.notes.append(f"windows match whole sentences to {snr:.0f} dB SNR, "
                               "not bit for bit")
        if entry is not None:
            self._save_meta(entry, graph.layout, {**verified, key: {"exact": graph.exact}})

    @staticmethod
    def _save_meta(entry: Path, layout: SplitLayout, verified: dict[str, Any]) -> None:
        meta = {"format": FORMAT, "layout": layout.to_json(), "verified": verified}
        with contextlib.suppress(OSError):
            write_atomic(entry / "split.json", json.dumps(meta, indent=1).encode())
