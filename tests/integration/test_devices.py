"""``chorus serve --device`` on this machine, whose onnxruntime is the CPU build: real
server processes, their exit status and logs, and what ``/voices`` and ``/metrics`` say
about where each voice runs. Engines asked for a GPU refuse to load rather than run on
the CPU unnoticed."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import onnxruntime
import pytest

from chorus.server.engines.base import VoiceConfigError
from chorus.server.engines.devices import CUDA_PROVIDER
from chorus.server.engines.piper import PiperEngine
from chorus.server.engines.registry import EngineOptions
from tests.conftest import CHORUS, JOE, REPO, ServerProcess, copy_joe, free_port
from tests.kokoro_files import KOKORO_MISSING, install_kokoro_voice, join_model, kokoro_installed

pytestmark = pytest.mark.skipif(
    CUDA_PROVIDER in onnxruntime.get_available_providers(),
    reason="these tests hold for an onnxruntime without CUDA (the CPU build)")


NOT_AVAILABLE = "'CUDAExecutionProvider' is not in available provider names"
"""What onnxruntime warns before it goes on without CUDA (which the engines refuse)."""


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``chorus serve`` expected to stop on its own (a start-up error)."""
    port = free_port()
    return subprocess.run(
        [*CHORUS, "serve", "--wyoming-uri", f"tcp://127.0.0.1:{port}", "--http-port",
         str(free_port()), *args],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
        env={**os.environ, "ORT_DISABLE_TELEMETRY": "1", **(env or {})})


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_stops_the_server_before_any_door_opens(device: str) -> None:
    done = _serve("--device", device)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"chorus serve: error: --device {device}: cannot run models on "
                           "CUDA GPU "), last
    assert "CPU build" in last and "onnxruntime-gpu" in last
    assert "Chorus ready" not in done.stderr and "Loading voice" not in done.stderr


def test_cuda_with_openvino_is_refused_as_a_contradiction() -> None:
    done = _serve("--device", "cuda", "--backend", "openvino")
    assert done.returncode == 2
    assert "OpenVINO runs on the CPU only" in done.stderr


@pytest.mark.parametrize(("args", "env"), [
    (["--device", "tpu"], None),
    (["--device", "cuda:x"], None),
    ([], {"CHORUS_DEVICE": "gpu"}),
])
def test_a_device_that_is_no_device_is_an_argument_error(
        args: list[str], env: dict[str, str] | None) -> None:
    done = _serve(*args, env=env)
    assert done.returncode == 2
    assert "expected auto, cpu, cuda or cuda:N (N: a GPU index)" in done.stderr
    assert "Loading voice" not in done.stderr


@pytest.fixture(scope="module")
def auto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "auto.log"
    proc = ServerProcess(["--device", "auto"], log)
    yield proc
    assert proc.terminate() == 0, proc.output()


def _get(server: ServerProcess, path: str) -> str:
    with urllib.request.urlopen(server.http_url + path, timeout=30) as response:  # noqa: S310
        body: bytes = response.read()
    return body.decode()


def test_auto_serves_on_the_cpu_and_says_why_once(auto_server: ServerProcess) -> None:
    lines = auto_server.output().splitlines()
    said = [line for line in lines if "--device auto" in line]
    assert len(said) == 1, said
    assert "models run on the CPU" in said[0] and "no CUDAExecutionProvider" in said[0]
    assert "WARNING" not in said[0]
    assert any("Chorus ready" in line and " on cpu" in line for line in lines)
    assert any(f"Voice {JOE} (piper) runs on cpu" in line for line in lines)


def test_voices_and_metrics_say_where_each_voice_runs(auto_server: ServerProcess) -> None:
    listed = {v["name"]: v for v in json.loads(_get(auto_server, "/voices"))["voices"]}
    assert listed[JOE]["device"] == "cpu"
    assert json.loads(_get(auto_server, f"/voices/{JOE}"))["device"] == "cpu"
    metrics = _get(auto_server, "/metrics")
    assert f'chorus_voice_device{{device="cpu",voice="{JOE}"}} 1.0' in metrics


def test_a_voice_not_loaded_has_no_device_yet(tmp_path: Path) -> None:
    copy_joe(tmp_path, "later")
    server = ServerProcess(["--voices-dir", str(tmp_path)], tmp_path / "server.log")
    try:
        listed = {v["name"]: v for v in json.loads(_get(server, "/voices"))["voices"]}
        assert listed["later"]["resident"] is False and listed["later"]["device"] is None
        assert listed[JOE]["device"] == "cpu"
    finally:
        assert server.terminate() == 0, server.output()


def test_a_piper_engine_told_cuda_refuses_to_load_on_the_cpu(tmp_path: Path) -> None:
    copy_joe(tmp_path, "joe")
    engine = PiperEngine(1, 150, stream_windows=None, device="cuda:0")
    spec = engine.read_spec(tmp_path / "joe.onnx.json", "joe")
    with pytest.raises(VoiceConfigError, match="could not start CUDA for cuda:0"), \
            pytest.warns(UserWarning, match=NOT_AVAILABLE):
        engine.load(spec)


@pytest.mark.skipif(not kokoro_installed(), reason=KOKORO_MISSING)
def test_kokoro_runs_where_it_is_told(tmp_path: Path) -> None:
    from chorus.server.engines.kokoro import KokoroEngine

    (tmp_path / "model").mkdir()
    install_kokoro_voice(tmp_path, "af_heart", join_model(tmp_path / "model"))
    entry = tmp_path / "af_heart.kokoro.json"
    cpu = KokoroEngine(EngineOptions(device="cpu"))
    assert cpu.load(cpu.read_spec(entry, "af_heart")).device == "cpu"
    cuda = KokoroEngine(EngineOptions(device="cuda:0"))
    with pytest.raises(VoiceConfigError, match="could not start CUDA for cuda:0"), \
            pytest.warns(UserWarning, match=NOT_AVAILABLE):
        cuda.load(cuda.read_spec(entry, "af_heart"))
