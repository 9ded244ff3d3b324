"""Backends: what runs an ONNX graph part (onnxruntime, or OpenVINO) and in which precision.

The Piper engine cuts a voice's graph into parts (encoder + durations, flow, dec1, dec2;
see :mod:`.piper_windows`). Each part becomes a :class:`Part`: a callable with the part's
inputs and outputs, stopped part-way when its job's :class:`~.base.StopSignal` fires.
A :class:`Backend` turns an ONNX part (a path or model bytes, plus the rank of every
input, which the split parts do not record) into one.

- :class:`OnnxRuntime`: the server's sessions (:func:`.onnx_runs.session`), f32 only, on
  the CPU or a CUDA GPU (:mod:`.devices`); stopping sets the run's
  ``RunOptions.terminate``.
- :class:`OpenVino`: the ``openvino`` package (the ``chorus-tts[openvino]`` extra), f32 or
  bf16 (bf16 only on CPUs that compute it natively: AMX or AVX-512 bf16). Each worker
  thread keeps one infer request per part and runs it asynchronously, so stopping calls
  ``InferRequest.cancel()``. Measured limit: OpenVINO checks a cancel between its own
  scheduled nodes, so a running convolution finishes first (still milliseconds).

**Few shapes for OpenVINO.** OpenVINO's CPU plugin keeps memory for every input shape a
compiled model has seen, and nearly every window and sentence has a length of its own:
measured on the joe voice's dec2 part, RSS grew ~80 MiB with each new length (4.4 GiB
after 37 sentences), and a new length's first call took 30-100 ms longer. So a part's
time axes can be padded with zeros up to a multiple of a quantum (``quanta``: input
name -> quantum in that input's units; :data:`SHAPE_QUANTUM` frames in the engines) and
the outputs cut back: a window decoded between context frames keeps its own frames as
they were (the padding lies beyond its right context), and the flow's frame mask is
zero over the padding. Only at a sentence's end does the decoder see zeros where it saw
its own edge; the gates (:mod:`.backend_gates`) measure that like any other difference.
OpenVINO's per-shape runtime cache is turned off as well: 24 bucket lengths of dec2,
each run twice, left RSS at 1,472 MiB with it and 844 MiB without, at the same speed.

Which backend and precision a voice's parts get is decided at load against quality gates
(:mod:`.backend_gates`); this module only builds and runs parts.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime

from . import onnx_runs
from .base import Cancelled, StopSignal

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "SHAPE_QUANTUM",
    "Backend",
    "OnnxRuntime",
    "OpenVino",
    "OrtPart",
    "Part",
    "Precision",
    "bf16_supported",
    "openvino_available",
]

Precision = Literal["f32", "bf16"]
BACKENDS = ("auto", "onnxruntime", "openvino")
PRECISIONS = ("auto", "f32", "bf16")

Array = npt.NDArray[Any]

SHAPE_QUANTUM = 16
"""Frames an OpenVINO part's time axes are padded to a multiple of (see above): at most
15 frames (0.17 s of audio at 22,050 Hz) of extra compute per call, and the decoder's
windows (up to ~430 frames with their context) come in fewer than 30 lengths."""


class Part(Protocol):
    """One graph part, callable from several threads at once."""

    @property
    def label(self) -> str:
        """What runs it, e.g. ``onnxruntime f32`` (for logs, ``/voices`` and metrics)."""
        ...

    def run(self, feeds: Mapping[str, Array], stop: StopSignal | None = None,
            ) -> list[Array]:
        """The part's outputs in graph order; raises :class:`~.base.Cancelled` when
        ``stop`` fires before or during the call."""
        ...


class Backend(Protocol):
    @property
    def name(self) -> str: ...

    def part(self, model: bytes | str, ranks: Mapping[str, int],
             precision: Precision, quanta: Mapping[str, int] | None = None) -> Part:
        """A part from an ONNX model (path or bytes); ``ranks``: each input's rank (empty:
        as the model records them); ``quanta``: time axes (last axis) the backend may
        pad, see above."""
        ...


@dataclass(frozen=True)
class OrtPart:
    """An onnxruntime session as a :class:`Part`."""

    session: onnxruntime.InferenceSession
    label: str = "onnxruntime f32"

    def run(self, feeds: Mapping[str, Array], stop: StopSignal | None = None,
            ) -> list[Array]:
        return [np.asarray(r) for r in onnx_runs.run(self.session, feeds, stop)]


@dataclass(frozen=True)
class OnnxRuntime:
    """The default backend: sessions as the server has always run them (f32), on
    ``device`` (``cpu`` or ``cuda:N``)."""

    threads: int
    name: str = "onnxruntime"
    device: str = "cpu"

    def part(self, model: bytes | str, ranks: Mapping[str, int] | None = None,
             precision: Precision = "f32", quanta: Mapping[str, int] | None = None,
             ) -> OrtPart:
        """onnxruntime needs no padding (``quanta`` is ignored): it keeps no memory per
        shape with the server's session options (:func:`.onnx_runs.session`)."""
        if precision != "f32":
            raise ValueError(f"onnxruntime runs f32 only, not {precision}")
        return OrtPart(onnx_runs.session(model, self.threads, device=self.device))


def openvino_available() -> bool:
    """Whether the ``openvino`` package can be imported (the ``openvino`` extra)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@cache
def bf16_supported() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively on this CPU."""
    if not openvino_available():
        return False
    import openvino

    try:
        caps = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except RuntimeError:
        return False
    return "BF16" in [str(c).upper() for c in caps]


def _padded_length(length: int, quantum: int) -> int:
    return -(-length // quantum) * quantum


@dataclass
class OvPart:
    """An OpenVINO compiled model as a :class:`Part`: one infer request per thread,
    time axes padded to ``quanta`` (input name -> multiple)."""

    compiled: Any
    label: str
    quanta: Mapping[str, int] = field(default_factory=dict)
    _local: threading.local = field(default_factory=threading.local)

    def _request(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def run(self, feeds: Mapping[str, Array], stop: StopSignal | None = None,
            ) -> list[Array]:
        request = self._request()
        inputs = {name: np.ascontiguousarray(array) for name, array in feeds.items()}
        kept = self._pad(inputs)
        if stop is None:
            request.infer(inputs)
        else:
            stop.check()
            with stop.hooked(request.cancel):
                try:
                    request.start_async(inputs)
                    request.wait()
                except Exception as err:
                    if stop.is_set():
                        raise Cancelled("model call stopped: the request ended") from err
                    raise
            if stop.is_set():  # cancelled after the last node: the outputs may be partial
                raise Cancelled("model call stopped: the request ended")
        # Copies: the request's output memory is reused by its next call.
        outputs = [request.get_output_tensor(i).data for i in range(len(self.compiled.outputs))]
        if kept is None:
            return [np.array(out) for out in outputs]
        length, padded = kept
        return [np.array(out[..., :out.shape[-1] * length // padded]) for out in outputs]

    def _pad(self, inputs: dict[str, Array]) -> tuple[int, int] | None:
        """Pad the time axes in place in ``inputs``; (length, padded length) of the
        first, by which every output's time axis is cut back, or None (no padding)."""
        kept = None
        for name, quantum in self.quanta.items():
            array = inputs.get(name)
            if array is None:
                continue
            length = array.shape[-1]
            padded = _padded_length(length, quantum)
            if kept is None:
                kept = (length, padded)
            if padded != length:
                widths = [(0, 0)] * (array.ndim - 1) + [(0, padded - length)]
                inputs[name] = np.pad(array, widths)
        return kept


@dataclass(frozen=True)
class OpenVino:
    """OpenVINO's CPU plugin. ``streams``: calls that may run at once (the workers);
    each gets ``threads`` threads."""

    threads: int
    streams: int = 1
    name: str = "openvino"

    def part(self, model: bytes | str, ranks: Mapping[str, int],
             precision: Precision, quanta: Mapping[str, int] | None = None) -> OvPart:
        import openvino

        if precision == "bf16" and not bf16_supported():
            raise ValueError("this CPU does not compute bf16 natively")
        # The converter needs every input's rank: a split part's cut inputs have none
        # recorded, and a convolution cannot be converted without it. A whole graph
        # records its inputs' shapes (no ``ranks``): overriding them with dynamic ones
        # made Kokoro's fail to compile.
        source = io.BytesIO(model) if isinstance(model, bytes) else model
        ov_model = openvino.convert_model(source, input=[
            (name, openvino.PartialShape.dynamic(rank)) for name, rank in ranks.items()]
            or None)
        core = openvino.Core()
        compiled = core.compile_model(ov_model, "CPU", {
            "INFERENCE_PRECISION_HINT": precision,
            "NUM_STREAMS": str(self.streams),
            "INFERENCE_NUM_THREADS": str(self.threads * self.streams),
            # Other processes share the cores: pinning threads would fight them.
            "ENABLE_CPU_PINNING": "NO",
            # Kernels kept per input shape: memory for every shape ever seen (see above).
            "CPU_RUNTIME_CACHE_CAPACITY": "0",
        })
        return OvPart(compiled, f"openvino {precision}", dict(quanta or {}))
