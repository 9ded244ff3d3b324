"""Which backend runs a Kokoro model: onnxruntime f32, or OpenVINO behind the quality gates.

Kokoro's graph is one part (``model``: tokens, style and speed in, audio out; it is not
cut, see :mod:`.kokoro`), so the choice is made for the whole graph, once per model file
(its voices share the session), at the first load of one of its voices, with the gates
Piper's parts pass (:mod:`.backend_gates`):

- **durations**: the audio must have exactly onnxruntime's length (the model predicts
  each token's duration inside the graph; a different rounding there changes timing);
- **SNR**: at least :data:`~.backend_gates.MIN_PART_SNR_DB` dB against onnxruntime;
- with ``--backend auto``, faster than onnxruntime on the calibration text.

Measured on Kokoro-82M int8 (``kokoro-v1.0.int8.onnx``, the tests' model) on a 2-core
EPYC with AVX-512 bf16 (docs/benchmarks.md): OpenVINO 2026.4 gives no audio for the
calibration text in f32 and bf16 (read otherwise, other durations) and is 1.4-1.5x
slower, so onnxruntime is kept; the gates are what makes trying safe on other CPUs and
models.

Measuring costs a load seconds (OpenVINO compiles the model: 4.5-13 s for the int8
model on that machine), so the outcome is kept in the graph cache (``kokoro/<model
sha256>.json``), keyed by what it depends on (onnxruntime and OpenVINO versions, threads,
this CPU's features, ``--backend``/``--precision``); later loads build what was chosen
without measuring again. No padding of the token axis (``quanta``): extra tokens would
change the audio, not just its length.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy.typing as npt
import onnxruntime

from chorus.common.files import file_sha256, write_atomic

from .backend_gates import (
    REFERENCE,
    BackendChoice,
    PartChoice,
    Wanted,
    choice_key,
    try_candidates,
)
from .backends import Backend, Part, Precision, bf16_supported, openvino_available
from .piper_build import cpu_isa

__all__ = ["PART", "KokoroBackends", "candidates", "record_key"]

_LOGGER = logging.getLogger(__name__)

PART = "model"
"""The one part of a Kokoro graph."""

FORMAT = 1

Array = npt.NDArray[Any]


def candidates(wanted: Wanted) -> list[tuple[str, Precision]]:
    """(backend, precision) to try, best first. bf16 is offered for the whole graph
    (where the CPU has it) before f32: the duration gate refuses it if its rounding
    moves a token's duration, and then f32 is tried."""
    if wanted.backend == "onnxruntime" or not openvino_available():
        return []
    if wanted.precision == "f32":
        return [("openvino", "f32")]
    if wanted.precision == "bf16":
        return [("openvino", "bf16")]
    offered: list[tuple[str, Precision]] = [("openvino", "bf16")] if bf16_supported() else []
    return [*offered, ("openvino", "f32")]


def record_key(wanted: Wanted, threads: int) -> str:
    """What a recorded choice holds for besides the model's content."""
    return (f"onnxruntime {onnxruntime.__version__}, {threads} thread(s), cpu {cpu_isa()}, "
            f"{choice_key(wanted)}")


class KokoroBackends:
    """Chooses (or reads the recorded choice of) the part that runs a Kokoro model."""

    def __init__(self, wanted: Wanted, threads: int, backends: Mapping[str, Backend],
                 cache_dir: Path | None) -> None:
        self.wanted = wanted
        self.threads = threads
        self.backends = backends
        self.cache_dir = cache_dir

    def choose(self, model_path: Path, reference: Part,
               calibration: Callable[[], Sequence[dict[str, Array]]],
               ) -> tuple[Part, BackendChoice]:
        """The part to serve ``model_path`` with, and what was chosen and why.
        ``reference`` is its onnxruntime f32 part; ``calibration`` gives the feeds the
        gates compare on (one dict per unit)."""
        if self.wanted.backend == "onnxruntime":
            return reference, BackendChoice({PART: PartChoice()})
        if not openvino_available():
            _LOGGER.warning("Kokoro model %s: --backend %s: OpenVINO is not installed (the "
                            "chorus-tts[openvino] extra); onnxruntime f32", model_path.name,
                            self.wanted.backend)
            return reference, BackendChoice({PART: PartChoice()})
        record = self._record_path(model_path)
        key = record_key(self.wanted, self.threads)
        recorded = _read(record).get(key) if record is not None else None
        if isinstance(recorded, dict):
            try:
                chosen = self._apply(model_path, reference, BackendChoice.from_json(recorded))
            except Exception as err:  # noqa: BLE001 - converters raise assorted errors
                _LOGGER.warning("Kokoro model %s: the backend choice recorded in %s could "
                                "not be used (%s); choosing again", model_path.name, record,
                                err)
            else:
                _LOGGER.info("Kokoro model %s: backend as chosen at an earlier load "
                             "(recorded in %s): %s", model_path.name, record,
                             chosen[1].summary())
                return chosen
        chosen = self._measure(model_path, reference, calibration())
        _LOGGER.info("Kokoro model %s: backend (--backend %s --precision %s): %s",
                     model_path.name, self.wanted.backend, self.wanted.precision,
                     chosen[1].summary())
        if record is not None:
            _save(record, key, chosen[1].to_record())
        return chosen

    def _record_path(self, model_path: Path) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / "kokoro" / f"{file_sha256(model_path)}.json"

    def _measure(self, model_path: Path, reference: Part,
                 sentences: Sequence[dict[str, Array]]) -> tuple[Part, BackendChoice]:
        calls = [{PART: (dict(feeds), reference.run(feeds))} for feeds in sentences]
        measured: dict[str, dict[str, int]] = {PART: {}}  # the graph records its shapes
        part, choice = try_candidates(
            PART, candidates(self.wanted), self.wanted,
            lambda name, precision: self.backends[name].part(
                str(model_path), measured[PART], precision),
            reference, calls,
            lambda line: _LOGGER.warning("Kokoro model %s: %s", model_path.name, line))
        return part, BackendChoice({PART: choice}, ranks=measured)

    def _apply(self, model_path: Path, reference: Part, recorded: BackendChoice,
               ) -> tuple[Part, BackendChoice]:
        """The part a recorded choice names, built without measuring (raises when it
        cannot be: then it is chosen afresh)."""
        choice = recorded.parts[PART]
        if choice.label == REFERENCE:
            return reference, recorded
        name, precision = choice.built_as()
        return self.backends[name].part(str(model_path), recorded.ranks[PART],
                                        precision), recorded


def _read(record: Path) -> dict[str, Any]:
    """The recorded choices by key; none when the file is missing or damaged."""
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or \
            not isinstance(data.get("choices"), dict):
        return {}
    choices: dict[str, Any] = data["choices"]
    return choices


def _save(record: Path, key: str, value: dict[str, Any]) -> None:
    """Keep ``value`` under ``key`` (best effort: an unwritable cache only costs the next
    load the measuring again)."""
    choices = {**_read(record), key: value}
    with contextlib.suppress(OSError):
        record.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(record, json.dumps({"format": FORMAT, "choices": choices},
                                        indent=1).encode())
