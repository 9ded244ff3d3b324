"""Which backend and precision runs each of a voice's graph parts, chosen at load behind
quality gates.

A faster backend or a lower precision is only worth having if the voice still sounds the
same. So each candidate part (see :mod:`.backends`) is run at load on the calibration
text's exact inputs to that part, as onnxruntime f32 computes them, and compared with
onnxruntime f32's outputs:

- **durations**: the encoder part's frame count and frame mask must be identical (timing,
  windows and sentence joins then stay exactly as with onnxruntime); its other outputs
  must meet the SNR gate as well;
- **per part**: every output at least :data:`MIN_PART_SNR_DB` dB SNR against f32;
- **windows**: with the parts chosen, a sentence rendered in windows must equal the same
  sentence rendered whole by the same parts, or be within :data:`MIN_WINDOW_SNR_DB` dB
  (else windows would click where they join).

A part that fails keeps onnxruntime f32; a failing window gate drops the candidates
altogether; either is said in one log line. With ``--backend auto`` a passing candidate
is kept only where it measured faster than onnxruntime on the calibration text.
Measured on en_US-joe-medium (docs/benchmarks.md): OpenVINO bf16 flow ~44 dB and dec2
~43 dB; a bf16 encoder changes durations, so the encoder is only offered in f32.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .backends import (
    SHAPE_QUANTUM,
    Backend,
    Part,
    Precision,
    bf16_supported,
    openvino_available,
)
from .piper_build import snr_db
from .piper_graph import SplitLayout
from .piper_windows import Sentence, SplitGraph, plan_windows

__all__ = [
    "MIN_PART_SNR_DB",
    "MIN_WINDOW_SNR_DB",
    "BackendChoice",
    "GateFailed",
    "PartChoice",
    "Wanted",
    "apply_recorded",
    "choice_key",
    "choose",
    "reference_calls",
    "time_quanta",
    "try_candidates",
    "window_snr",
]

MIN_PART_SNR_DB = 35.0
"""Each part's outputs against onnxruntime f32 on the calibration text."""

MIN_WINDOW_SNR_DB = 60.0
"""Windows against the whole sentence in the same backend and precision."""

REFERENCE = "onnxruntime f32"

DURATION_PARTS = ("encoder", "model")
"""Parts whose output length is set by predicted durations: Piper's encoder, and a
whole graph run as one part (Kokoro's ``model``)."""

Array = npt.NDArray[Any]
Calls = list[dict[str, tuple[dict[str, Array], list[Array]]]]
"""Per calibration sentence: part → (its inputs, onnxruntime f32's outputs)."""


class GateFailed(Exception):
    """A candidate configuration does not sound like onnxruntime f32."""


@dataclass(frozen=True)
class Wanted:
    """What was asked for: ``--backend`` and ``--precision``."""

    backend: str = "onnxruntime"
    precision: str = "f32"


@dataclass(frozen=True)
class PartChoice:
    """What runs one part, and the gate's figures for it."""

    label: str = REFERENCE
    snr_db: float | None = None
    """Worst output SNR against onnxruntime f32 (inf: identical; None: not measured)."""
    ms: float | None = None
    """Its time on the calibration text (ms), when a candidate was measured."""
    reference_ms: float | None = None
    refused: str | None = None
    """Why the candidate was not used (then the part runs onnxruntime f32)."""

    def built_as(self) -> tuple[str, Precision]:
        """(backend, precision) its label names, to build it again from a record; raises
        :class:`ValueError` for a precision no backend has (a damaged record)."""
        name, precision = self.label.split()
        if precision not in ("f32", "bf16"):
            raise ValueError(f"unknown precision {precision!r}")
        return name, "bf16" if precision == "bf16" else "f32"

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.label.split()[0], "precision": self.label.split()[1],
                "snr_db": _finite(self.snr_db), "ms": _round(self.ms),
                "reference_ms": _round(self.reference_ms), "refused": self.refused}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PartChoice:
        refused = data.get("refused")
        return cls(f"{data['backend']} {data['precision']}", _unfinite(data.get("snr_db")),
                   _number(data.get("ms")), _number(data.get("reference_ms")),
                   refused if isinstance(refused, str) else None)


def _finite(value: float | None) -> float | str | None:
    if value is None:
        return None
    return "inf" if math.isinf(value) else round(value, 1)


def _unfinite(value: Any) -> float | None:
    return math.inf if value == "inf" else _number(value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@dataclass(frozen=True)
class BackendChoice:
    """What runs each part of one voice, and why."""

    parts: dict[str, PartChoice] = field(default_factory=dict)
    windows_snr_db: float | None = None
    refused: str | None = None
    """Why every candidate was dropped (the window gate), if so."""
    ranks: dict[str, dict[str, int]] = field(default_factory=dict, compare=False,
                                             repr=False)
    """Each part's input ranks, as measured (OpenVINO's converter needs them): recorded
    with the choice, so that it is built again without the calibration run."""

    @property
    def labels(self) -> dict[str, str]:
        return {part: choice.label for part, choice in self.parts.items()}

    def summary(self) -> str:
        """One line for the load log: each part's backend and SNR."""
        items = []
        for part, choice in self.parts.items():
            note = f" ({choice.snr_db:.0f} dB)" if choice.snr_db is not None and \
                math.isfinite(choice.snr_db) and choice.label != REFERENCE else ""
            items.append(f"{part} {choice.label}{note}")
        if self.windows_snr_db is not None:
            items.append("windows " + ("bit-exact" if math.isinf(self.windows_snr_db)
                                       else f"{self.windows_snr_db:.0f} dB"))
        return ", ".join(items)

    def to_json(self) -> dict[str, Any]:
        return {"parts": {part: c.to_json() for part, c in self.parts.items()},
                "windows_snr_db": _finite(self.windows_snr_db), "refused": self.refused}

    def to_record(self) -> dict[str, Any]:
        """:meth:`to_json` and the ranks: what the graph cache keeps."""
        return {**self.to_json(), "ranks": self.ranks}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BackendChoice:
        """Read :meth:`to_json` or :meth:`to_record` (raises on anything else)."""
        refused = data.get("refused")
        ranks = {part: {name: int(rank) for name, rank in inputs.items()}
                 for part, inputs in data.get("ranks", {}).items()}
        return cls({part: PartChoice.from_json(c) for part, c in data["parts"].items()},
                   _unfinite(data.get("windows_snr_db")),
                   refused if isinstance(refused, str) else None, ranks)


def reference_calls(graph: SplitGraph, sentences: Sequence[dict[str, Array]]) -> Calls:
    """Every part's inputs and outputs for each calibration sentence, whole, as
    ``graph`` (onnxruntime f32) computes them."""
    layout = graph.layout
    calls: Calls = []
    for feeds in sentences:
        mine: dict[str, tuple[dict[str, Array], list[Array]]] = {}
        values: dict[str, Array] = dict(feeds)
        names = {"encoder": list(layout.encoder_outputs), "flow": [layout.z],
                 "dec1": [layout.upsampled or ""], "dec2": [layout.output],
                 "dec": [layout.output]}
        for part in layout.parts:
            inputs = {name: values[name] for name in layout.part_inputs[part]}
            outputs = graph.sessions[part].run(inputs)
            mine[part] = (inputs, outputs)
            values.update(zip(names[part], outputs, strict=False))
        calls.append(mine)
    return calls


def ranks(calls: Calls, part: str) -> dict[str, int]:
    """The rank of each of ``part``'s inputs (the split parts do not record them)."""
    return {name: array.ndim for name, array in calls[0][part][0].items()}


def time_quanta(layout: SplitLayout, part: str) -> dict[str, int]:
    """The time axes of ``part``'s inputs a backend may pad, with their quantum
    (:data:`~.backends.SHAPE_QUANTUM` frames in each tensor's own units).

    None for the encoder (its inputs are phonemes; padding them would change its frame
    count) nor for the decoder's first part: zeros after a sentence's last frame there
    changed its audio's last frames to 29.9 dB against onnxruntime f32 on joe (below
    the gate), and that part is small (~15 ms for an 8.6 s sentence). The flow's frame
    mask zeroes its padding, and the second decoder part's padding measured 77 dB."""
    if part == "flow":
        return dict.fromkeys(layout.encoder_outputs, SHAPE_QUANTUM)
    if part == "dec2" and layout.upsampled is not None:
        return {layout.upsampled: SHAPE_QUANTUM * layout.upsample}
    return {}


def _time_ms(run: Part, calls: Calls, part: str) -> float:
    """One pass over every sentence, in ms (``run`` has run them once already: warm)."""
    begin = time.perf_counter()
    for call in calls:
        run.run(call[part][0])
    return (time.perf_counter() - begin) * 1000.0


def gate_part(part: str, candidate: Part, reference: Part, calls: Calls,
              ) -> PartChoice:
    """The candidate's figures for ``part``; raises :class:`GateFailed` below a gate
    (before timing anything: a refused candidate costs one pass)."""
    got = [candidate.run(call[part][0]) for call in calls]
    worst = math.inf
    for call, outputs in zip(calls, got, strict=True):
        expected = call[part][1]
        for out, ref in zip(outputs, expected, strict=True):
            if out.size == 0 < ref.size:
                raise GateFailed(f"{part}: no output where {REFERENCE} gives {ref.shape}")
            if out.shape != ref.shape:
                raise GateFailed(f"{part}: output shape {out.shape} instead of {ref.shape}"
                                 + (" (durations changed)" if part in DURATION_PARTS
                                    else ""))
            if part == "encoder" and np.array_equal(ref, np.round(ref)) and \
                    not np.array_equal(out, ref):
                raise GateFailed("encoder: durations changed (the frame mask differs)")
            worst = min(worst, snr_db(out, ref))
    if worst < MIN_PART_SNR_DB:
        raise GateFailed(f"{part}: {worst:.1f} dB SNR against {REFERENCE} "
                         f"(< {MIN_PART_SNR_DB:.0f} dB)")
    return PartChoice(candidate.label, worst, _time_ms(candidate, calls, part),
                      _time_ms(reference, calls, part))


def try_candidates(part: str, offered: Sequence[tuple[str, Precision]], wanted: Wanted,
                   build: Callable[[str, Precision], Part], reference: Part, calls: Calls,
                   log: Callable[[str], None]) -> tuple[Part, PartChoice]:
    """What runs ``part``: the first of ``offered`` that ``build`` can make and that
    passes :func:`gate_part` (and, with ``--backend auto``, is faster than onnxruntime
    f32), else ``reference``; ``log`` gets one line per refused candidate."""
    chosen: tuple[Part, PartChoice] = (reference, PartChoice())
    for name, precision in offered:
        label = f"{name} {precision}"
        try:
            candidate = build(name, precision)
            choice = gate_part(part, candidate, reference, calls)
        except Exception as err:  # noqa: BLE001 - converters raise assorted errors
            # One line: OpenVINO's messages run over several.
            reason = " ".join((str(err) if isinstance(err, GateFailed)
                               else f"{type(err).__name__}: {err}").split())
            log(f"part {part}: {label} refused, {REFERENCE} kept: {reason}")
            chosen = (reference, PartChoice(refused=f"{label}: {reason}"))
            continue
        if wanted.backend == "auto" and choice.ms is not None and \
                choice.reference_ms is not None and choice.ms >= choice.reference_ms:
            chosen = (reference, PartChoice(refused=f"{label}: slower ({choice.ms:.1f} ms "
                                                    f"vs {choice.reference_ms:.1f})"))
            continue
        return candidate, choice
    return chosen


def window_snr(graph: SplitGraph, sentences: Sequence[dict[str, Array]],
               windows: Sequence[int]) -> float:
    """Worst SNR of windowed against whole-sentence audio, both from ``graph``."""
    worst = math.inf
    for feeds in sentences:
        encoded = graph.encode(feeds)
        whole = graph.render(encoded, 0, encoded.frames)
        sentence = Sentence(graph, encoded, plan_windows(encoded.frames, windows))
        got = np.concatenate([sentence.render(i) for i in range(len(sentence))])
        if got.shape != whole.shape:
            return -math.inf
        worst = min(worst, snr_db(got, whole))
    return worst


def candidates(wanted: Wanted, part: str) -> list[tuple[str, Precision]]:
    """(backend, precision) to try for ``part``, best first; empty: onnxruntime f32."""
    if wanted.backend == "onnxruntime" or not openvino_available():
        return []
    precision: Precision
    if wanted.precision == "auto":
        precision = "bf16" if bf16_supported() else "f32"
    else:
        precision = "bf16" if wanted.precision == "bf16" else "f32"
    if part == "encoder" or precision == "f32":
        return [("openvino", "f32")]  # a bf16 encoder changes durations (measured)
    return [("openvino", precision)]


def choice_key(wanted: Wanted) -> str:
    """What a recorded choice holds for besides the parts' verification (onnxruntime,
    threads, this CPU's features): what was asked for, and OpenVINO's version."""
    version = "none"
    if openvino_available():
        import openvino

        version = openvino.__version__
    return f"--backend {wanted.backend} --precision {wanted.precision}, openvino {version}"


def apply_recorded(reference: SplitGraph, sources: Mapping[str, bytes | str],
                   recorded: BackendChoice, backends: Mapping[str, Backend],
                   ) -> tuple[SplitGraph, BackendChoice]:
    """The parts of a choice made (and gated) at an earlier load, built again without
    measuring or gating: the same versions, CPU and calibration give the same figures,
    and the choice stays what it was instead of following one load's timings. Raises
    when a part cannot be built (then :func:`choose` decides afresh)."""
    parts = recorded.parts
    if set(parts) != set(reference.layout.parts):
        raise ValueError("the recorded choice is for other parts")
    if all(choice.label == REFERENCE for choice in parts.values()):
        return reference, recorded
    sessions: dict[str, Part] = {}
    for part, choice in parts.items():
        if choice.label == REFERENCE:
            sessions[part] = reference.sessions[part]
            continue
        name, precision = choice.built_as()
        sessions[part] = backends[name].part(sources[part], recorded.ranks[part], precision,
                                             time_quanta(reference.layout, part))
    return SplitGraph(reference.layout, sessions, reference.min_span), recorded


def choose(reference: SplitGraph, sources: Mapping[str, bytes | str],
           sentences: Sequence[dict[str, Array]], windows: Sequence[int], wanted: Wanted,
           backends: Mapping[str, Backend],
           log: Callable[[str], None]) -> tuple[SplitGraph, BackendChoice]:
    """The parts to serve with and what was chosen; ``reference`` is onnxruntime f32.

    ``log`` gets one line per refused candidate or configuration."""
    if wanted.backend == "onnxruntime":
        return reference, BackendChoice({part: PartChoice() for part in
                                         reference.layout.parts})
    calls = reference_calls(reference, sentences)
    measured = {part: ranks(calls, part) for part in reference.layout.parts}
    sessions: dict[str, Part] = {}
    parts: dict[str, PartChoice] = {}

    def builder(part: str) -> Callable[[str, Precision], Part]:
        return lambda name, precision: backends[name].part(
            sources[part], measured[part], precision, time_quanta(reference.layout, part))

    for part in reference.layout.parts:
        sessions[part], parts[part] = try_candidates(
            part, candidates(wanted, part), wanted, builder(part), reference.sessions[part],
            calls, log)
    if all(choice.label == REFERENCE for choice in parts.values()):
        return reference, BackendChoice(parts, ranks=measured)
    graph = SplitGraph(reference.layout, sessions, reference.min_span)
    snr = window_snr(graph, sentences, windows)
    if snr < MIN_WINDOW_SNR_DB:
        reason = (f"windows differ from whole sentences ({snr:.1f} dB SNR < "
                  f"{MIN_WINDOW_SNR_DB:.0f} dB) with " +
                  ", ".join(f"{p} {c.label}" for p, c in parts.items()))
        log(f"{reason}; {REFERENCE} kept for every part")
        return reference, BackendChoice(
            {part: PartChoice(refused=choice.refused) for part, choice in parts.items()},
            refused=reason, ranks=measured)
    return graph, BackendChoice(parts, windows_snr_db=snr, ranks=measured)
