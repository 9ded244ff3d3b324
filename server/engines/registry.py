"""Which engines this installation has: Piper always, the others when their extra is in.

Each engine beyond Piper comes with an optional extra (``chorus-tts[kokoro]``), so a
server image or a laptop carries only the engines it serves. Whether an engine is
installed is found out by importing its module here, once, at start-up: a missing
library is not an error but an engine left out, and the voice store tells the user,
once per voice, which ``pip install`` brings the voices of such an engine in. Nothing
else in the server imports an optional engine's module, so a missing extra can never
raise an ImportError anywhere else.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import Engine

__all__ = ["OPTIONAL_ENGINES", "EngineOptions", "Engines", "OptionalEngine", "discover",
           "require_libraries"]

_LOGGER = logging.getLogger(__name__)


def require_libraries(*names: str) -> None:
    """Raise :class:`ImportError` unless every library is installed: an optional engine's
    module calls this instead of importing its heavy libraries at module level (they are
    imported when its first voice loads), so that this module's import is still the
    test of whether the engine is installed."""
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise ImportError(f"No module named {name!r}")


@dataclass(frozen=True)
class EngineOptions:
    """What an optional engine is built with (from the server settings)."""

    threads_per_voice: int = 1
    """onnxruntime threads per model call (``--threads-per-worker``)."""
    device: str = "cpu"
    """Where models run, as resolved from ``--device`` at start-up: ``cpu`` or
    ``cuda:N`` (never ``auto``: the server has chosen for onnxruntime by the time engines
    are built)."""
    requested_device: str = "cpu"
    """``--device`` as given (``auto``, ``cpu``, ``cuda[:N]``), for an engine on another
    runtime than onnxruntime to resolve against its own (XTTS: torch,
    :func:`~.devices.resolve_torch`)."""
    backend: str = "onnxruntime"
    """``--backend``: what runs an ONNX model (Kokoro's, see :mod:`.kokoro_backends`)."""
    precision: str = "auto"
    """``--precision`` (OpenVINO only)."""
    workers: int = 1
    """Model calls that may run at once (OpenVINO compiles one stream per worker)."""
    graph_cache_dir: Path | None = None
    """Where an engine keeps what it measured at load (``--graph-cache-dir``)."""


@dataclass(frozen=True)
class OptionalEngine:
    """An engine that needs an extra: its module and the class in it, built with the
    :class:`EngineOptions`."""

    name: str
    module: str
    factory: str
    extra: str

    @property
    def install_hint(self) -> str:
        return f"pip install 'chorus-tts[{self.extra}]'"


OPTIONAL_ENGINES = (
    OptionalEngine("kokoro", "chorus.server.engines.kokoro", "KokoroEngine", "kokoro"),
    OptionalEngine("xtts", "chorus.server.engines.xtts", "XttsEngine", "xtts"),
)


@dataclass(frozen=True)
class Engines:
    """The engines that are installed, by name, and why the others are not."""

    available: dict[str, Engine]
    missing: dict[str, str]
    """Engine name -> the ``pip install`` that brings it."""


def discover(options: EngineOptions, piper: Engine,
             optional: tuple[OptionalEngine, ...] = OPTIONAL_ENGINES,
             importer: Callable[[str], Any] = importlib.import_module) -> Engines:
    """Piper plus every optional engine whose module imports; the rest, with their
    install hints, in :attr:`Engines.missing` (logged once here at INFO: voices of
    theirs, if any, are reported by the store)."""
    available: dict[str, Engine] = {piper.name: piper}
    missing: dict[str, str] = {}
    for entry in optional:
        try:
            module = importer(entry.module)
        except ImportError as err:
            missing[entry.name] = entry.install_hint
            _LOGGER.info("Engine %s not installed (%s); %s adds it", entry.name, err,
                         entry.install_hint)
            continue
        available[entry.name] = getattr(module, entry.factory)(options)
    return Engines(available, missing)
