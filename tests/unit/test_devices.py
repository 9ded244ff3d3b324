"""``--device``: parsing, and its resolution with the real onnxruntime installed here.

This machine's onnxruntime is the CPU build (no CUDAExecutionProvider), so ``auto`` must
serve on the CPU with one INFO line, ``cuda`` must refuse with the reason, and a session
asked for CUDA must never run on the CPU unnoticed. What a working GPU does is checked
by ``bench/gpu_bench.py`` on a machine that has one.
"""

from __future__ import annotations

import argparse
import logging

import onnxruntime
import pytest

from chorus.common.server_options import parse_device
from chorus.server.engines import devices, onnx_runs
from chorus.server.engines.devices import CUDA_PROVIDER, Device, DeviceError, resolve

pytestmark = pytest.mark.skipif(
    CUDA_PROVIDER in onnxruntime.get_available_providers(),
    reason="these tests hold for an onnxruntime without CUDA (the CPU build)")


@pytest.mark.parametrize(("text", "value"), [
    ("auto", "auto"), ("cpu", "cpu"), ("cuda", "cuda"), ("cuda:0", "cuda:0"),
    ("cuda:3", "cuda:3"), (" CUDA:1 ", "cuda:1"), ("CPU", "cpu")])
def test_device_values_parse(text: str, value: str) -> None:
    assert parse_device(text) == value


@pytest.mark.parametrize("text", ["tpu", "gpu", "cuda:x", "cuda:", "cuda:-1", "cuda:1:2",
                                  "cuda0", "cpu:0", "", "cuda:1234"])
def test_other_device_values_are_refused_by_name(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError,
                       match=r"expected auto, cpu, cuda or cuda:N \(N: a GPU index\)"):
        parse_device(text)


def test_devices_name_their_gpu() -> None:
    assert Device("cpu").index is None and not Device("cpu").is_cuda
    assert Device("cuda:2").index == 2 and Device("cuda:2").is_cuda


def test_cuda_sessions_ask_for_the_gpu_then_the_cpu() -> None:
    assert devices.providers("cpu") == ["CPUExecutionProvider"]
    (cuda, options), cpu = devices.providers("cuda:1")
    assert (cuda, cpu) == (CUDA_PROVIDER, "CPUExecutionProvider")
    assert options == {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC",
                       "use_tf32": "0"}
    assert devices.session_kwargs("cuda:1")["enable_fallback"] == 0
    assert "enable_fallback" not in devices.session_kwargs("cpu")


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == devices.__name__]


def test_cpu_is_the_cpu_without_a_word(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert resolve("cpu") == Device("cpu")
    # torch's side too, without importing torch (the ordinary server has none)
    assert devices.resolve_torch("cpu") == Device("cpu")
    assert _records(caplog) == []


def test_auto_without_a_cuda_build_runs_on_the_cpu_with_one_info_line(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert resolve("auto") == Device("cpu")
    (record,) = _records(caplog)
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith("--device auto: models run on the CPU: ")
    assert "no CUDAExecutionProvider" in record.getMessage()
    assert "onnxruntime-gpu" in record.getMessage()


@pytest.mark.parametrize(("wanted", "gpu"), [("cuda", 0), ("cuda:0", 0), ("cuda:1", 1)])
def test_cuda_without_a_usable_gpu_is_refused_with_the_reason(wanted: str, gpu: int) -> None:
    with pytest.raises(DeviceError) as caught:
        resolve(wanted)
    message = str(caught.value)
    assert message.startswith(f"--device {wanted}: cannot run models on CUDA GPU {gpu}: ")
    assert "is the CPU build" in message and "onnxruntime-gpu" in message


def test_openvino_and_a_gpu_are_a_contradiction(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(DeviceError, match="OpenVINO runs on the CPU only"):
        resolve("cuda", backend="openvino")
    caplog.set_level(logging.INFO)
    assert resolve("auto", backend="openvino") == Device("cpu")
    (record,) = _records(caplog)
    assert "--backend openvino runs on the CPU only" in record.getMessage()


def test_the_probe_says_why_cuda_cannot_work_here() -> None:
    problem = devices.cuda_problem(0)
    assert problem is not None
    assert f"has no {CUDA_PROVIDER}" in problem


def test_a_session_asked_for_cuda_never_runs_on_the_cpu_unnoticed() -> None:
    """onnxruntime drops a provider it cannot use and goes on on the CPU; the server's
    sessions refuse that instead of serving a GPU deployment from the CPU."""
    model = devices.probe_model()
    assert onnx_runs.session(model, 1).get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match="could not start CUDA for cuda:0"), \
            pytest.warns(UserWarning, match="'CUDAExecutionProvider' is not in available"):
        onnx_runs.session(model, 1, device="cuda:0")
    cpu = onnx_runs.cpu_session(model, 1)
    assert devices.check_session(cpu, "cpu") is cpu
    with pytest.raises(RuntimeError, match="could not start CUDA for cuda:2"):
        devices.check_session(cpu, "cuda:2")
