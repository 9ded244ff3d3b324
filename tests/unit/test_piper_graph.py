"""Where Piper graphs are cut: the stock joe graph, and graphs of other shapes made from
it with onnx (a speaker id reaching several parts; no cut at all, so whole sentences).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from chorus.server.engines.piper_graph import analyze
from tests.unit.piper_streaming import (
    JOE_CONFIG,
    JOE_MODEL,
    SENTENCE_199,
    WholeGraphs,
    engine,
    load,
    quiet,
    reference,
    streamed,
)


@pytest.fixture(scope="module")
def whole_graph() -> Callable[[Path], Any]:
    """The reference: a one-thread session on a model's whole graph."""
    return WholeGraphs()


def test_the_cut_is_found_from_the_graph_structure() -> None:
    layout = analyze(onnx.load(str(JOE_MODEL), load_external_data=False))
    assert layout.parts == ("encoder", "flow", "dec1", "dec2")
    assert len(layout.encoder_outputs) == 2  # the prior sample and the frame mask
    assert layout.part_inputs["encoder"] == ("input", "input_lengths", "scales")
    assert layout.part_inputs["flow"] == layout.encoder_outputs
    assert layout.part_inputs["dec1"] == (layout.z,)
    assert layout.upsampled is not None and layout.output == "output"


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
    voice = load(engine(graph_cache_dir), model_path, config_path, "multi")
    report = voice.split_report
    assert voice.streaming and report is not None and report.graph is not None
    inputs = report.graph.layout.part_inputs
    assert "sid" in inputs["encoder"] and "sid" in inputs["dec1"] and "sid" in inputs["dec2"]
    unit = voice.prepare(SENTENCE_199)[0]
    audio = {}
    for speaker in (0, 2):
        params = quiet(speaker_id=speaker)
        got = np.concatenate(streamed(voice, unit, params))
        assert np.array_equal(got, reference(voice, whole_graph(model_path), unit, params))
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
        voice = load(engine(graph_cache_dir), model_path, config_path, "odd")
    assert not voice.streaming
    [line] = [r.getMessage() for r in caplog.records if "streaming off" in r.getMessage()]
    assert "Voice odd: sub-sentence streaming off, whole sentences only" in line
    assert "no single tensor separates" in line
    [unit] = voice.prepare("Still speaks, whole.")
    params = quiet()
    started = voice.start(unit, params)
    assert isinstance(started, np.ndarray)
    assert np.array_equal(started, reference(voice, whole_graph(model_path), unit, params))
