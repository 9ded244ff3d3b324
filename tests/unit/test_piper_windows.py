"""Sub-sentence streaming of Piper voices in windows: plans, bit-exact audio, costs, gain.

The reference is the whole graph (see ``tests.unit.piper_streaming``).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chorus.server.engines.base import SynthesisParams
from chorus.server.engines.piper import (
    CALIBRATION_TEXT,
    PiperLoadedVoice,
    PiperWindows,
    calibration_gain,
    to_pcm,
)
from chorus.server.engines.piper_build import snr_db
from chorus.server.engines.piper_windows import plan_windows
from tests.unit.piper_streaming import (
    JOE_CONFIG,
    JOE_MODEL,
    OVER_LONG,
    SENTENCE_199,
    WholeGraphs,
    engine,
    load,
    load_joe,
    quiet,
    reference,
    streamed,
)


@pytest.fixture(scope="module")
def joe(graph_cache_dir: Path) -> PiperLoadedVoice:
    return load_joe(graph_cache_dir)


@pytest.fixture(scope="module")
def whole_graph() -> Callable[[Path], Any]:
    """The reference: a one-thread session on a model's whole graph."""
    return WholeGraphs()


def test_plan_windows_grow_and_merge_a_short_tail() -> None:
    assert plan_windows(10, (16, 32)) == [(0, 10)]
    assert plan_windows(300, (16, 32, 64, 128)) == [(0, 16), (16, 48), (48, 112),
                                                    (112, 240), (240, 300)]
    assert plan_windows(250, (16, 32, 64, 128)) == [(0, 16), (16, 48), (48, 112), (112, 250)]
    windows = plan_windows(1000, (16, 32, 64))
    assert windows[:3] == [(0, 16), (16, 48), (48, 112)]
    assert all(e - s == 64 for s, e in windows[3:-1])
    assert windows[-1][1] == 1000 and windows[-1][1] - windows[-1][0] >= 16
    assert plan_windows(40, ()) == [(0, 40)]


@pytest.mark.parametrize("length_scale", [0.7, 1.0, 1.5])
@pytest.mark.parametrize("text", ["Hello there.", SENTENCE_199, OVER_LONG,
                                  "Ready? Yes! One, two; three: done."])
def test_windows_equal_the_whole_graph_bit_for_bit(
        joe: PiperLoadedVoice, whole_graph: Callable[[Path], Any], text: str,
        length_scale: float) -> None:
    params = quiet(length_scale=length_scale)
    units = joe.prepare(text)
    if text is OVER_LONG:
        assert len(units) > 1  # split by --max-sentence-phonemes first, then windowed
    for unit in units:
        pieces = streamed(joe, unit, params)
        expected = reference(joe, whole_graph(JOE_MODEL), unit, params)
        got = np.concatenate(pieces)
        assert got.shape == expected.shape
        assert np.array_equal(got, expected), (
            int(np.count_nonzero(got != expected)), snr_db(got, expected))
        assert np.array_equal(joe.render(unit, params), expected)  # whole, through parts


def test_first_window_of_a_long_sentence_is_a_small_part_of_it(joe: PiperLoadedVoice) -> None:
    unit = joe.prepare(SENTENCE_199)[0]
    pieces = streamed(joe, unit, quiet())
    assert len(pieces) >= 4
    assert len(pieces[0]) == 16 * 256  # the first window: 16 frames of 256 samples
    assert len(pieces[0]) < sum(len(p) for p in pieces) / 10


def test_small_windows_are_skipped_when_the_first_window_may_hold_more(
        joe: PiperLoadedVoice) -> None:
    """Same samples whatever the plan: the plan starts at its largest size whose first
    window fits in the lead (seconds of audio), a short unit is then one window."""
    unit = joe.prepare(SENTENCE_199)[0]
    params = quiet()
    waiting = streamed(joe, unit, params, lead=0.0)
    relaxed = streamed(joe, unit, params, lead=60.0)
    sizes = [len(p) // 256 for p in waiting]
    assert len(sizes) >= 4 and sizes[0] == 16
    assert len(relaxed) == 1  # shorter than 2 x 384 frames: one window, the whole unit
    assert np.array_equal(np.concatenate(waiting), np.concatenate(relaxed))
    frame = 256 / joe.spec.sample_rate
    assert joe.plan(1000, 0.0) == plan_windows(1000, (16, 48, 96, 384))
    assert joe.plan(1000, 47.9 * frame) == plan_windows(1000, (16, 48, 96, 384))
    assert joe.plan(1000, 48 * frame) == plan_windows(1000, (48, 96, 384))
    assert joe.plan(1000, 100 * frame) == plan_windows(1000, (96, 384))
    assert joe.plan(1000, 383 * frame) == plan_windows(1000, (96, 384))
    assert joe.plan(1000, 384 * frame) == [(0, 384), (384, 1000)]
    assert joe.plan(300, 300 * frame) == [(0, 300)]


def test_a_windows_cost_counts_the_context_it_decodes_again(joe: PiperLoadedVoice) -> None:
    """Small windows cost more per second of audio than big ones: what the scheduler's
    pace is multiplied by must say so, or big windows look slower than they are."""
    windows = joe.start(joe.prepare(SENTENCE_199)[0], quiet())
    assert isinstance(windows, PiperWindows) and len(windows) >= 4
    rate = joe.spec.sample_rate
    per_second = [windows.cost(i) / (windows.samples(i) / rate) for i in range(len(windows))]
    assert all(c >= 1.0 for c in per_second), per_second
    assert per_second[0] > 2.0 * per_second[-1], per_second


def test_noise_is_drawn_once_per_sentence(joe: PiperLoadedVoice) -> None:
    """With noise, windows of one encoder pass still join into one consistent sentence:
    rendering a window twice gives the same samples (the noise lives in the encoder)."""
    unit = joe.prepare(SENTENCE_199)[0]
    windows = joe.start(unit, SynthesisParams())
    assert isinstance(windows, PiperWindows)
    assert np.array_equal(windows.render(1), windows.render(1))


def test_windows_rendered_concurrently_share_one_flow_call(joe: PiperLoadedVoice) -> None:
    """Windows from the third on share a flow call made by whichever runs first; the
    others wait for it. Rendered from several threads at once, in reverse order, the
    audio is still the same."""
    unit = joe.prepare(OVER_LONG)[0]
    params = quiet()
    expected = np.concatenate(streamed(joe, unit, params))
    windows = joe.start(unit, params)
    assert isinstance(windows, PiperWindows) and len(windows) >= 4
    with ThreadPoolExecutor(max_workers=3) as pool:
        pieces = list(pool.map(windows.render, reversed(range(len(windows)))))
    assert np.array_equal(np.concatenate(pieces[::-1]), expected)


def test_gain_is_fixed_per_voice_and_the_same_without_streaming(
        joe: PiperLoadedVoice, graph_cache_dir: Path) -> None:
    whole = load(engine(graph_cache_dir, stream_windows=None), JOE_MODEL, JOE_CONFIG, "joe")
    assert not whole.streaming
    assert whole.gain == joe.gain
    assert joe.gain == calibration_gain(max(
        float(np.max(np.abs(joe.raw(u, quiet()))))
        for u in joe.prepare(CALIBRATION_TEXT)))
    assert 1.0 < joe.gain < 2.0  # raw joe output peaks around 0.5
    for unit in joe.prepare("Whole sentences and windows sound the same. Loud!"):
        params = quiet()
        assert np.array_equal(whole.render(unit, params), np.concatenate(
            streamed(joe, unit, params)))


def test_calibration_gain_is_rounded_and_safe() -> None:
    assert calibration_gain(0.5) == 1.4
    assert calibration_gain(0.53) == 1.32
    assert calibration_gain(0.0) == 1.0
    assert calibration_gain(float("nan")) == 1.0
    loud = to_pcm(np.array([-2.0, -0.5, 0.0, 0.5, 2.0], dtype=np.float32), 1.0)
    assert loud.tolist() == [-32767, -16383, 0, 16383, 32767]
