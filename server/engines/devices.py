"""Where models run: ``--device auto|cpu|cuda[:N]``, resolved once at start-up.

Engines are built with the result, ``cpu`` or ``cuda:N`` (``EngineOptions.device``),
never ``auto``: every voice of a server runs on one device, and a device that cannot
work is found out before the doors open, not at some voice's first load.

**What "CUDA works" means.** onnxruntime-gpu (the ``chorus-tts[gpu]`` extra) lists
``CUDAExecutionProvider`` among its providers whether or not the NVIDIA driver, CUDA and
cuDNN libraries can be loaded; when they cannot, a session asked for CUDA quietly runs
on the CPU instead (onnxruntime logs why and goes on). So the provider's presence proves
nothing: :func:`cuda_problem` creates a one-node session on the wanted GPU and checks
that CUDA is among the providers the session really got, and that it computes. A GPU
index beyond the device count fails the same way. Every CUDA session is made without
onnxruntime's Python fallback (``enable_fallback=0``), which would otherwise move a
session whose GPU failed to the CPU for good, silently: a request then fails with the
reason instead, and :func:`check_session` refuses a session that did not get CUDA.

**The decision, by ``--device``.**

- ``cpu``: as the server has always run (the default).
- ``cuda`` / ``cuda:N``: GPU ``N`` (0 by default) or a start-up error saying why not.
- ``auto``: the GPU when it works. Otherwise the CPU, with one log line: INFO when this
  onnxruntime has no CUDA provider at all (the ordinary CPU install, nothing is wrong),
  WARNING when it has one that does not work (a GPU install that should have worked).

**XTTS runs on torch**, not onnxruntime, and :func:`resolve_torch` decides for it by the
same rules, asking torch (a CUDA build, a visible GPU, a computation that comes back
right): with ``auto`` each runtime takes the GPU where it works (Piper on the CPU and
XTTS on the GPU, say, when only torch has CUDA; ``/voices`` says which), while ``cuda``
is a promise for every engine and fails start-up when either runtime cannot keep it.

**OpenVINO.** ``--backend openvino`` compiles for the CPU plugin only. With
``--device cuda`` the two are contradictory and start-up refuses them; ``auto`` then
means the CPU (INFO). ``--backend auto`` on a GPU runs every part on onnxruntime CUDA:
its OpenVINO candidates would run on the CPU, which is not what a GPU was chosen for.

**Session settings on CUDA** (:func:`providers`): cuDNN picks convolution algorithms by
heuristic (``cudnn_conv_algo_search=HEURISTIC``, as piper-tts does with ``--cuda``): the
default exhaustive search runs again for every new input shape, and nearly every
sentence and window has a shape of its own. TF32 is off (``use_tf32=0``): f32 math as
on the CPU, so the windows' verification against whole sentences
(:mod:`.piper_build`) holds to the same standard; neither choice is measured here yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import onnxruntime

__all__ = [
    "CUDA_PROVIDER",
    "Device",
    "DeviceError",
    "check_session",
    "cuda_problem",
    "probe_model",
    "providers",
    "resolve",
    "resolve_torch",
    "session_kwargs",
]

_LOGGER = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
GPU_INSTALL_HINT = ("install the gpu extra's onnxruntime-gpu instead of onnxruntime (both "
                    "install the same module): pip uninstall -y onnxruntime "
                    "onnxruntime-gpu; pip install 'onnxruntime-gpu[cuda,cudnn]>=1.20'")


class DeviceError(ValueError):
    """``--device`` names a device the models cannot run on (a start-up error)."""


@dataclass(frozen=True)
class Device:
    """A resolved device: ``cpu`` or ``cuda:N``."""

    name: str = "cpu"

    @property
    def index(self) -> int | None:
        """The GPU index, ``None`` for the CPU."""
        return int(self.name.partition(":")[2] or 0) if self.is_cuda else None

    @property
    def is_cuda(self) -> bool:
        return self.name.startswith("cuda")


def providers(device: str) -> list[Any]:
    """onnxruntime's ``providers`` for a session on ``device`` (``cpu`` or ``cuda:N``).

    On CUDA the CPU provider follows: onnxruntime places the few nodes CUDA has no
    kernel for (and shape arithmetic) there, as it does for every CUDA session."""
    index = Device(device).index
    if index is None:
        return [CPU_PROVIDER]
    return [(CUDA_PROVIDER, {"device_id": str(index), "cudnn_conv_algo_search": "HEURISTIC",
                             "use_tf32": "0"}), CPU_PROVIDER]


def session_kwargs(device: str) -> dict[str, Any]:
    """``InferenceSession`` keyword arguments for a session on ``device``."""
    if Device(device).is_cuda:
        return {"providers": providers(device), "enable_fallback": 0}
    return {"providers": providers(device)}


def check_session(session: onnxruntime.InferenceSession, device: str,
                  ) -> onnxruntime.InferenceSession:
    """``session``, once it is known to run on ``device``; raises :class:`RuntimeError`
    when onnxruntime left CUDA out (its libraries could not be loaded: onnxruntime has
    logged why)."""
    if Device(device).is_cuda and CUDA_PROVIDER not in session.get_providers():
        raise RuntimeError(f"onnxruntime could not start CUDA for {device} (its providers: "
                           f"{', '.join(session.get_providers())}; the reason is in "
                           "onnxruntime's log line above)")
    return session


def probe_model() -> bytes:
    """A one-node graph (``y = x + x``) to try a device with."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])], "chorus-device-probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime the server supports
    return bytes(model.SerializeToString())


@cache
def _preload_cuda_libraries() -> None:
    """Load the CUDA and cuDNN libraries that PyPI's ``nvidia-*`` wheels installed (the
    ``gpu`` extra's ``onnxruntime-gpu[cuda,cudnn]``), where onnxruntime can do so
    (``preload_dlls``, onnxruntime-gpu 1.21 and later); system libraries (a CUDA base
    image) are found by the loader either way."""
    preload = getattr(onnxruntime, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as err:  # noqa: BLE001 - a missing library shows in the probe below
        _LOGGER.debug("onnxruntime.preload_dlls: %s", err)


def cuda_problem(index: int) -> str | None:
    """Why onnxruntime cannot run models on CUDA GPU ``index`` here (``None``: it can)."""
    if CUDA_PROVIDER not in onnxruntime.get_available_providers():
        return (f"this onnxruntime ({onnxruntime.__version__}) has no {CUDA_PROVIDER}: it "
                f"is the CPU build; for NVIDIA GPUs, {GPU_INSTALL_HINT}")
    _preload_cuda_libraries()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    device = f"cuda:{index}"
    try:
        session = check_session(onnxruntime.InferenceSession(
            probe_model(), sess_options=options, **session_kwargs(device)), device)
        x = np.arange(4, dtype=np.float32)
        y = session.run(None, {"x": x})[0]
    except Exception as err:  # noqa: BLE001 - onnxruntime raises assorted errors
        return (f"{err} (check the NVIDIA driver, the CUDA and cuDNN libraries this "
                f"onnxruntime-gpu was built for, and that GPU {index} exists and is "
                "visible to this process)")
    if not np.array_equal(np.asarray(y), x + x):
        return f"a test computation on {device} gave wrong results"
    return None


def resolve(wanted: str, backend: str = "onnxruntime") -> Device:
    """``--device`` (as parsed) -> the device every engine uses; raises
    :class:`DeviceError` for ``cuda`` that cannot work or contradicts ``backend``."""
    if wanted == "cpu":
        return Device("cpu")
    if backend == "openvino":
        if wanted == "auto":
            _LOGGER.info("--device auto: models run on the CPU (--backend openvino runs "
                         "on the CPU only)")
            return Device("cpu")
        raise DeviceError(f"--device {wanted} with --backend openvino: OpenVINO runs on the "
                          "CPU only; use --backend onnxruntime on a GPU, or --device cpu")
    device = _gpu_or_cpu(
        wanted, cuda_problem, refusal="cannot run models", models="models",
        cuda_build=lambda: CUDA_PROVIDER in onnxruntime.get_available_providers())
    if device.is_cuda:
        _LOGGER.info("Models run on %s (onnxruntime %s, --device %s)%s", device.name,
                     onnxruntime.__version__, wanted,
                     "; --backend auto: every part on onnxruntime" if backend == "auto"
                     else "")
    return device


def _gpu_or_cpu(wanted: str, problem_of: Callable[[int], str | None], *, refusal: str,
                models: str, cuda_build: Callable[[], bool]) -> Device:
    """``--device`` ``auto`` or ``cuda[:N]`` for one runtime: GPU ``N`` (0 for ``auto``)
    when ``problem_of(N)`` finds nothing wrong; else :class:`DeviceError` for ``cuda``,
    and for ``auto`` the CPU with one line, INFO when ``cuda_build()`` says the runtime
    has no CUDA at all (nothing is wrong), WARNING when it has and CUDA failed."""
    index = 0 if wanted == "auto" else Device(wanted).index or 0
    problem = problem_of(index)
    if problem is None:
        return Device(f"cuda:{index}")
    if wanted != "auto":
        raise DeviceError(f"--device {wanted}: {refusal} on CUDA GPU {index}: {problem}")
    _LOGGER.log(logging.WARNING if cuda_build() else logging.INFO,
                "--device auto: %s run on the CPU: %s", models, problem)
    return Device("cpu")


def torch_cuda_problem(index: int) -> str | None:
    """Why torch cannot run models on CUDA GPU ``index`` here (``None``: it can).

    Imports torch (over a second): only the XTTS engine calls this, at start-up, and only
    when ``--device`` is not ``cpu``."""
    import torch  # pyright: ignore[reportMissingImports]

    if torch.version.cuda is None:
        return (f"this torch ({torch.__version__}) is the CPU build; for NVIDIA GPUs "
                "install a CUDA build of torch (pip install --force-reinstall torch: "
                "PyPI's Linux x86_64 wheel is one)")
    if not torch.cuda.is_available():
        return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable "
                "GPU (check the NVIDIA driver and that the GPU is visible to this process)")
    count = torch.cuda.device_count()
    if index >= count:
        return f"torch sees {count} GPU{'s' if count != 1 else ''}; there is no GPU {index}"
    try:
        x = torch.arange(4, dtype=torch.float32)
        y = (x.to(f"cuda:{index}") * 2).cpu()
    except Exception as err:  # noqa: BLE001 - torch raises assorted errors
        return f"a test computation on cuda:{index} failed: {err}"
    if not torch.equal(y, x * 2):
        return f"a test computation on cuda:{index} gave wrong results"
    return None


def resolve_torch(wanted: str) -> Device:
    """``--device`` (as parsed) -> the device torch models (XTTS) use; raises
    :class:`DeviceError` for ``cuda`` that torch cannot keep (see the module's text)."""
    if wanted == "cpu":
        return Device("cpu")
    import torch  # pyright: ignore[reportMissingImports]

    device = _gpu_or_cpu(wanted, torch_cuda_problem, refusal="XTTS (torch) cannot run",
                         models="XTTS models", cuda_build=lambda: torch.version.cuda is not None)
    if device.is_cuda:
        _LOGGER.info("XTTS models run on %s (torch, --device %s)", device.name, wanted)
    return device
