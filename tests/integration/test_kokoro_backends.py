"""Kokoro's model on a backend chosen behind the quality gates (``--backend``), in process,
with real onnxruntime and real OpenVINO.

Two models. A small graph with Kokoro's inputs and output (``tokens``, ``style``,
``speed`` -> ``audio``, its length set by the tokens as Kokoro's durations set it), built
here with onnx, which OpenVINO computes as onnxruntime does: it shows a passing candidate
served, its figures, the choice kept in the graph cache and read back. And Kokoro-82M's
real int8 export, whose choice on this machine is whatever the gates say (on the 2-core
EPYC these tests were written on, OpenVINO 2026.4 gives no audio for it, so onnxruntime
is kept with the reason).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from chorus.common.files import file_sha256
from chorus.server.engines.backend_gates import MIN_PART_SNR_DB
from chorus.server.engines.backends import openvino_available
from chorus.server.engines.base import SynthesisParams
from chorus.server.engines.piper_build import snr_db
from chorus.server.engines.registry import EngineOptions
from tests.conftest import ServerProcess
from tests.kokoro_files import KOKORO_MISSING, install_kokoro_voice, join_model, kokoro_installed

pytestmark = [
    pytest.mark.skipif(not kokoro_installed(), reason=KOKORO_MISSING),
    pytest.mark.skipif(not openvino_available(), reason="needs the openvino extra"),
]

SAMPLES_PER_TOKEN = 600
TEXTS = ["Ready.", "The kitchen lights are now turned off, and the door is locked."]


def _small_kokoro(path: Path) -> None:
    """audio = sin(tokens/100 x weights) x mean(style) x speed: T tokens give
    T x 600 samples, as a Kokoro model's durations decide its audio's length."""
    weights = np.linspace(0.5, 3.0, SAMPLES_PER_TOKEN, dtype=np.float32).reshape(1, -1)
    nodes = [
        helper.make_node("Cast", ["tokens"], ["t"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["t", "scale"], ["ts"]),
        helper.make_node("Transpose", ["ts"], ["column"], perm=[1, 0]),
        helper.make_node("MatMul", ["column", "weights"], ["wave"]),
        helper.make_node("Sin", ["wave"], ["sine"]),
        helper.make_node("ReduceMean", ["style"], ["loudness"], keepdims=0),
        helper.make_node("Mul", ["sine", "loudness"], ["shaped"]),
        helper.make_node("Mul", ["shaped", "speed"], ["paced"]),
        helper.make_node("Reshape", ["paced", "flat"], ["audio"]),
    ]
    graph = helper.make_graph(
        nodes, "small-kokoro",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "sequence_length"]),
         helper.make_tensor_value_info("style", TensorProto.FLOAT, [1, 256]),
         helper.make_tensor_value_info("speed", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["samples"])],
        [helper.make_tensor("scale", TensorProto.FLOAT, [], [0.01]),
         helper.make_tensor("weights", TensorProto.FLOAT, list(weights.shape),
                            weights.reshape(-1).tolist()),
         helper.make_tensor("flat", TensorProto.INT64, [1], [-1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """A voices directory with one voice (``af_small``) of the small model."""
    directory = tmp_path / "voices"
    directory.mkdir()
    _small_kokoro(directory / "small.onnx")
    rows = np.random.default_rng(7).uniform(0.2, 0.8, (510, 1, 256)).astype("<f4")
    rows.tofile(directory / "af_small.bin")
    (directory / "af_small.kokoro.json").write_text(json.dumps(
        {"model": "small.onnx", "style": "af_small.bin", "language": "en_US"}))
    return directory / "af_small.kokoro.json"


def _load(entry: Path, cache: Path | None, backend: str, precision: str = "f32") -> Any:
    from chorus.server.engines.kokoro import KokoroEngine

    engine = KokoroEngine(EngineOptions(backend=backend, precision=precision,
                                        graph_cache_dir=cache))
    return engine.load(engine.read_spec(entry, entry.name.split(".")[0]))


def test_a_model_that_passes_the_gates_is_served_by_openvino(small: Path,
                                                             tmp_path: Path) -> None:
    voice = _load(small, tmp_path / "cache", "openvino")
    choice = voice.backends["parts"]["model"]
    assert (choice["backend"], choice["precision"], choice["refused"]) == \
        ("openvino", "f32", None)
    assert choice["snr_db"] == "inf" or choice["snr_db"] >= MIN_PART_SNR_DB
    assert choice["ms"] > 0 and choice["reference_ms"] > 0
    reference = _load(small, None, "onnxruntime")
    assert reference.backends["parts"]["model"]["backend"] == "onnxruntime"
    params = SynthesisParams()
    for text in TEXTS:
        for unit in voice.prepare(text):
            got, expected = voice.raw(unit, params), reference.raw(unit, params)
            assert got.shape == expected.shape and len(got) > 0
            assert snr_db(got, expected) >= MIN_PART_SNR_DB


def test_the_choice_is_kept_in_the_graph_cache_and_read_at_the_next_load(
        small: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    caplog.set_level(logging.INFO, "chorus.server.engines.kokoro_backends")
    first = _load(small, cache, "openvino")
    record = cache / "kokoro" / f"{file_sha256(small.parent / 'small.onnx')}.json"
    kept = json.loads(record.read_text())["choices"]
    assert [c["parts"]["model"]["backend"] for c in kept.values()] == ["openvino"]
    assert "--backend openvino --precision f32" in next(iter(kept))
    caplog.clear()
    second = _load(small, cache, "openvino")
    assert "as chosen at an earlier load" in caplog.text
    assert second.backends == first.backends  # the first load's figures, not new ones
    # Another --precision is another question: measured, and kept beside the first.
    _load(small, cache, "openvino", precision="auto")
    assert len(json.loads(record.read_text())["choices"]) == 2


def test_a_damaged_record_is_measured_again_and_rewritten(
        small: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    _load(small, cache, "openvino")
    record = next((cache / "kokoro").glob("*.json"))
    record.write_text('{"format": 1, "choices": {')
    caplog.set_level(logging.INFO, "chorus.server.engines.kokoro_backends")
    voice = _load(small, cache, "openvino")
    assert "as chosen at an earlier load" not in caplog.text
    assert voice.backends["parts"]["model"]["backend"] == "openvino"
    assert len(json.loads(record.read_text())["choices"]) == 1
    # A record naming what cannot be built (here an unknown precision) is chosen again.
    data = json.loads(record.read_text())
    for choice in data["choices"].values():
        choice["parts"]["model"]["precision"] = "f8"
    record.write_text(json.dumps(data))
    caplog.clear()
    assert _load(small, cache, "openvino").backends["parts"]["model"]["precision"] == "f32"
    assert "could not be used (unknown precision 'f8'); choosing again" in caplog.text


def test_voices_loading_at_once_share_one_model_and_one_choice(
        small: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two voices of one model file, loaded by two threads at once (two requests for
    voices not yet resident): one session, one backend choice, not one each."""
    from chorus.server.engines.kokoro import KokoroEngine

    other = small.parent / "af_other.kokoro.json"
    other.write_text(json.dumps({"model": "small.onnx", "style": "af_small.bin",
                                 "language": "en_US"}))
    engine = KokoroEngine(EngineOptions(backend="openvino", precision="f32"))
    specs = [engine.read_spec(entry, entry.name.split(".")[0]) for entry in (small, other)]
    caplog.set_level(logging.INFO, "chorus.server.engines.kokoro_backends")
    start = threading.Barrier(2)

    def load(index: int) -> Any:
        start.wait()
        return engine.load(specs[index])

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(load, range(2))
    assert first.model is second.model
    chosen = [r for r in caplog.records if "backend (--backend openvino" in r.getMessage()]
    assert len(chosen) == 1, caplog.text


def test_auto_keeps_openvino_only_where_it_measured_faster(small: Path,
                                                           tmp_path: Path) -> None:
    choice = _load(small, tmp_path / "cache", "auto").backends["parts"]["model"]
    if choice["backend"] == "openvino":
        assert choice["ms"] < choice["reference_ms"]
    else:
        assert choice["refused"].startswith("openvino f32: slower (")


def test_onnxruntime_asked_for_measures_nothing_and_keeps_no_record(small: Path,
                                                                   tmp_path: Path) -> None:
    voice = _load(small, tmp_path / "cache", "onnxruntime")
    assert voice.backends["parts"]["model"] == {
        "backend": "onnxruntime", "precision": "f32", "snr_db": None, "ms": None,
        "reference_ms": None, "refused": None}
    assert not (tmp_path / "cache" / "kokoro").exists()


@pytest.mark.slow
def test_kokoro_82m_int8_gets_what_the_gates_allow(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """OpenVINO f32 tried on the real model (~15 s: its compile and one pass); whatever
    the outcome, it obeys the gates, says why, and the voice speaks."""
    (tmp_path / "model").mkdir()
    entry = install_kokoro_voice(tmp_path / "voices", "af_heart",
                                 join_model(tmp_path / "model"))
    caplog.set_level(logging.INFO, "chorus.server.engines.kokoro_backends")
    voice = _load(entry, tmp_path / "cache", "auto")
    choice = voice.backends["parts"]["model"]
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    if choice["backend"] == "openvino":
        assert choice["snr_db"] == "inf" or choice["snr_db"] >= MIN_PART_SNR_DB
        assert choice["ms"] < choice["reference_ms"] and not refusals
    else:
        assert choice["refused"].startswith("openvino f32: ")
        assert len(refusals) == 1 and "onnxruntime f32 kept: " in refusals[0]
        assert "\n" not in refusals[0]
    audio = voice.render(voice.prepare("The lights are off.")[0], SynthesisParams())
    assert len(audio) > 12_000 and np.abs(audio).max() > 1000


def test_a_server_says_what_runs_its_kokoro_voices(small: Path, tmp_path: Path) -> None:
    """``chorus serve --backend openvino``: the log line, ``/voices/<name>`` and the
    ``chorus_voice_part_backend`` metric name OpenVINO for the Kokoro voice's model."""
    server = ServerProcess(["--voices-dir", str(small.parent), "--default-voice", "af_small",
                            "--backend", "openvino", "--precision", "f32",
                            "--graph-cache-dir", str(tmp_path / "cache")],
                           tmp_path / "server.log")
    try:
        lines = [line for line in server.output().splitlines()
                 if "Kokoro model small.onnx: backend (--backend openvino --precision f32)"
                 in line]
        assert len(lines) == 1 and lines[0].endswith(" dB)"), server.output()
        assert "model openvino f32 (" in lines[0]
        with urllib.request.urlopen(f"{server.http_url}/voices/af_small",  # noqa: S310
                                    timeout=30) as response:
            listed = json.loads(response.read())["backends"]["parts"]["model"]
        assert (listed["backend"], listed["precision"]) == ("openvino", "f32")
        with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=30) as response:  # noqa: S310
            metrics = response.read().decode()
        assert ('chorus_voice_part_backend{backend="openvino",part="model",'
                'precision="f32",voice="af_small"} 1.0') in metrics
    finally:
        assert server.terminate() == 0, server.output()
